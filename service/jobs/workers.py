"""One fold worker process per job: started warm, confined when its job is handed over.

The server keeps one *spare* worker: a fresh process (``python -m
service.jobs.workers``) that imports TensorFlow, Keras and the folding package
and then waits for a single job. When a job is handed to it, it imports the
operator's ``--custom-objects`` modules, confines itself (``folding.confine``:
it reads only the job's inputs and the Python installation, writes only the
job's staging folder, opens no TCP connection) and only then opens the model.
It runs that one job, sends back the result and exits, so no model ever shares
a process with another one, or with a confinement made for another job.

The two sides talk over two pipes with ``multiprocessing.connection``: the
server sends ``Request``; the worker answers ``("ready",)`` once it is warm,
``("progress", stage, fraction)`` while the job runs and ``("result", dict)``
at the end. Its environment leaves out the server's tokens, and pins BLAS to
one thread, so that the process is single-threaded when it is confined (see
``folding.confine``).

In the worker, the kernel kills it when the server dies (``PR_SET_PDEATHSIG``),
and it exits when its request pipe closes; a watchdog thread (started after the
confinement, so confined too) exits with ``MEMORY_EXIT_CODE`` when the resident
memory goes over the cap and exits when the server is gone.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

MEMORY_EXIT_CODE = 86
WATCH_INTERVAL_S = 0.2
FUNCTIONS = ("fold_source", "keras_predict")
"""What a request may run: functions of ``service.jobs.in_worker``."""
WITHHELD_ENVIRONMENT = ("FOLDSERVE_ADMIN_TOKEN", "FOLDSERVE_API_TOKEN")
PINNED_ENVIRONMENT = {
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "JE_ARROW_MALLOC_CONF": "background_thread:false",
}
"""Threads a library would start on import, before the confinement: BLAS its thread pool
when numpy is imported, and pyarrow's bundled jemalloc its background thread when Keras
imports pyarrow (where it is installed)."""


class WorkerGone(Exception):
    """The worker ended without a result; ``returncode`` says how."""

    def __init__(self, returncode: int | None) -> None:
        super().__init__(f"the fold worker ended with code {returncode}")
        self.returncode = returncode


@dataclass(frozen=True)
class Request:
    """One job: ``fold_job.<function>(*args, **kwargs)``, run confined to reading
    ``read`` and writing ``write``, with temporary files in ``tmp`` (inside ``write``).
    ``progress``: the job wants ``progress=`` (a callable) to report its stages."""

    function: str
    args: tuple[Any, ...]
    read: tuple[str, ...]
    write: tuple[str, ...]
    tmp: str
    custom_objects: str = ""
    kwargs: dict[str, Any] = field(default_factory=dict)
    progress: bool = False


def _environment() -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if k not in WITHHELD_ENVIRONMENT}
    environment.update(PINNED_ENVIRONMENT)
    code = str(Path(__file__).resolve().parents[2])  # the same foldserve as this process
    paths = [code, *filter(None, environment.get("PYTHONPATH", "").split(os.pathsep))]
    environment["PYTHONPATH"] = os.pathsep.join(paths)
    return environment


class WorkerProcess:
    """The server's side of one worker process (started at once, warming up)."""

    def __init__(self, memory_limit_bytes: int, file_limit_bytes: int = 0) -> None:
        requests_read, requests_write = os.pipe()
        messages_read, messages_write = os.pipe()
        command = [sys.executable, "-m", "service.jobs.workers"]
        arguments = [str(requests_read), str(messages_write), str(os.getpid())]
        try:
            self.process = subprocess.Popen(
                [*command, *arguments, str(memory_limit_bytes), str(file_limit_bytes)],
                pass_fds=(requests_read, messages_write),
                env=_environment(),
                stdin=subprocess.DEVNULL,
            )
        finally:
            os.close(requests_read)
            os.close(messages_write)
        self._requests = Connection(requests_write, readable=False)
        self._messages = Connection(messages_read, writable=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    def run(
        self, request: Request, on_progress: Callable[[str, float | None], None] | None = None
    ) -> dict[str, Any]:
        """Hand ``request`` over and wait for its result (blocking; call from a thread).
        Raises ``WorkerGone`` when the process ends first (killed, crashed, over memory)."""
        try:
            self._requests.send(request)
            while True:
                message = self._messages.recv()
                if message[0] == "result":
                    return message[1]
                if message[0] == "progress" and on_progress is not None:
                    on_progress(*_checked_progress(message))
        except (EOFError, OSError):
            raise WorkerGone(self.process.wait()) from None
        finally:
            self.close()

    def wait_ready(self) -> None:
        """Block until the worker has imported TensorFlow (or ended)."""
        try:
            while self._messages.recv()[0] != "ready":
                pass
        except (EOFError, OSError):
            raise WorkerGone(self.process.wait()) from None

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        """Kill the process if it still runs (from any thread: a ``run`` waiting on it
        then ends with ``WorkerGone``)."""
        if self.process.poll() is None:
            self.process.kill()

    def close(self) -> None:
        """Stop the process, reap it and close the pipes (not while ``run`` waits)."""
        self.stop()
        self.process.wait()
        for connection in (self._requests, self._messages):
            connection.close()


def _checked_progress(message: Any) -> tuple[str, float | None]:
    """The stage and fraction of a progress message, whatever the worker sent."""
    _, stage, fraction = (*message, None, None)[:3]
    stage = stage if isinstance(stage, str) else "folding"
    if not isinstance(fraction, float | int) or isinstance(fraction, bool):
        return stage[:32], None
    return stage[:32], min(max(float(fraction), 0.0), 1.0)


# -- inside the worker ---------------------------------------------------------------


def _die_with_parent(parent_pid: int) -> None:
    if sys.platform.startswith("linux"):
        import contextlib
        import ctypes
        import signal

        with contextlib.suppress(OSError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:
        os._exit(1)


def _watch(parent_pid: int, memory_limit_bytes: int, statm: int) -> None:
    """Exit when the server is gone or the resident memory goes over the cap."""
    import threading

    page = os.sysconf("SC_PAGE_SIZE")

    def resident_bytes() -> int:
        try:
            return int(os.pread(statm, 256, 0).split()[1]) * page
        except (OSError, ValueError, IndexError):
            return 0

    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                os._exit(1)
            if memory_limit_bytes and resident_bytes() > memory_limit_bytes:
                os._exit(MEMORY_EXIT_CODE)
            threading.Event().wait(WATCH_INTERVAL_S)

    threading.Thread(target=watch, name="fold-worker-watchdog", daemon=True).start()


def _confine(request: Request) -> dict[str, Any] | None:
    """Confine this process to the request's paths; a failure is the job's answer."""
    import tempfile

    from folding.confine import ConfinementError, confine

    for variable in ("TMPDIR", "HOME", "XDG_CACHE_HOME"):  # caches too: nothing else is writable
        os.environ[variable] = request.tmp
    tempfile.tempdir = request.tmp
    try:
        confine(read=request.read, write=request.write)
    except ConfinementError as error:
        return {"ok": False, "kind": "fold", "error": f"the fold worker was not confined: {error}"}
    return None


def main(argv: list[str]) -> None:
    requests_fd, messages_fd, parent_pid, memory_limit_bytes, file_limit_bytes = (
        int(value) for value in argv
    )
    _die_with_parent(parent_pid)
    requests = Connection(requests_fd, writable=False)
    messages = Connection(messages_fd, readable=False)
    statm = os.open("/proc/self/statm", os.O_RDONLY) if os.path.exists("/proc/self") else -1

    from service.jobs import in_worker as fold_job

    fold_job.warm()
    try:
        messages.send(("ready",))
        request: Request = requests.recv()
    except (EOFError, OSError):  # the server stopped without giving this worker a job
        os._exit(0)
    if request.function not in FUNCTIONS:
        messages.send(("result", {"ok": False, "kind": "fold", "error": "unknown job"}))
        os._exit(0)
    if file_limit_bytes:  # a write beyond it fails with EFBIG (Python ignores SIGXFSZ)
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit_bytes, file_limit_bytes))
    result = fold_job.prepare(request.custom_objects) or _confine(request)
    if result is None:
        _watch(parent_pid, memory_limit_bytes, statm)
        kwargs = dict(request.kwargs)
        if request.progress:
            kwargs["progress"] = lambda stage, fraction: messages.send(
                ("progress", stage, fraction)
            )
        result = getattr(fold_job, request.function)(*request.args, **kwargs)
    messages.send(("result", result))
    os._exit(0)  # TensorFlow's clean-up at exit is slow and of no use here


if __name__ == "__main__":
    main(sys.argv[1:])
