"""A real foldserve server on 127.0.0.1, started as a user starts it."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import answers_200, free_port, wait_until

REPO = Path(__file__).resolve().parents[2]
DEMO_SOURCE = REPO / "models" / "digits" / "1" / "model.keras"


class Server:
    """``foldserve serve`` on 127.0.0.1 in a process of its own, logging to a file beside
    ``models_dir``. ``python`` and ``flags`` let a test start another install (the Ray
    venv) or engine the same way."""

    label = "server"

    def __init__(
        self,
        models_dir: Path,
        env: dict[str, str] | None = None,
        workers: int = 1,
        *,
        python: str = sys.executable,
        flags: tuple[str, ...] = (),
        new_session: bool = False,
    ):
        self.models_dir = models_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = models_dir.parent / f"{self.label.replace(' ', '-')}-{self.port}.log"
        # gRPC only where a test asks for it (FOLDSERVE_GRPC_PORT in env), so that
        # servers started side by side never contend for the default port.
        environment = {
            **os.environ,
            "FOLDSERVE_LOG_LEVEL": "warning",
            "FOLDSERVE_GRPC_PORT": "0",
            **(env or {}),
        }
        command = [python, "-m", "service.cli", "serve", *flags]
        command += ["--host", "127.0.0.1", "--port", str(self.port)]
        command += ["--models-dir", str(models_dir), "--workers", str(workers)]
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                command,
                cwd=REPO,
                env=environment,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=new_session,
            )

    def ready(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.label} exited:\n{self.log.read_text()}")
        return answers_200(f"{self.url}/v2/health/ready")

    def wait_ready(self, timeout: float = 180) -> None:
        try:
            wait_until(self.ready, timeout, interval=0.2)
        except TimeoutError:
            raise RuntimeError(
                f"{self.label} not ready in {timeout} s:\n{self.log.read_text()}"
            ) from None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextlib.contextmanager
def serving(models_dir: Path, env: dict[str, str] | None = None, workers: int = 1):
    """A ready server for the duration of the block, stopped afterwards."""
    running = Server(models_dir, env, workers)
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


@contextlib.contextmanager
def serving_grpc(models_dir: Path, env: dict[str, str] | None = None):
    """``serving`` with gRPC on a free port too, whose address is ``grpc_url``."""
    port = free_port()
    with serving(models_dir, {**(env or {}), "FOLDSERVE_GRPC_PORT": str(port)}) as running:
        running.grpc_url = f"127.0.0.1:{port}"
        yield running


def folded_copy(tmp_path_factory, server: Server, label: str) -> Path:
    """A fresh repository holding the demo model as ``server`` folded it."""
    models = tmp_path_factory.mktemp(label) / "models"
    shutil.copytree(server.models_dir / "digits", models / "digits")
    return models


def make_repository(root: Path) -> Path:
    models = root / "models"
    (models / "digits" / "1").mkdir(parents=True)
    shutil.copy(DEMO_SOURCE, models / "digits" / "1" / "model.keras")
    return models


def demo_server(tmp_path_factory, label: str) -> Iterator[Server]:
    """A fixture's server: over a fresh repository holding the demo model, unfolded."""
    with serving(make_repository(tmp_path_factory.mktemp(label))) as running:
        yield running


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Iterator[Server]:
    yield from demo_server(tmp_path_factory, "open")


@pytest.fixture(scope="session")
def guarded_server(tmp_path_factory, server) -> Iterator[Server]:
    """Tokens set, small limits, and a strict tolerance no fold can meet; the demo model is
    copied in already folded (by ``server``), so it is served all the same."""
    env = {
        "FOLDSERVE_ADMIN_TOKEN": "admin-secret",
        "FOLDSERVE_API_TOKEN": "reader-secret",
        "FOLDSERVE_FOLD_RTOL": "1e-15",
        "FOLDSERVE_FOLD_NOISE_FACTOR": "0",
        "FOLDSERVE_MAX_REQUEST_BYTES": "4096",
        "FOLDSERVE_MAX_UPLOAD_BYTES": str(2 * 1024 * 1024),
    }
    with serving(folded_copy(tmp_path_factory, server, "guarded"), env) as running:
        yield running


@pytest.fixture(scope="session")
def trained_model_file(tmp_path_factory) -> Path:
    """A freshly trained seed-article network (a few epochs on load_digits)."""
    import keras
    from sklearn.datasets import load_digits

    from tests import zoo

    keras.utils.set_random_seed(11)
    digits = load_digits()
    model = zoo.seed_mlp()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(digits.data.astype("float32"), digits.target, epochs=3, verbose=0)
    path = tmp_path_factory.mktemp("upload") / "Fresh Digits.keras"
    model.save(path)
    return path


@pytest.fixture(scope="session")
def digits():
    from sklearn.datasets import load_digits

    return load_digits()
