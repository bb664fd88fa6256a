"""Upload jobs, kept beside the model repository so every server process sees them.

``<models_dir>/.jobs/<id>.json``      the job, replaced atomically (temp file + rename)
``<models_dir>/.jobs/<id>.cancel``    a cancel request; the process running the job polls for it
``<models_dir>/.jobs/<id>.progress``  the fold worker's stage and progress (as it reports them)

A job is written only by the process that runs it (its *owner*), which also
refreshes ``heartbeat_at`` while the job is not finished. A job that is not
finished but whose owner is gone (a dead process on this host, or no heartbeat
for ``stale_after`` seconds) was interrupted by a restart or crash: whoever reads
it next marks it failed with the error "interrupted".
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import time
import uuid
from pathlib import Path
from typing import Any

from service.core.repository import FOLDED_FILE, NAME_PATTERN, REPORT_FILE
from service.errors import NotFound

STAGES = ("queued", "loading", "folding", "exporting", "verifying", "quantizing", "committing")
TERMINAL = ("done", "failed", "cancelled")
INTERRUPTED = "interrupted"
JOB_ID_LENGTH = 32
PRIVATE_KEYS = ("owner", "heartbeat_at", "dismissed", "stage_started_at", "staging")
"""Bookkeeping kept in the job file but not part of the job object clients read."""


def is_terminal(job: dict[str, Any]) -> bool:
    return job["state"] in TERMINAL


def failed_version(job: dict[str, Any]) -> bool:
    """Whether a finished job leaves its version listed as failed (with the reason)
    until it is deleted: a fold that failed or was interrupted, not an upload refused
    as invalid (400) or a cancelled one."""
    return job["state"] == "failed" and job.get("status_code") != 400 and not job.get("dismissed")


def public(job: dict[str, Any]) -> dict[str, Any]:
    """The job object as the HTTP API gives it (see docs/service.md)."""
    shown = {key: value for key, value in job.items() if key not in PRIVATE_KEYS}
    shown["links"] = {
        "self": f"/v1/jobs/{job['id']}",
        "events": f"/v1/jobs/{job['id']}/events",
        "model": f"/v1/models/{job['name']}/versions/{job['version']}",
    }
    return shown


def _valid_id(job_id: str) -> bool:
    return len(job_id) == JOB_ID_LENGTH and all(c in "0123456789abcdef" for c in job_id)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _well_formed(job: Any, job_id: str) -> bool:
    """Whether a job file holds a job this module wrote: one damaged or edited by hand
    is left out (as if absent) rather than breaking every listing."""
    if not isinstance(job, dict) or job.get("id") != job_id or not _valid_id(job_id):
        return False
    owner = job.get("owner", {})
    return (
        job.get("state") in (*STAGES, *TERMINAL)
        and isinstance(job.get("name"), str)
        and type(job.get("version")) is int
        and _number(job.get("created_at"))
        and (job.get("heartbeat_at") is None or _number(job["heartbeat_at"]))
        and (job.get("finished_at") is None or _number(job["finished_at"]))
        and isinstance(job.get("timings", {}), dict)
        and (job.get("status_code") is None or type(job["status_code"]) is int)
        and isinstance(owner, dict)
        and type(owner.get("pid", 0)) is int
        and 0 <= owner.get("pid", 0) < 2**31
    )


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def write_json_atomically(path: Path, content: dict[str, Any]) -> None:
    """``content`` as ``path``, whole or not at all (a full disk leaves nothing behind)."""
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        temporary.write_text(json.dumps(content))
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


class JobStore:
    """The jobs of one repository, on disk; ``owner`` identifies this process."""

    def __init__(
        self, root: Path, *, stale_after: float, keep_seconds: float, keep_count: int
    ) -> None:
        self.directory = Path(root) / ".jobs"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.stale_after = stale_after
        self.keep_seconds = keep_seconds
        self.keep_count = keep_count
        self.owner = {"host": socket.gethostname(), "pid": os.getpid(), "token": uuid.uuid4().hex}

    # -- paths -----------------------------------------------------------------

    def path(self, job_id: str) -> Path:
        return self.directory / f"{job_id}.json"

    def cancel_marker(self, job_id: str) -> Path:
        return self.directory / f"{job_id}.cancel"

    def progress_file(self, job_id: str) -> Path:
        return self.directory / f"{job_id}.progress"

    # -- writing (the owner) ------------------------------------------------------

    def create(self, name: str, version: int, filename: str, staging: str) -> dict[str, Any]:
        """A new queued job; ``staging``: the name of its directory in ``.staging``."""
        now = time.time()
        job = {
            "id": uuid.uuid4().hex,
            "state": "queued",
            "name": name,
            "version": version,
            "filename": filename,
            "progress": None,
            "created_at": now,
            "started_at": None,
            "finished_at": None,
            "timings": {},
            "report": None,
            "error": None,
            "status_code": None,
            "owner": self.owner,
            "heartbeat_at": now,
            "staging": staging,
        }
        self.write(job)
        return job

    def write(self, job: dict[str, Any]) -> None:
        if not is_terminal(job):
            job["heartbeat_at"] = time.time()
        write_json_atomically(self.path(job["id"]), job)

    def finish(self, job: dict[str, Any], state: str, **changes: Any) -> None:
        job.update(changes, state=state, progress=None, finished_at=time.time())
        self.write(job)
        for leftover in (self.cancel_marker(job["id"]), self.progress_file(job["id"])):
            leftover.unlink(missing_ok=True)

    def request_cancel(self, job_id: str) -> None:
        self.cancel_marker(job_id).touch()

    def cancel_requested(self, job_id: str) -> bool:
        return self.cancel_marker(job_id).exists()

    def dismiss(self, job: dict[str, Any]) -> None:
        """A failed version deleted by the user: no longer shown in the model lists."""
        job["dismissed"] = True
        write_json_atomically(self.path(job["id"]), job)

    # -- reading (anyone) ---------------------------------------------------------

    def read(self, job_id: str) -> dict[str, Any]:
        """The job (marked interrupted first when its owner is gone); NotFound if unknown."""
        job = self._load(self.path(job_id)) if _valid_id(job_id) else None
        if job is None:
            raise NotFound(f"no job with id '{job_id}'")
        return self._checked(job)

    def all(self) -> list[dict[str, Any]]:
        """Every job, newest first."""
        jobs = [self._load(path) for path in self.directory.glob("*.json")]
        found = [self._checked(job) for job in jobs if job is not None]
        return sorted(found, key=lambda job: job["created_at"], reverse=True)

    def _load(self, path: Path) -> dict[str, Any] | None:
        try:
            job = json.loads(path.read_text())
        except (OSError, ValueError, RecursionError):  # gone meanwhile, or not one of ours
            return None
        return job if _well_formed(job, path.stem) else None

    def _checked(self, job: dict[str, Any]) -> dict[str, Any]:
        if not is_terminal(job) and self._orphaned(job):
            committed = self._committed_report(job)
            if committed is not None:  # stopped after its version went in: it is served
                self.finish(job, "done", report=committed)
                return job
            self.finish(job, "failed", error=INTERRUPTED, status_code=503)
            staging = job.get("staging")
            if isinstance(staging, str) and _valid_id(staging):  # what its upload left
                shutil.rmtree(self.directory.parent / ".staging" / staging, ignore_errors=True)
        return job

    def _committed_report(self, job: dict[str, Any]) -> dict[str, Any] | None:
        """The report of a job that was committing when it stopped and whose version
        is in the repository (ready), else None. Its version number was its own: no
        other job or upload could take it while it ran."""
        if job["state"] != "committing" or not NAME_PATTERN.fullmatch(job["name"]):
            return None
        version = self.directory.parent / job["name"] / str(job["version"])
        if not (version / FOLDED_FILE).is_file():
            return None
        try:
            report = json.loads((version / REPORT_FILE).read_text())
        except (OSError, ValueError):
            report = None
        return report if isinstance(report, dict) else {}

    def _orphaned(self, job: dict[str, Any]) -> bool:
        owner = job.get("owner") or {}
        if owner.get("token") == self.owner["token"]:
            return False
        if owner.get("host") == self.owner["host"]:
            if owner.get("pid") == self.owner["pid"]:  # a restarted process with the same pid
                return True
            if not _process_alive(int(owner.get("pid", 0))):
                return True
        return time.time() - float(job.get("heartbeat_at") or 0) > self.stale_after

    def prune(self) -> None:
        """Forget finished jobs older than ``keep_seconds`` and beyond the newest
        ``keep_count`` finished ones."""
        finished = [job for job in self.all() if is_terminal(job)]
        cutoff = time.time() - self.keep_seconds
        for index, job in enumerate(finished):
            if index >= self.keep_count or (job.get("finished_at") or 0) < cutoff:
                with contextlib.suppress(OSError):
                    self.path(job["id"]).unlink()
        for leftover in self.directory.glob(".*.tmp"):
            with contextlib.suppress(OSError):
                if leftover.stat().st_mtime < time.time() - self.stale_after:
                    leftover.unlink()
