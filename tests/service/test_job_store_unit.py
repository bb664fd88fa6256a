"""The job store on its own: job files beside a repository, read by other processes,
orphans marked interrupted (or done when their version went in), pruning and damage."""

import json
import os
import subprocess
import sys
import time

import pytest

from service.errors import NotFound
from service.jobs.store import INTERRUPTED, JobStore, is_terminal, public


def store_at(root, **overrides) -> JobStore:
    options = {"stale_after": 30.0, "keep_seconds": 3600.0, "keep_count": 10} | overrides
    return JobStore(root, **options)


def read_elsewhere(root, job_id: str) -> dict:
    """The job as another process on this host sees it (a store of the same pid would
    take the job for one left by an earlier process with that pid)."""
    code = (
        "import json, sys; from service.jobs.store import JobStore; "
        "store = JobStore(sys.argv[1], stale_after=30, keep_seconds=3600, keep_count=10); "
        "print(json.dumps(store.read(sys.argv[2])))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(root), job_id], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout)


def test_a_job_is_written_atomically_and_read_by_another_process(tmp_path):
    owner = store_at(tmp_path)
    job = owner.create("digits", 3, "model.keras", "a" * 32)
    job.update(state="folding", progress=0.5)
    owner.write(job)
    seen = read_elsewhere(tmp_path, job["id"])  # the owner is alive: still folding
    assert seen["state"] == "folding" and seen["progress"] == 0.5
    assert not list(owner.directory.glob(".*.tmp"))
    assert "owner" not in public(seen) and "staging" not in public(seen)
    owner.finish(job, "done", report={"verdict": "passed"})
    assert is_terminal(owner.read(job["id"])) and owner.read(job["id"])["finished_at"]


def test_a_job_whose_owner_died_is_interrupted_and_its_staging_removed(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    )
    owner = store_at(tmp_path)
    staging = tmp_path / ".staging" / ("b" * 32)
    staging.mkdir(parents=True)
    job = owner.create("digits", 4, "model.keras", "b" * 32)
    job["owner"] = dict(job["owner"], pid=int(dead.stdout), token="gone")
    owner.write(job)
    read = store_at(tmp_path).read(job["id"])
    assert read["state"] == "failed" and read["error"] == INTERRUPTED
    assert read["status_code"] == 503 and not staging.exists()


def test_an_owner_gone_while_committing_a_stored_version_is_done(tmp_path):
    owner = store_at(tmp_path)
    job = owner.create("digits", 5, "model.keras", "c" * 32)
    version = tmp_path / "digits" / "5"
    version.mkdir(parents=True)
    (version / "model.onnx").write_bytes(b"stored")
    (version / "report.json").write_text(json.dumps({"verdict": "passed"}))
    job.update(
        state="committing",
        owner=dict(job["owner"], token="gone", host="elsewhere"),
        heartbeat_at=time.time() - 60,
    )
    owner.write(job)
    job["heartbeat_at"] = time.time() - 60  # write() stamps a live heartbeat: age it on disk
    (owner.path(job["id"])).write_text(json.dumps(job))
    read = store_at(tmp_path).read(job["id"])
    assert read["state"] == "done" and read["report"] == {"verdict": "passed"}


def test_a_live_owner_on_another_host_is_trusted_until_its_heartbeat_is_stale(tmp_path):
    owner = store_at(tmp_path)
    job = owner.create("digits", 6, "model.keras", "d" * 32)
    job["owner"] = dict(job["owner"], host="elsewhere", token="theirs")
    path = owner.path(job["id"])
    path.write_text(json.dumps(job))
    assert store_at(tmp_path).read(job["id"])["state"] == "queued"
    assert store_at(tmp_path, stale_after=0.0).read(job["id"])["state"] == "failed"


def test_damaged_and_foreign_files_are_not_jobs(tmp_path):
    owner = store_at(tmp_path)
    good = owner.create("digits", 1, "model.keras", "e" * 32)
    (owner.directory / ("f" * 32 + ".json")).write_text("{not json")
    (owner.directory / ("0" * 32 + ".json")).write_text(json.dumps({"id": "0" * 32}))
    (owner.directory / "notes.json").write_text(json.dumps(good))  # id does not match name
    assert [job["id"] for job in owner.all()] == [good["id"]]
    for unknown in ("f" * 32, "0" * 32, "../../etc/passwd", "x" * 100_000):
        with pytest.raises(NotFound):
            owner.read(unknown)


def test_prune_keeps_the_newest_finished_jobs_and_every_running_one(tmp_path):
    owner = store_at(tmp_path, keep_count=2, keep_seconds=3600.0)
    running = owner.create("digits", 1, "model.keras", "1" * 32)
    finished = []
    for version in range(2, 6):
        job = owner.create("digits", version, "model.keras", f"{version}" * 32)
        job["created_at"] = time.time() + version  # a strict order, newest last
        owner.finish(job, "done")
        finished.append(job["id"])
    old = owner.create("digits", 9, "model.keras", "9" * 32)
    owner.finish(old, "failed", error="x", status_code=422)
    old["finished_at"] = time.time() - 7200
    owner.path(old["id"]).write_text(json.dumps(old))
    stale_tmp = owner.directory / ".leftover.tmp"
    stale_tmp.write_text("{}")
    os.utime(stale_tmp, (time.time() - 3600, time.time() - 3600))
    owner.prune()
    kept = {job["id"] for job in owner.all()}
    assert kept == {running["id"], *finished[-2:]}
    assert not stale_tmp.exists()


def test_cancel_markers_are_seen_by_every_store_and_cleared_on_finish(tmp_path):
    owner, other = store_at(tmp_path), store_at(tmp_path)
    job = owner.create("digits", 1, "model.keras", "7" * 32)
    other.request_cancel(job["id"])
    assert owner.cancel_requested(job["id"])
    owner.finish(job, "cancelled")
    assert not other.cancel_requested(job["id"])
