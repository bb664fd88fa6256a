"""Large prediction bodies decoded, and large responses encoded, in a process of their own.

orjson and numpy hold the GIL for the whole of one call: parsing a 40 MB JSON body
(about a second on a busy core) in a worker *thread* still stops the event loop,
and with it every other request, for that long. Bodies above ``large_body_bytes``
therefore go to a small pool of decoder processes (spawned, importing only numpy,
orjson and the protocol modules, never ONNX Runtime); what comes back is the parsed
arrays, or the encoded bytes. Mid-sized bodies are parsed in a thread, small ones
in place. A decoder process that dies is replaced, and its request answered 503.

A large body with a declared length is not even joined in this process: its chunks
are written, as they arrive, to a file in ``/dev/shm`` (memory; writes release the
GIL) that the decoder process reads; joining and pickling 40 MB would each hold the
loop for tens of milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, NamedTuple

import anyio
import numpy as np

from service.errors import NotReady
from service.protocols import tfserving, v2
from service.protocols.codecs import to_json

logger = logging.getLogger("foldserve.bodies")

THREAD_BYTES = 256 * 1024
"""Bodies larger than this (and not sent to a decoder process) are parsed in a thread."""
SPOOL_DIR = "/dev/shm" if os.path.isdir("/dev/shm") else None
"""Where large bodies are handed to the decoder process (None: the temporary folder)."""


class TensorSpec(NamedTuple):
    """A model input's name, dtype and shape: what decoding needs of ``TensorMeta``,
    in a form a decoder process can unpickle without importing ONNX Runtime."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]


def specs(metas: Sequence[Any]) -> list[TensorSpec]:
    return [TensorSpec(meta.name, np.dtype(meta.dtype), tuple(meta.shape)) for meta in metas]


# -- what a decoder process runs (module level, so that it pickles by name) ------------


def decode_tfserving(raw: bytes, inputs: list[TensorSpec]) -> tuple[dict[str, Any], bool]:
    return tfserving.read_request(raw, inputs)


def encode_tfserving(outputs: dict[str, np.ndarray], row_format: bool) -> bytes:
    return to_json(tfserving.render_response(outputs, row_format))


def decode_v2(
    body: bytes, headers: dict[str, str], limit: int, inputs: list[TensorSpec]
) -> v2.V2Request:
    return v2.decode_request(body, headers, limit, inputs)


def v2_headers(headers: Any) -> dict[str, str]:
    """The request headers V2 decoding reads, under the names it reads them by (a plain
    dict pickles; the framework's case-insensitive mapping need not)."""
    names = ("content-encoding", v2.HEADER_LENGTH)
    return {name: headers[name] for name in names if name in headers}


def encode_v2(
    name: str, version: int, request: v2.V2Request, outputs: dict[str, np.ndarray]
) -> tuple[bytes, dict[str, str]]:
    return v2.encode_response(name, version, request, outputs)


def _ready() -> bool:
    return True


def _die_with(parent_pid: int) -> None:
    """Run first in every decoder process: it ends when the server does, killed or not
    (PR_SET_PDEATHSIG on Linux, and a thread watching the parent everywhere)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(1)

    if os.getppid() != parent_pid:
        os._exit(1)
    threading.Thread(target=watch, name="decoder-watchdog", daemon=True).start()


def _from_file(function: Callable[..., Any], path: str, *args: Any) -> Any:
    return function(Path(path).read_bytes(), *args)


class BodyCodec:
    """Runs a decode or encode in place, in a thread, or in a decoder process, by size."""

    def __init__(self, large_bytes: int, processes: int = 1) -> None:
        self.large_bytes = large_bytes
        self.processes = processes
        self._pool: ProcessPoolExecutor | None = None

    def start(self) -> None:
        """Start the decoder processes (they import what they need meanwhile)."""
        if self.large_bytes > 0:
            self._pool = self._new_pool()
            for _ in range(self.processes):
                self._pool.submit(_ready)

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self.processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_die_with,
            initargs=(os.getpid(),),
        )

    def stop(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    async def decode(self, request: Any, function: Callable[..., Any], *args: Any) -> Any:
        """``function(body, *args)`` on ``request``'s body, where it holds nobody up."""
        declared = request.headers.get("content-length", "")
        pool = self._pool
        if pool is None or not declared.isdigit() or int(declared) <= self.large_bytes:
            body = await request.body()
            return await self.run(function, body, *args, size=len(body))
        with tempfile.NamedTemporaryFile(dir=SPOOL_DIR, prefix="foldserve-body-") as spool:
            async for chunk in request.stream():
                spool.write(chunk)
            spool.flush()
            return await self._in_process(pool, _from_file, function, spool.name, *args)

    async def run(self, function: Callable[..., Any], *args: Any, size: int) -> Any:
        """``function(*args)`` where it holds nobody up; ``size``: bytes it handles."""
        pool = self._pool
        if pool is not None and size > self.large_bytes:
            return await self._in_process(pool, function, *args)
        if size > THREAD_BYTES:
            return await anyio.to_thread.run_sync(function, *args)
        return function(*args)

    async def _in_process(
        self, pool: ProcessPoolExecutor, function: Callable[..., Any], *args: Any
    ) -> Any:
        try:
            return await asyncio.wrap_future(pool.submit(function, *args))
        except BrokenProcessPool:
            if self._pool is pool:  # the first to notice replaces it
                logger.warning("a request decoder process died; starting a new one")
                pool.shutdown(wait=False, cancel_futures=True)
                self._pool = self._new_pool()
            raise NotReady("the request decoder stopped while handling this request") from None


def output_bytes(outputs: dict[str, np.ndarray]) -> int:
    """About how many bytes ``outputs`` take as JSON (a number is up to ~3x its binary)."""
    return 3 * sum(int(array.nbytes) for array in outputs.values())
