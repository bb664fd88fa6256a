"""The archive limits of SavedModel uploads, on real archives."""

import zipfile

import pytest

from folding.errors import ModelLoadError
from folding.sources.archives import extract_saved_model
from folding.sources.keras.loading import ArchiveLimits


def write_zip(path, entries):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, payload in entries:
            archive.writestr(name, payload)
    return path


def test_entry_count_limit(tmp_path):
    archive = write_zip(tmp_path / "many.zip", [(f"m/{i}", "x") for i in range(11)])
    with pytest.raises(ModelLoadError, match="holds 11 archive entries; at most 10"):
        extract_saved_model(archive, tmp_path / "out", "many.zip", ArchiveLimits(max_entries=10))
    assert not (tmp_path / "out").exists()


def test_declared_size_limit(tmp_path):
    archive = write_zip(tmp_path / "big.zip", [("saved_model.pb", b"\0" * 5000)])
    with pytest.raises(ModelLoadError, match="would inflate to 5000 bytes; at most 4096"):
        extract_saved_model(
            archive, tmp_path / "out", "big.zip", ArchiveLimits(max_total_bytes=4096)
        )
    assert not (tmp_path / "out").exists()


def test_inflated_bytes_are_counted_even_when_the_header_lies(tmp_path):
    archive = tmp_path / "liar.zip"
    write_zip(archive, [("saved_model.pb", b"\0" * 5000)])
    data = bytearray(archive.read_bytes())
    # declare 10 bytes in both the local header and the central directory
    data = data.replace((5000).to_bytes(4, "little"), (10).to_bytes(4, "little"))
    archive.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError):
        extract_saved_model(
            archive, tmp_path / "out", "liar.zip", ArchiveLimits(max_total_bytes=4096)
        )
    assert not (tmp_path / "out").exists()


def test_saved_model_in_one_top_level_folder(tmp_path):
    archive = write_zip(
        tmp_path / "ok.zip", [("exported/saved_model.pb", b"x"), ("exported/variables/v", b"y")]
    )
    root = extract_saved_model(archive, tmp_path / "out", "ok.zip")
    assert root == tmp_path / "out" / "exported"
    assert (root / "variables" / "v").read_bytes() == b"y"


def test_a_huge_pax_header_is_refused_before_it_is_read(tmp_path):
    """300 KB of gzip holding a 300 MB pax header: tarfile would spend minutes parsing it."""
    import gzip
    import tarfile
    import time

    header = tarfile.TarInfo("PaxHeader")
    header.type, header.size = tarfile.XHDTYPE, 300 * 1024**2
    archive = tmp_path / "pax.tar.gz"
    with gzip.open(archive, "wb") as handle:
        handle.write(header.tobuf(format=tarfile.USTAR_FORMAT))
        chunk = b"0" * 1024**2
        for _ in range(300):
            handle.write(chunk)
    assert archive.stat().st_size < 1024**2
    started = time.monotonic()
    with pytest.raises(ModelLoadError, match="314572800-byte extended tar header"):
        extract_saved_model(archive, tmp_path / "out", "pax.tar.gz")
    assert time.monotonic() - started < 10
    assert not (tmp_path / "out").exists()


def test_an_encrypted_zip_is_named(tmp_path):
    archive = write_zip(tmp_path / "locked.zip", [("saved_model.pb", b"x")])
    data = bytearray(archive.read_bytes())
    data[6] |= 1  # the "encrypted" flag, in the local header and the central directory
    data[data.find(b"PK\x01\x02") + 8] |= 1
    archive.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match=r"'locked\.zip' is encrypted"):
        extract_saved_model(archive, tmp_path / "out", "locked.zip")


@pytest.mark.filterwarnings("ignore:Duplicate name")
@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([("saved_model.pb", b"a"), ("saved_model.pb", b"b")], "holds 'saved_model.pb' twice"),
        ([("variables", b"a"), ("variables/v.index", b"b")], "under a name that is also a file"),
    ],
)
def test_ambiguous_entries_are_refused_without_server_paths(tmp_path, entries, message):
    archive = write_zip(tmp_path / "odd.zip", entries)
    with pytest.raises(ModelLoadError, match=message) as caught:
        extract_saved_model(archive, tmp_path / "out", "odd.zip")
    assert str(tmp_path) not in str(caught.value)


def test_macos_metadata_beside_the_saved_model_is_skipped(tmp_path):
    """Finder's "Compress" adds __MACOSX/ and .DS_Store beside the folder."""
    archive = write_zip(
        tmp_path / "finder.zip",
        [
            ("model/saved_model.pb", b"x"),
            ("model/.DS_Store", b"x"),
            ("__MACOSX/model/._saved_model.pb", b"x"),
        ],
    )
    root = extract_saved_model(archive, tmp_path / "out", "finder.zip")
    assert root == tmp_path / "out" / "model"
    assert sorted(p.name for p in root.iterdir()) == ["saved_model.pb"]
