"""Limits with clear answers, proven on real servers on 127.0.0.1: headers that never end
or come too many, senders too slow, too many uploads at once, a full disk, an archive
that inflates far beyond its size, a huge prediction next to small ones, /metrics
behind the token, a job stopped just after its commit, CLI failures.

Every hostile input is built here; raw sockets speak HTTP where a client library
would refuse to misbehave. Servers serve a hand-built ONNX model (no TensorFlow at
start-up) and are bounded in what the tests send them.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
import zipfile
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.helpers import upload_file, wait_until
from tests.service.conftest import DEMO_SOURCE, REPO, serving

API = {"Authorization": "Bearer reader"}
ADMIN = {"Authorization": "Bearer admin"}


def mlp_onnx(path: Path) -> None:
    """A 64 -> 32 -> 10 MLP with a dynamic batch axis, written by hand."""
    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array(rng.standard_normal((64, 32)).astype("float32"), "w1"),
        numpy_helper.from_array(np.zeros(32, "float32"), "b1"),
        numpy_helper.from_array(rng.standard_normal((32, 10)).astype("float32"), "w2"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Add", ["h", "b1"], ["a"]),
        helper.make_node("Relu", ["a"], ["r"]),
        helper.make_node("MatMul", ["r", "w2"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)


def onnx_repository(root: Path) -> Path:
    models = root / "models"
    mlp_onnx(models / "mlp" / "1" / "model.onnx")
    return models


QUIET = {"FOLDSERVE_PREWARM_FOLDER": "false"}


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) / 1024


def read_reply(sock: socket.socket, within: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and when it closed."""
    started = time.monotonic()
    sock.settimeout(within)
    received = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        received += chunk
    return received, time.monotonic() - started


def status_and_error(reply: bytes) -> tuple[int, str]:
    head, _, body = reply.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.1 ") else 0
    return status, json.loads(body)["error"] if body else ""


# -- connections: headers and slow senders ------------------------------------------

EDGE_ENV = {
    **QUIET,
    "FOLDSERVE_API_TOKEN": "reader",
    "FOLDSERVE_ADMIN_TOKEN": "admin",
    "FOLDSERVE_MAX_HEADER_BYTES": str(16 * 1024),
    "FOLDSERVE_MAX_HEADERS": "50",
    "FOLDSERVE_HEADER_TIMEOUT": "1.5",
    "FOLDSERVE_BODY_TIMEOUT": "1.5",
    "FOLDSERVE_BODY_MIN_RATE": "1024",
}


@pytest.fixture(scope="module")
def edge(tmp_path_factory):
    with serving(onnx_repository(tmp_path_factory.mktemp("edge")), EDGE_ENV) as running:
        yield running


def endless_header(port: int, seconds: float, outcome: dict) -> None:
    """One header line, 64 KB at a time, for up to ``seconds`` or until refused."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Endless: ")
        started = time.monotonic()
        sent = 0
        try:
            while time.monotonic() - started < seconds:
                sock.sendall(b"a" * 65536)
                sent += 65536
        except OSError:  # refused and closed: the rest cannot be sent
            pass
        outcome["sent"] = sent
        outcome["reply"], _ = read_reply(sock, 5)
        outcome["seconds"] = time.monotonic() - started


def test_an_endless_header_is_cut_off_and_health_checks_stay_fast(edge):
    before = rss_mb(edge.process.pid)
    outcomes = [{}, {}]
    attackers = [
        threading.Thread(target=endless_header, args=(edge.port, 8, outcome))
        for outcome in outcomes
    ]
    slowest, peak = 0.0, before
    with httpx.Client(base_url=edge.url, timeout=10) as client:
        client.get("/v2/health/ready")
        for attacker in attackers:
            attacker.start()
        while any(attacker.is_alive() for attacker in attackers):
            started = time.perf_counter()
            assert client.get("/v2/health/ready").status_code == 200
            slowest = max(slowest, time.perf_counter() - started)
            peak = max(peak, rss_mb(edge.process.pid))
    for outcome in outcomes:
        status, error = status_and_error(outcome["reply"])
        assert status == 431 and "16384 bytes" in error, outcome["reply"][:300]
        assert outcome["seconds"] < 5  # refused at once, not after 8 s of sending
    print(f"endless headers: rss {before:.0f} -> {peak:.0f} MB; slowest health {slowest:.3f} s")
    assert peak - before < 40
    assert slowest < 1.0


def test_too_many_header_fields_are_a_431(edge):
    fields = b"".join(b"X-F%d: v\r\n" % index for index in range(80))
    with socket.create_connection(("127.0.0.1", edge.port)) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n")
        status, error = status_and_error(read_reply(sock, 5)[0])
    assert status == 431 and "50 header fields" in error


def trickle(sock: socket.socket, byte: bytes, every: float, limit: float) -> tuple[bytes, float]:
    """Send ``byte`` every ``every`` s (a slow sender) until the server answers or ``limit``
    s pass: all the server sent before closing, and the seconds that took."""
    started = time.monotonic()
    sock.settimeout(every)
    reply = b""
    while time.monotonic() - started < limit and not reply:
        try:
            sock.sendall(byte)
            reply = sock.recv(65536)
        except TimeoutError:
            continue
        except OSError:
            break
    rest, _ = read_reply(sock, 5)
    return reply + rest, time.monotonic() - started


def test_a_header_sent_byte_by_byte_is_a_408(edge):
    with socket.create_connection(("127.0.0.1", edge.port)) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\n")
        reply, waited = trickle(sock, b"X", every=0.2, limit=10)
    status, error = status_and_error(reply)
    assert status == 408 and "within 1.5 s" in error
    assert waited < 5


def test_a_connection_that_sends_nothing_is_closed_with_a_408(edge):
    with socket.create_connection(("127.0.0.1", edge.port)) as sock:
        reply, waited = read_reply(sock, 10)
    assert status_and_error(reply)[0] == 408
    assert waited < 5


def test_a_trickling_body_is_a_408_and_the_handler_is_not_left_waiting(edge):
    head = (
        b"POST /v1/models/mlp:predict HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer reader\r\n"
        b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", edge.port)) as sock:
        sock.sendall(head + b'{"instances": [')
        reply, waited = trickle(sock, b"1", every=0.25, limit=15)
    status, error = status_and_error(reply)
    assert status == 408 and "request body" in error
    assert waited < 6
    assert "Traceback" not in edge.log.read_text()


def test_every_server_process_guards_its_connections(tmp_path):
    env = {**QUIET, "FOLDSERVE_MAX_HEADER_BYTES": "4096"}
    with serving(onnx_repository(tmp_path), env, workers=2) as running:
        for _ in range(4):  # the connections land on either process
            with socket.create_connection(("127.0.0.1", running.port)) as sock:
                sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nX-Big: " + b"a" * 8192)
                assert status_and_error(read_reply(sock, 5)[0])[0] == 431


def test_keep_alive_requests_with_ordinary_headers_and_bodies_pass(edge):
    body = json.dumps({"instances": [[0.5] * 64] * 4}).encode()
    with httpx.Client(base_url=edge.url, headers=API, timeout=10) as client:
        for _ in range(3):
            reply = client.post("/v1/models/mlp:predict", content=body)
            assert reply.status_code == 200, reply.text
            assert np.asarray(reply.json()["predictions"]).shape == (4, 10)
        big_header = {"X-Large": "v" * 8000, **{f"X-H{index}": "v" for index in range(30)}}
        assert client.get("/v2/health/ready", headers=big_header).status_code == 200


# -- /metrics ------------------------------------------------------------------------


def test_metrics_need_the_api_token_when_one_is_set(edge):
    anonymous = httpx.get(f"{edge.url}/metrics")
    assert anonymous.status_code == 401 and "api token" in anonymous.json()["error"]
    assert "mlp" not in anonymous.text
    with_token = httpx.get(f"{edge.url}/metrics", headers=API)
    assert with_token.status_code == 200 and "foldserve_requests" in with_token.text


def test_metrics_can_be_left_public_for_scrapers(tmp_path):
    env = {**QUIET, "FOLDSERVE_API_TOKEN": "reader", "FOLDSERVE_METRICS_PUBLIC": "true"}
    with serving(onnx_repository(tmp_path), env) as running:
        assert httpx.get(f"{running.url}/metrics").status_code == 200
        assert httpx.get(f"{running.url}/v1/models").status_code == 401


# -- a large body beside small ones --------------------------------------------------


SEND_LARGE = """
import sys, httpx
body = open(sys.argv[2], "rb").read()
reply = httpx.post(sys.argv[1], content=body, headers={"Authorization": "Bearer reader"},
                   timeout=300)
rows = len(reply.json()["predictions"]) if reply.is_success else reply.text
print(reply.status_code, rows)
"""


def test_a_40_mb_predict_does_not_hold_up_small_ones(edge, tmp_path):
    """Small predicts keep being answered while a 40 MB JSON one is received, decoded,
    run and answered (sent from another process, so that the client's own GIL is not
    what is measured)."""
    rows = 65536
    values = np.random.default_rng(1).random((rows, 64)).round(6)
    big = tmp_path / "big.json"
    big.write_bytes(json.dumps({"instances": values.tolist()}).encode())
    assert big.stat().st_size > 40 * 1000 * 1000
    small = json.dumps({"instances": [[0.5] * 64]}).encode()
    latencies: list[float] = []
    with httpx.Client(base_url=edge.url, headers=API, timeout=30) as client:
        for _ in range(5):
            client.post("/v1/models/mlp:predict", content=small)
        sender = subprocess.Popen(
            [sys.executable, "-c", SEND_LARGE, f"{edge.url}/v1/models/mlp:predict", str(big)],
            stdout=subprocess.PIPE,
            text=True,
        )
        while sender.poll() is None:
            started = time.perf_counter()
            assert client.post("/v1/models/mlp:predict", content=small).status_code == 200
            latencies.append(time.perf_counter() - started)
    output, _ = sender.communicate()
    assert output.split() == ["200", str(rows)], output
    print(
        f"small predicts during a {big.stat().st_size / 1e6:.0f} MB one: n={len(latencies)} "
        f"max {max(latencies) * 1e3:.0f} ms, median {np.median(latencies) * 1e3:.1f} ms"
    )
    assert max(latencies) < 1.0


def test_a_large_v2_body_is_decoded_off_the_loop_with_the_same_answer(edge):
    data = np.random.default_rng(2).random((20000, 64)).astype("float32")
    body = {"inputs": [{"name": "x", "shape": [20000, 64], "datatype": "FP32", "data": []}]}
    body["inputs"][0]["data"] = data.round(5).reshape(-1).tolist()
    large = httpx.post(f"{edge.url}/v2/models/mlp/infer", json=body, headers=API, timeout=60)
    assert large.status_code == 200, large.text[:300]
    small = {"inputs": [{**body["inputs"][0], "shape": [2, 64]}]}
    small["inputs"][0]["data"] = body["inputs"][0]["data"][: 2 * 64]
    reply = httpx.post(f"{edge.url}/v2/models/mlp/infer", json=small, headers=API)
    large_rows = np.asarray(large.json()["outputs"][0]["data"]).reshape(20000, 10)[:2]
    small_rows = np.asarray(reply.json()["outputs"][0]["data"]).reshape(2, 10)
    np.testing.assert_allclose(large_rows, small_rows, rtol=1e-5)
    broken = httpx.post(
        f"{edge.url}/v2/models/mlp/infer",
        content=json.dumps(body).encode()[:-3],
        headers=API,
        timeout=60,
    )
    assert broken.status_code == 400 and "not valid JSON" in broken.json()["error"]


# -- uploads: how many, how large ------------------------------------------------------


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    env = {
        **QUIET,
        "FOLDSERVE_MAX_QUEUED_JOBS": "2",
        "FOLDSERVE_MAX_STAGING_BYTES": str(6 * 1024 * 1024),
    }
    with serving(onnx_repository(tmp_path_factory.mktemp("store")), env) as running:
        yield running


def multipart_head(port: int, size: int, name: str) -> tuple[socket.socket, bytes]:
    """An upload of ``size`` bytes of model file whose head and first part are sent;
    the caller sends the rest (or not)."""
    boundary = uuid.uuid4().hex
    opening = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="name"\r\n\r\n{name}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="{name}.onnx"\r\n\r\n'
    ).encode()
    closing = f"\r\n--{boundary}--\r\n".encode()
    length = len(opening) + size + len(closing)
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(
        b"POST /v1/models HTTP/1.1\r\nHost: x\r\n"
        + f"Content-Type: multipart/form-data; boundary={boundary}\r\n".encode()
        + f"Content-Length: {length}\r\n\r\n".encode()
        + opening
    )
    return sock, closing


def test_uploads_beyond_the_queue_are_a_429_with_retry_after(store):
    # two uploads still arriving hold both places in the queue
    held = [multipart_head(store.port, 1024 * 1024, f"held{index}") for index in range(2)]
    try:
        for sock, _ in held:
            sock.sendall(b"\0" * 1024)
        # until both are admitted, this upload (not a model file) is refused as a 400
        deadline = time.monotonic() + 10
        while True:
            files = {"file": ("extra.txt", b"x" * 1000)}
            reply = httpx.post(f"{store.url}/v1/models", files=files, data={"name": "extra"})
            if reply.status_code != 400 or time.monotonic() > deadline:
                break
        assert reply.status_code == 429, reply.text
        assert int(reply.headers["Retry-After"]) > 0
        assert "FOLDSERVE_MAX_QUEUED_JOBS" in reply.json()["error"]
    finally:
        for sock, _ in held:
            sock.close()
    assert not (store.models_dir / "extra").exists()


def test_an_upload_over_the_staging_budget_is_a_507(store):
    files = {"file": ("huge.onnx", b"\0" * (7 * 1024 * 1024))}
    reply = httpx.post(f"{store.url}/v1/models", files=files, data={"name": "huge"}, timeout=60)
    assert reply.status_code == 507, reply.text
    assert "FOLDSERVE_MAX_STAGING_BYTES" in reply.json()["error"]
    assert int(reply.headers["Retry-After"]) > 0
    assert list((store.models_dir / ".staging").iterdir()) == []


def test_thirty_concurrent_uploads_are_admitted_at_most_to_the_queue(store):
    payload = b"\0" * (512 * 1024)

    def one(index: int) -> httpx.Response:
        files = {"file": (f"c{index}.onnx", payload)}
        return httpx.post(
            f"{store.url}/v1/models", files=files, data={"name": f"c{index}"}, timeout=60
        )

    replies: list[httpx.Response] = []
    threads = [threading.Thread(target=lambda i=i: replies.append(one(i))) for i in range(30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    statuses = sorted(reply.status_code for reply in replies)
    assert set(statuses) <= {202, 429, 507}, statuses
    assert statuses.count(202) >= 1 and statuses.count(429) >= 1, statuses
    assert all(
        "error" in reply.json() and "Retry-After" in reply.headers
        for reply in replies
        if reply.status_code != 202
    )
    jobs = wait_for_jobs(store)
    # never more than two jobs unfinished at once (the cap), however the burst fell
    events = sorted(
        [(job["created_at"], 1) for job in jobs] + [(job["finished_at"], -1) for job in jobs]
    )
    unfinished = peak = 0
    for _, change in events:
        unfinished += change
        peak = max(peak, unfinished)
    assert len(jobs) == statuses.count(202) and peak <= 2, (len(jobs), peak)


def wait_for_jobs(server, timeout: float = 180) -> list[dict]:
    """Every job of ``server``, once all have finished."""
    jobs: list[dict] = []

    def all_finished() -> bool:
        jobs[:] = httpx.get(f"{server.url}/v1/jobs").json()["jobs"]
        return all(job["finished_at"] is not None for job in jobs)

    wait_until(all_finished, timeout, interval=0.2, message="every job finished")
    return jobs


# -- a full disk -----------------------------------------------------------------------


def _mount_tmpfs(where: Path, size: str) -> bool:
    where.mkdir(parents=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
    )
    return mounted.returncode == 0


def test_an_upload_into_a_full_disk_is_a_507_and_leaves_the_store_as_it_was(tmp_path):
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "1m"):
        pytest.skip("needs root to mount a small tmpfs as the model store's disk")
    try:
        models = disk / "models"
        mlp_onnx(models / "mlp" / "1" / "model.onnx")
        with serving(models, QUIET) as running:
            files = {"file": ("big.onnx", b"\0" * (2 * 1024 * 1024))}
            reply = httpx.post(
                f"{running.url}/v1/models", files=files, data={"name": "big"}, timeout=60
            )
            assert reply.status_code == 507, reply.text
            error = reply.json()["error"]
            assert "original.onnx" in error and "no space left" in error
            assert str(disk) not in reply.text
            assert list((models / ".staging").iterdir()) == []
            assert [path.name for path in (models / ".jobs").iterdir()] == []
            assert httpx.get(f"{running.url}/v1/jobs").json()["jobs"] == []
            assert not (models / "big").exists()
            predict = httpx.post(
                f"{running.url}/v1/models/mlp:predict", json={"instances": [[0.0] * 64]}
            )
            assert predict.status_code == 200
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_an_upload_that_cannot_be_buffered_is_a_507(tmp_path):
    """The process's file size limit (EFBIG, what a quota or a full temporary folder
    gives): the upload's parts cannot be buffered on disk."""
    limit = tmp_path / "limit"
    limit.mkdir()
    (limit / "sitecustomize.py").write_text(
        "import resource\nresource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))\n"
    )
    path = os.pathsep.join(filter(None, [str(limit), os.environ.get("PYTHONPATH")]))
    models = onnx_repository(tmp_path)
    with serving(models, {**QUIET, "PYTHONPATH": path}) as running:
        files = {"file": ("big.onnx", b"\0" * (3 * 1024 * 1024))}
        reply = httpx.post(
            f"{running.url}/v1/models", files=files, data={"name": "big"}, timeout=60
        )
        assert reply.status_code == 507, reply.text
        assert "temporary folder" in reply.json()["error"]
        assert list((models / ".staging").iterdir()) == []
        assert httpx.get(f"{running.url}/v2/health/ready").status_code == 200


# -- an archive that inflates far beyond its size -----------------------------------------


def keras_bomb(path: Path, inflated: int) -> None:
    """The demo .keras plus an asset of ``inflated`` zero bytes, deflated (a few hundred
    KB on disk)."""
    with zipfile.ZipFile(DEMO_SOURCE) as source, zipfile.ZipFile(path, "w") as bomb:
        for entry in source.infolist():
            bomb.writestr(entry, source.read(entry))
        info = zipfile.ZipInfo("assets/padding.bin")
        info.compress_type = zipfile.ZIP_DEFLATED
        with bomb.open(info, "w") as asset:
            chunk = b"\0" * (1 << 20)
            for _ in range(inflated >> 20):
                asset.write(chunk)


def test_a_keras_file_inflating_far_beyond_its_size_is_refused_unopened(store, tmp_path):
    bomb = tmp_path / "bomb.keras"
    keras_bomb(bomb, 256 << 20)
    assert bomb.stat().st_size < 2 << 20
    reply = upload_file(store, bomb, "bomb")
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert "inflate" in error and "100x" in error
    assert not (store.models_dir / "bomb").exists()
    assert list((store.models_dir / ".staging").iterdir()) == []


# -- the job record and what was committed --------------------------------------------------


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_job_stopped_just_after_its_commit_is_done_not_interrupted(tmp_path):
    """What a kill -9 between the version's rename and the job's last write leaves: a
    job 'committing' whose owner is gone, and its version in place."""
    models = onnx_repository(tmp_path)
    shutil.copytree(models / "mlp" / "1", models / "mlp" / "2")
    report = {"folded": True, "note": "written by the fold"}
    (models / "mlp" / "2" / "report.json").write_text(json.dumps(report))
    (models / ".jobs").mkdir()
    now = time.time()

    def job(state: str, version: int) -> dict:
        job_id = uuid.uuid4().hex
        content = {
            "id": job_id,
            "state": state,
            "name": "mlp",
            "version": version,
            "filename": "mlp.onnx",
            "progress": None,
            "created_at": now - 60,
            "started_at": now - 59,
            "finished_at": None,
            "timings": {"queued": 1.0},
            "report": None,
            "error": None,
            "status_code": None,
            "owner": {"host": socket.gethostname(), "pid": dead_pid(), "token": "gone"},
            "heartbeat_at": now - 1,
            "staging": uuid.uuid4().hex,
        }
        (models / ".jobs" / f"{job_id}.json").write_text(json.dumps(content))
        return content

    committed = job("committing", 2)
    unfinished = job("verifying", 3)
    with serving(models, QUIET) as running:
        done = httpx.get(f"{running.url}/v1/jobs/{committed['id']}").json()
        assert done["state"] == "done" and done["report"] == report, done
        interrupted = httpx.get(f"{running.url}/v1/jobs/{unfinished['id']}").json()
        assert interrupted["state"] == "failed" and interrupted["error"] == "interrupted"
        listing = httpx.get(f"{running.url}/v1/models").json()["models"]
        versions = {v["version"]: v["state"] for v in listing[0]["versions"]}
        assert versions[2] == "AVAILABLE"


# -- no server paths in answers; the CLI's failures ---------------------------------------------


def test_a_compare_against_a_missing_source_names_no_server_path(store):
    body = {"instances": [[0.0] * 64], "reference": "source"}
    reply = httpx.post(f"{store.url}/v1/models/mlp:compare", json=body, timeout=60)
    assert reply.status_code == 404, reply.text
    assert str(store.models_dir) not in reply.text
    assert str(store.models_dir.parent) not in reply.text


def test_cli_failures_are_one_line_without_a_traceback(tmp_path):
    model = tmp_path / "mlp.onnx"
    mlp_onnx(model)
    failed = subprocess.run(
        [sys.executable, "-m", "service.cli", "fold", str(model), "-o", "/dev/null/out"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert failed.returncode == 1
    ours = [line for line in failed.stderr.splitlines() if line.startswith("foldserve:")]
    assert ours == ["foldserve: error: [Errno 17] File exists: '/dev/null'"], failed.stderr
    assert "Traceback" not in failed.stderr
