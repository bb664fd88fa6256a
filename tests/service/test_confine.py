"""The confinement of model code (folding.confine, service.jobs.workers): what a model that
slips past every scan can still not do. The hostile SavedModels are built here and uploaded
to a server whose op scan is switched off (FOLDSERVE_UNSAFE_SKIP_SCAN, for tests only)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import numpy as np
import pytest

from folding.confine import capability
from tests import saved_models as build
from tests.saved_models import doubling
from tests.service.conftest import REPO, make_repository, serving

CONFINED = capability()
needs_landlock = pytest.mark.skipif(
    not (CONFINED.files and CONFINED.network),
    reason=f"this kernel cannot confine files and TCP ({CONFINED.mechanism})",
)
SECRET = Path("/etc/passwd")


def first_line(path: Path) -> str:
    return path.read_text().splitlines()[0]


def run_confined(script: str, *args: str) -> dict:
    """``script`` in a fresh interpreter (as the fold worker is), its JSON answer."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


PROBE_SCRIPT = """
    import json, socket, sys
    from folding.confine import confine

    allowed, inside, outside, port = sys.argv[1:]
    confine(read=[allowed], write=[inside])

    def attempt(action):
        try:
            return ["ok", action()]
        except OSError as error:
            return [type(error).__name__, error.errno]

    def connect():
        with socket.create_connection(("127.0.0.1", int(port)), timeout=5):
            return "connected"

    def write(path):
        with open(path, "w") as handle:
            return handle.write("written")

    print(json.dumps({
        "secret": attempt(lambda: open("/etc/passwd").read()),
        "allowed": attempt(lambda: open(allowed).read()),
        "write_inside": attempt(lambda: write(inside + "/new.txt")),
        "read_back": attempt(lambda: open(inside + "/new.txt").read()),
        "write_outside": attempt(lambda: write(outside)),
        "connect": attempt(connect),
        "stdlib": attempt(lambda: __import__("email.mime.text").__name__),
    }))
"""


@needs_landlock
def test_a_confined_process_reads_writes_and_connects_only_where_allowed(tmp_path):
    allowed = tmp_path / "input.txt"
    allowed.write_text("the job's input")
    inside = tmp_path / "staging"
    inside.mkdir()
    outside = tmp_path / "outside.txt"
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(0)
        port = listener.getsockname()[1]
        seen = run_confined(PROBE_SCRIPT, str(allowed), str(inside), str(outside), str(port))
        with pytest.raises(BlockingIOError):  # no connection ever reached the listener
            listener.accept()
    assert seen["secret"] == ["PermissionError", 13]
    assert seen["write_outside"] == ["PermissionError", 13]
    assert seen["connect"] == ["PermissionError", 13]
    assert seen["allowed"] == ["ok", "the job's input"]
    assert seen["write_inside"] == ["ok", 7] and seen["read_back"] == ["ok", "written"]
    assert seen["stdlib"] == ["ok", "email"]  # the Python installation stays readable
    assert not outside.exists()
    assert (inside / "new.txt").read_text() == "written"


@needs_landlock
def test_a_process_with_other_threads_is_not_confined_but_refused():
    seen = run_confined(
        """
        import json, threading
        from folding.confine import ConfinementError, confine

        stop = threading.Event()
        threading.Thread(target=stop.wait).start()
        try:
            confine()
            answer = "confined"
        except ConfinementError as error:
            answer = str(error)
        stop.set()
        print(json.dumps({"answer": answer, "passwd": len(open("/etc/passwd").read()) > 0}))
        """
    )
    assert "2 threads" in seen["answer"] and seen["passwd"]  # refused, so left as it was


def reads_a_secret_on_load(path: Path, secret: Path, victim: Path) -> Path:
    """A SavedModel with a harmless serving function (``y = 2x``) and a resource whose
    initialiser, run by ``tf.saved_model.load`` itself, copies ``secret`` to ``victim``."""
    import tensorflow as tf

    class Resource(tf.saved_model.experimental.TrackableResource):
        def _create_resource(self):
            return tf.raw_ops.VarHandleOp(dtype=tf.float32, shape=[], shared_name="secret")

        def _initialize(self):
            tf.io.write_file(str(victim), tf.io.read_file(str(secret)))

    return doubling(path, Resource())


def doubles(path: Path) -> Path:
    """The harmless twin: the same signature, no resource."""
    return doubling(path)


@pytest.fixture(scope="module")
def unscanned(tmp_path_factory):
    """A server that loads SavedModels without their op scan: only the confinement
    stands between an upload and the server's files."""
    root = tmp_path_factory.mktemp("unscanned")
    env = {"FOLDSERVE_UNSAFE_SKIP_SCAN": "true", "FOLDSERVE_LOG_LEVEL": "info"}
    with serving(make_repository(root), env) as running:
        yield running


def store_files(models: Path) -> list[str]:
    """Every file of the repository but the job records."""
    found = [path.relative_to(models) for path in models.rglob("*") if path.is_file()]
    return sorted(str(path) for path in found if path.parts[0] != ".jobs")


def assert_nothing_leaked(text: str) -> None:
    assert first_line(SECRET) not in text and "root:" not in text


@needs_landlock
def test_v2_metadata_says_what_model_code_is_confined_to(unscanned):
    meta = httpx.get(f"{unscanned.url}/v2").json()
    assert meta["confinement"] == {
        "files": True,
        "network": True,
        "mechanism": CONFINED.mechanism,
    }
    assert "model code is confined" in unscanned.log.read_text()
    assert "FOLDSERVE_UNSAFE_SKIP_SCAN" in unscanned.log.read_text()


@needs_landlock
def test_an_unscanned_saved_model_cannot_read_or_write_outside_its_job(unscanned, tmp_path):
    victim = tmp_path / "outside" / "stolen.txt"
    victim.parent.mkdir()
    model = reads_a_secret_on_load(tmp_path / "thief", SECRET, victim)
    before = store_files(unscanned.models_dir)
    reply = httpx.post(
        f"{unscanned.url}/v1/models?wait=true",
        files={"file": ("thief.zip", build.zipped(model))},
        data={"name": "thief"},
        timeout=300,
    )
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert "could not be loaded" in error and "Permission denied" in error, error
    assert_nothing_leaked(reply.text)
    assert not victim.exists()
    assert store_files(unscanned.models_dir) == before  # no version, nothing left in staging
    records = list((unscanned.models_dir / ".jobs").iterdir())
    assert all(path.suffix == ".json" for path in records)  # no progress file left either
    for record in records:
        assert_nothing_leaked(record.read_text())
    assert_nothing_leaked(httpx.get(f"{unscanned.url}/v1/jobs").text)
    assert list((unscanned.models_dir / ".staging").iterdir()) == []

    # the control: unconfined (here, in the test process) the same model does steal the file
    import tensorflow as tf

    tf.saved_model.load(str(model))
    assert first_line(victim) == first_line(SECRET)


@needs_landlock
def test_compare_against_a_stored_hostile_source_runs_confined(unscanned, tmp_path):
    reply = httpx.post(
        f"{unscanned.url}/v1/models?wait=true",
        files={"file": ("twin.zip", build.zipped(doubles(tmp_path / "twin")))},
        data={"name": "twin"},
        timeout=300,
    )
    assert reply.status_code == 201, reply.text
    inputs = {"x": np.ones((2, 3), np.float32).tolist()}
    compare = f"{unscanned.url}/v1/models/twin:compare"
    honest = httpx.post(compare, json={"inputs": inputs, "reference": "source"}, timeout=300)
    assert honest.status_code == 200, honest.text

    # the stored source swapped for one that steals on load (a store written before a fix)
    victim = tmp_path / "stolen.txt"
    stored = unscanned.models_dir / "twin" / "1" / "saved_model"
    shutil.rmtree(stored)
    reads_a_secret_on_load(stored, SECRET, victim)
    reply = httpx.post(compare, json={"inputs": inputs, "reference": "source"}, timeout=300)
    assert reply.status_code == 400, reply.text
    assert "Permission denied" in reply.json()["error"]
    assert_nothing_leaked(reply.text)
    assert str(unscanned.models_dir) not in reply.text
    assert not victim.exists()
    served = httpx.post(f"{unscanned.url}/v1/models/twin:predict", json={"inputs": inputs})
    assert served.status_code == 200, served.text  # the folded model is still served
