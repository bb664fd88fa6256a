"""What the tests (and the bench scripts) share: waiting on a condition, ports, uploads,
and scripts run in a Python process of their own."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, TypeVar

import httpx

T = TypeVar("T")
OCTETS = "application/octet-stream"


def wait_until(
    predicate: Callable[[], T], timeout: float, interval: float = 0.05, message: str = ""
) -> T:
    """Ask ``predicate`` every ``interval`` seconds until it answers something true, and
    return that answer; a ``TimeoutError`` naming ``message`` after ``timeout`` seconds.
    An exception raised by ``predicate`` ends the wait at once."""
    deadline = time.monotonic() + timeout
    while True:
        answer = predicate()
        if answer:
            return answer
        if time.monotonic() >= deadline:
            raise TimeoutError(f"not within {timeout} s: {message or predicate}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def answers_200(url: str) -> bool:
    """Whether a GET of ``url`` is a 200 now (a refused connection is a no)."""
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def post_model(
    url: str,
    file: IO[bytes] | bytes,
    filename: str,
    name: str | None,
    *,
    wait: bool = True,
    timeout: float = 300,
    headers: dict[str, str] | None = None,
    content_type: str | None = None,
) -> httpx.Response:
    """POST a model file to ``url``/v1/models under ``name`` (``?wait=true`` unless
    ``wait`` is false: then the answer is the 202 of a job)."""
    part = (filename, file) if content_type is None else (filename, file, content_type)
    return httpx.post(
        f"{url}/v1/models" + ("?wait=true" if wait else ""),
        files={"file": part},
        data={"name": name} if name else {},
        headers=headers,
        timeout=timeout,
    )


def upload_file(
    server, path: Path, name: str | None = None, filename: str | None = None, **options
) -> httpx.Response:
    """``post_model`` of the file at ``path``, under ``filename`` (its own by default)."""
    with open(path, "rb") as handle:
        return post_model(server.url, handle, filename or path.name, name, **options)


def refused_upload(server, path: Path, *, wait: bool) -> str:
    """Upload ``path`` as model "new" to a server that must refuse to fold: assert a 409
    that leaves no "new" in its repository, and return the error."""
    reply = upload_file(server, path, "new", "new.keras", wait=wait)
    assert reply.status_code == 409, reply.text
    assert not (server.models_dir / "new").exists()
    return reply.json()["error"]


KSERVE_V1_CLIENT = """
import asyncio, json, sys
import httpx
from kserve import InferenceRESTClient, RESTConfig

async def main(url):
    client = InferenceRESTClient(RESTConfig(protocol="v1"))
    try:
{body}
    finally:
        await client.close()

asyncio.run(main(sys.argv[1]))
"""


def kserve_v1(server, body: str) -> subprocess.CompletedProcess:
    """``body`` (statements using ``client``, kserve's InferenceRESTClient speaking V1, and
    ``url``, the server's) run in a Python process of its own: kserve's generated V2 protos
    and tritonclient's define the same symbols and cannot be imported into one process."""
    indented = "\n".join(f"        {line}" for line in body.strip().splitlines())
    return run_script(KSERVE_V1_CLIENT.format(body=indented), server.url)


def compared_output(server, model: str, body: dict, timeout: float = 300) -> dict:
    """POST ``body`` to ``model``:compare, which must answer a 200 for one output; that
    output's entry."""
    reply = httpx.post(f"{server.url}/v1/models/{model}:compare", json=body, timeout=timeout)
    assert reply.status_code == 200, reply.text
    [output] = reply.json()["outputs"].values()
    return output


def run_script(source: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """``source`` run by this Python in a process of its own, with ``args`` as sys.argv[1:]."""
    return subprocess.run(
        [sys.executable, "-c", source, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
