"""Dynamic micro-batching: merge concurrent requests into one ``Pipeline.run`` call.

Per-request inference pays a fixed cost (Python glue, one session run per component, thread
hand-off) that does not grow with the batch, so merging rows that arrive within a few
milliseconds of each other raises throughput under load. A request waits at most
``max_wait_ms`` for company; under load the queue backlog fills batches with no wait at all.

Only requests that can be concatenated are merged: same task, same input names, and for each
tensor the same dtype and per-row shape (for raw items such as strings or file paths, any
number). The oldest pending request always heads the next batch, so nothing starves. Each
batch runs in a worker thread; the event loop stays free to accept requests. When a merged
batch fails, its requests are re-run one by one so that one bad request cannot fail the
others, and each caller receives its own result or error.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Hashable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["BatchPolicy", "BatchRecord", "MicroBatcher", "OverloadedError", "ShuttingDownError"]

Inputs = Mapping[str, Any]  # input name -> np.ndarray (batch-major) or list of raw items
RunBatch = Callable[[Hashable, dict[str, Any]], Mapping[str, np.ndarray]]


class OverloadedError(Exception):
    """The queue is full; the caller should retry later (HTTP 503)."""


class ShuttingDownError(Exception):
    """The batcher is draining for shutdown and accepts no new work (HTTP 503)."""


@dataclass(frozen=True)
class BatchPolicy:
    """How requests are merged and how much work may wait."""

    max_batch: int = 16  # rows per pipeline call; 1 turns micro-batching off
    max_wait_ms: float = 5.0  # how long the oldest request waits for others to join its batch
    max_queue: int = 256  # requests waiting beyond this are refused with OverloadedError
    workers: int = 1  # batches that run at the same time, each in its own thread

    def problems(self) -> list[str]:
        """Every invalid setting, as readable lines (empty when the policy is usable)."""
        out = [
            f"{name} must be at least 1, found {getattr(self, name)}"
            for name in ("max_batch", "max_queue", "workers")
            if getattr(self, name) < 1
        ]
        if not 0 <= self.max_wait_ms <= 10_000:
            out.append(f"max_wait_ms must be within [0, 10000], found {self.max_wait_ms}")
        return out


@dataclass(frozen=True)
class BatchRecord:
    """What one pipeline call did, for metrics."""

    task: Hashable
    requests: int
    rows: int
    queue_seconds: tuple[float, ...]  # per request: from submit to the start of its batch
    run_seconds: float
    split: bool = False  # the merged batch failed and its requests were re-run one by one


@dataclass(eq=False)
class _Request:
    task: Hashable
    inputs: Inputs
    rows: int
    signature: Hashable
    future: asyncio.Future
    enqueued: float = field(default_factory=time.monotonic)


def signature(task: Hashable, inputs: Inputs) -> Hashable:
    """Requests with equal signatures can be concatenated along the batch axis."""
    parts = []
    for name in sorted(inputs):
        value = inputs[name]
        if isinstance(value, np.ndarray):
            parts.append((name, "tensor", value.dtype.str, value.shape[1:]))
        else:
            parts.append((name, "items"))
    return (task, tuple(parts))


def concatenate(inputs: Sequence[Inputs]) -> dict[str, Any]:
    """Merge same-signature inputs row-wise: tensors along axis 0, raw item lists end to end."""
    merged: dict[str, Any] = {}
    for name, first in inputs[0].items():
        values = [i[name] for i in inputs]
        if isinstance(first, np.ndarray):
            merged[name] = np.concatenate(values, axis=0)
        else:
            merged[name] = [item for v in values for item in v]
    return merged


def split(outputs: Mapping[str, np.ndarray], rows: Sequence[int]) -> list[dict[str, np.ndarray]]:
    """Cut batch-major outputs back into one dict per request."""
    total = sum(rows)
    bounds = np.cumsum(rows)[:-1]
    for name, value in outputs.items():
        if np.ndim(value) == 0 or len(value) != total:
            found = np.shape(value)
            raise RuntimeError(
                f"output {name!r} has shape {found} for a batch of {total} rows; micro-batching needs "
                "batch-major outputs. Serve this bundle with max_batch=1."
            )
    parts = {name: np.split(np.asarray(value), bounds) for name, value in outputs.items()}
    return [{name: parts[name][i] for name in outputs} for i in range(len(rows))]


class MicroBatcher:
    """An asyncio front for a blocking ``run_batch(task, inputs)`` that merges concurrent calls.

    ``run_batch`` receives merged inputs and must return batch-major arrays. Use it from one
    event loop: ``await start()``, ``await submit(...)`` from request handlers, ``await close()``
    on shutdown (which finishes all accepted work first).
    """

    def __init__(
        self, run_batch: RunBatch, policy: BatchPolicy, on_batch: Callable[[BatchRecord], None] | None = None
    ) -> None:
        problems = policy.problems()
        if problems:
            raise ValueError("invalid batch policy: " + "; ".join(problems))
        self.policy = policy
        self._run_batch = run_batch
        self._on_batch = on_batch
        self._pending: deque[_Request] = deque()
        self._arrived = asyncio.Event()
        self._collecting = asyncio.Lock()  # one worker fills a batch at a time; the others run theirs
        self._closing = False
        self._workers: list[asyncio.Task] = []
        self._executor: ThreadPoolExecutor | None = None

    @property
    def queued(self) -> int:
        """Requests accepted but not yet started."""
        return len(self._pending)

    @property
    def closing(self) -> bool:
        return self._closing

    async def start(self) -> None:
        """Start the worker tasks (call once, inside the event loop that will submit)."""
        if self._workers:
            return
        self._executor = ThreadPoolExecutor(self.policy.workers, thread_name_prefix="mmedge-batch")
        self._workers = [asyncio.create_task(self._work(), name=f"batcher-{i}") for i in range(self.policy.workers)]

    async def submit(self, task: Hashable, inputs: Inputs, rows: int) -> dict[str, np.ndarray]:
        """Queue one request of ``rows`` rows and wait for its own slice of the outputs."""
        if self._closing:
            raise ShuttingDownError("the server is shutting down; retry on another instance")
        if not self._workers:
            raise RuntimeError("MicroBatcher.start() was not awaited")
        if len(self._pending) >= self.policy.max_queue:
            raise OverloadedError(f"{len(self._pending)} requests are already waiting (max_queue); retry shortly")
        future = asyncio.get_running_loop().create_future()
        self._pending.append(_Request(task, inputs, rows, signature(task, inputs), future))
        self._arrived.set()
        return await future

    async def close(self) -> None:
        """Refuse new work, finish everything already accepted, then stop the threads."""
        self._closing = True
        self._arrived.set()
        if self._workers:
            await asyncio.gather(*self._workers)
            self._workers = []
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    async def _work(self) -> None:
        while True:
            async with self._collecting:
                batch = await self._next_batch()
            if batch is None:
                return
            await self._run(batch)

    async def _next_batch(self) -> list[_Request] | None:
        """The oldest live request plus compatible ones, waiting up to max_wait for more."""
        while True:
            while self._pending and self._pending[0].future.done():  # caller went away
                self._pending.popleft()
            if self._pending:
                break
            if self._closing:
                return None
            self._arrived.clear()
            await self._arrived.wait()
        head = self._pending.popleft()
        batch = [head]
        deadline = head.enqueued + self.policy.max_wait_ms / 1000
        while True:
            self._take_compatible(batch)
            remaining = deadline - time.monotonic()
            if sum(r.rows for r in batch) >= self.policy.max_batch or remaining <= 0 or self._closing:
                return batch
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)

    def _take_compatible(self, batch: list[_Request]) -> None:
        rows = sum(r.rows for r in batch)
        key = batch[0].signature
        for request in list(self._pending):
            if rows >= self.policy.max_batch:
                return
            if request.future.done():
                self._pending.remove(request)
            elif request.signature == key and rows + request.rows <= self.policy.max_batch:
                self._pending.remove(request)
                batch.append(request)
                rows += request.rows

    async def _run(self, batch: list[_Request]) -> None:
        batch = [r for r in batch if not r.future.done()]  # callers cancelled while the batch filled
        if not batch:
            return
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        waits = tuple(started - r.enqueued for r in batch)
        task = batch[0].task
        try:
            merged = batch[0].inputs if len(batch) == 1 else concatenate([r.inputs for r in batch])
            outputs = await loop.run_in_executor(self._executor, self._run_batch, task, dict(merged))
            results = [outputs] if len(batch) == 1 else split(outputs, [r.rows for r in batch])
        except Exception as e:  # noqa: BLE001 - delivered to the caller(s), who map it to a response
            if len(batch) > 1:
                await self._run_alone(batch, waits, started)
                return
            _deliver(batch[0].future, error=e)
            self._record(task, batch, waits, started, split_batch=False)
            return
        for request, result in zip(batch, results, strict=True):
            _deliver(request.future, result=result)
        self._record(task, batch, waits, started, split_batch=False)

    async def _run_alone(self, batch: list[_Request], waits: tuple[float, ...], started: float) -> None:
        """Re-run each request of a failed merged batch by itself, so errors reach only their owner."""
        loop = asyncio.get_running_loop()
        for request in batch:
            try:
                outputs = await loop.run_in_executor(
                    self._executor, self._run_batch, request.task, dict(request.inputs)
                )
                _deliver(request.future, result=split(outputs, [request.rows])[0])
            except Exception as e:  # noqa: BLE001 - delivered to its caller
                _deliver(request.future, error=e)
        self._record(batch[0].task, batch, waits, started, split_batch=True)

    def _record(
        self, task: Hashable, batch: list[_Request], waits: tuple[float, ...], started: float, *, split_batch: bool
    ) -> None:
        if self._on_batch is not None:
            record = BatchRecord(
                task, len(batch), sum(r.rows for r in batch), waits, time.monotonic() - started, split_batch
            )
            self._on_batch(record)


def _deliver(future: asyncio.Future, *, result: Any = None, error: BaseException | None = None) -> None:
    if future.done():  # the caller was cancelled while its batch ran
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
