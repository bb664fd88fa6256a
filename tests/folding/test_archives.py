"""The archive limits of SavedModel uploads, on real archives."""

import zipfile

import pytest

from folding.archives import extract_saved_model
from folding.errors import ModelLoadError
from folding.loading import ArchiveLimits


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
