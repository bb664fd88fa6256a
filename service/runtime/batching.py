"""The executor between the dataplane and an ONNX Runtime session.

With dynamic batching on, concurrent requests for the same model version wait
in a queue at most ``max_queue_delay_microseconds`` (Triton's meaning: how long
the scheduler may hold a request so others can join it) and are merged, along
the batch axis, into one session run of at most ``max_batch_size`` rows; the
results are split back in order. A request of ``max_batch_size`` rows or more
runs on its own. Requests are validated before they are queued, so one bad
request never fails a batch; if a merged run fails anyway, its requests are
retried one by one so only the culprit fails.

With batching off every request is its own run. Either way at most
``instances`` runs execute at once, each in a worker thread: never on the event
loop, since no estimate made before a run bounds what a model does on the real
inputs (a ``Loop`` whose trip count is an input value runs for as long as the
caller asks). A run still going after ``run_timeout_s`` is stopped through ONNX
Runtime's ``RunOptions.terminate`` and its requests answered 504 naming the model;
its thread is free again as soon as ONNX Runtime notices the flag (between two
operators, and between two iterations of a loop).
"""

from __future__ import annotations

import asyncio
import collections
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.errors import DeadlineExceeded, NotReady
from service.runtime.sessions import RunStopped, Session
from service.runtime.stats import ModelStats


@dataclass(frozen=True)
class BatchPolicy:
    enabled: bool = True
    max_batch_size: int = 64
    max_queue_delay_us: int = 0
    instances: int = 1
    run_timeout_s: float = 30.0


@dataclass
class _Pending:
    feed: dict[str, np.ndarray]
    rows: int
    key: tuple
    future: asyncio.Future
    enqueued_ns: int


class Observer:
    """Where an executor reports batch sizes, queue times and compute times (no-op here)."""

    def batch(self, rows: int) -> None:
        pass

    def queued(self, seconds: float) -> None:
        pass

    def computed(self, seconds: float) -> None:
        pass


class Executor:
    def __init__(
        self,
        session: Session,
        policy: BatchPolicy,
        stats: ModelStats,
        observe: Observer | None = None,
    ) -> None:
        self.session = session
        self.policy = policy
        self.stats = stats
        self._observe = observe or Observer()
        self._slots = asyncio.Semaphore(max(1, policy.instances))
        self._queue: collections.deque[_Pending] = collections.deque()
        self._arrived = asyncio.Event()
        self._worker: asyncio.Task | None = None
        self._running: set[asyncio.Task] = set()
        # Threads of its own (not anyio's shared pool): half the hop's cost (55 against
        # 110 us), and a slow model never delays another model's runs.
        self._threads = ThreadPoolExecutor(max(1, policy.instances), "foldserve-run")
        self._closed = False
        self.label = f"model '{stats.name}' version {stats.version}"

    # -- public --------------------------------------------------------------------

    async def run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        """All outputs of the session, in ``session.output_names`` order, for ``feed``."""
        rows = len(next(iter(feed.values())))
        started = time.perf_counter_ns()
        try:
            if not self.policy.enabled or rows >= self.policy.max_batch_size:
                async with self._slots:
                    (result,) = await self._execute([feed], rows)
            else:
                result = await self._enqueue(feed, rows, started)
        except Exception:
            self.stats.fail.add(time.perf_counter_ns() - started)
            raise
        self.stats.success.add(time.perf_counter_ns() - started)
        return result

    def close(self) -> None:
        self._closed = True
        self._threads.shutdown(wait=False)
        if self._worker is not None:
            self._worker.cancel()
        while self._queue:
            pending = self._queue.popleft()
            if not pending.future.done():
                pending.future.set_exception(
                    NotReady("the model version was unloaded while the request waited")
                )

    # -- batching ------------------------------------------------------------------

    async def _enqueue(self, feed: dict[str, np.ndarray], rows: int, now_ns: int) -> list:
        key = tuple((name, array.shape[1:], array.dtype.str) for name, array in feed.items())
        future = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(feed, rows, key, future, now_ns))
        self._arrived.set()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._batch_forever())
        return await future

    async def _batch_forever(self) -> None:
        while True:
            if not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
                continue
            await self._slots.acquire()
            try:
                batch = await self._gather()
            except BaseException:
                self._slots.release()
                raise
            task = asyncio.create_task(self._run_batch(batch))
            self._running.add(task)  # the loop keeps only a weak reference to a task
            task.add_done_callback(self._running.discard)
            task.add_done_callback(lambda _: self._slots.release())
            await asyncio.sleep(0)  # let the batch start before forming the next

    async def _gather(self) -> list[_Pending]:
        """Wait up to the queue delay for the first request's batch to fill, then take it."""
        first = self._queue[0]
        deadline_ns = first.enqueued_ns + self.policy.max_queue_delay_us * 1000
        while self._rows_like(first.key) < self.policy.max_batch_size:
            remaining = (deadline_ns - time.perf_counter_ns()) / 1e9
            if remaining <= 0:
                break
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except asyncio.TimeoutError:
                break
        taken: list[_Pending] = []
        rows = 0
        kept: collections.deque[_Pending] = collections.deque()
        while self._queue:
            pending = self._queue.popleft()
            fits = rows + pending.rows <= self.policy.max_batch_size
            if pending.key == first.key and fits and not pending.future.cancelled():
                taken.append(pending)
                rows += pending.rows
            elif not pending.future.cancelled():
                kept.append(pending)
        self._queue = kept
        return taken

    def _rows_like(self, key: tuple) -> int:
        return sum(p.rows for p in self._queue if p.key == key)

    async def _run_batch(self, batch: list[_Pending]) -> None:
        if not batch:
            return
        now = time.perf_counter_ns()
        for pending in batch:
            self.stats.queue.add(now - pending.enqueued_ns)
            self._observe.queued((now - pending.enqueued_ns) / 1e9)
        rows = sum(p.rows for p in batch)
        try:
            results = await self._execute([p.feed for p in batch], rows)
        except Exception as error:
            if len(batch) == 1 or isinstance(error, DeadlineExceeded):  # no retry: as slow
                for pending in batch:
                    _settle(pending.future, error=error)
                return
            for pending in batch:  # retry alone: only the culprit fails
                try:
                    (result,) = await self._execute([pending.feed], pending.rows)
                except Exception as error:
                    _settle(pending.future, error=error)
                else:
                    _settle(pending.future, result=result)
            return
        for pending, result in zip(batch, results, strict=True):
            _settle(pending.future, result=result)

    # -- one session run -----------------------------------------------------------

    async def _execute(self, feeds: list[dict[str, np.ndarray]], rows: int) -> list[list]:
        """Run the merged ``feeds`` in a worker thread within the time budget; return each
        feed's slice of the outputs. Statistics are recorded here, on the event loop,
        never from the worker thread."""
        if self._closed:
            raise NotReady(f"{self.label} was unloaded while the request waited")
        options = self.session.run_options()
        budget = self.policy.run_timeout_s
        loop = asyncio.get_running_loop()
        stop = loop.call_later(budget, _terminate, options)
        try:
            split, timings = await loop.run_in_executor(
                self._threads, self._execute_now, feeds, rows, options
            )
        except asyncio.CancelledError:  # the caller is gone: its run need not go on
            options.terminate = True
            raise
        except RunStopped:
            raise DeadlineExceeded(
                f"{self.label} took longer than {budget:g} s (FOLDSERVE_RUN_TIMEOUT_S) on "
                f"{rows} row{'s' if rows != 1 else ''} and was stopped"
            ) from None
        finally:
            stop.cancel()
        merge_ns, compute_ns, split_ns = timings
        self.stats.record_execution(rows, len(feeds), merge_ns, compute_ns, split_ns)
        self._observe.batch(rows)
        self._observe.computed(compute_ns / 1e9)
        return split

    def _execute_now(
        self, feeds: list[dict[str, np.ndarray]], rows: int, options: Any
    ) -> tuple[list[list], tuple[int, int, int]]:
        t0 = time.perf_counter_ns()
        merged = merge(feeds)
        t1 = time.perf_counter_ns()
        outputs = self.session.run(merged, options=options, label=self.label)
        t2 = time.perf_counter_ns()
        pieces = split(outputs, feeds)
        t3 = time.perf_counter_ns()
        return pieces, (t1 - t0, t2 - t1, t3 - t2)


def _terminate(options: Any) -> None:
    options.terminate = True


def merge(feeds: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Several requests' inputs as one, along the batch axis."""
    if len(feeds) == 1:
        return feeds[0]
    return {name: np.concatenate([feed[name] for feed in feeds]) for name in feeds[0]}


def split(outputs: list[np.ndarray], feeds: list[dict[str, np.ndarray]]) -> list[list]:
    """One merged run's outputs cut back into each request's rows, in order."""
    if len(feeds) == 1:
        return [outputs]
    bounds = np.cumsum([len(next(iter(feed.values()))) for feed in feeds])[:-1]
    pieces = [np.split(output, bounds) for output in outputs]
    return [[piece[i] for piece in pieces] for i in range(len(feeds))]


def _settle(future: asyncio.Future, result: Any = None, error: BaseException | None = None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
