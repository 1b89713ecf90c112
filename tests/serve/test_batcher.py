"""The micro-batcher alone: merging, limits, error isolation and draining, with a recording run function."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Hashable
from typing import Any

import numpy as np
import pytest

from mmedge.errors import InputError
from mmedge.serve.batcher import BatchPolicy, BatchRecord, MicroBatcher, OverloadedError, ShuttingDownError, split


class Recorder:
    """run_batch that doubles ``x`` row-wise, remembers each call and can be held or made to fail."""

    def __init__(self, fail_on: float | None = None) -> None:
        self.calls: list[tuple[Hashable, dict[str, Any]]] = []
        self.records: list[BatchRecord] = []
        self.release = threading.Event()
        self.release.set()
        self.fail_on = fail_on

    def __call__(self, task: Hashable, inputs: dict[str, Any]) -> dict[str, np.ndarray]:
        self.release.wait(timeout=10)
        self.calls.append((task, inputs))
        x = inputs["x"]
        if self.fail_on is not None and np.any(np.asarray(x) == self.fail_on):
            raise InputError(f"x contains {self.fail_on}")
        if isinstance(x, list):
            return {"n": np.array([len(s) for s in x])}
        return {"y": x * 2, "row_sum": x.sum(axis=1)}


def rows_of(value: float, rows: int = 1, width: int = 3) -> np.ndarray:
    return np.full((rows, width), value, np.float32)


async def serve(recorder: Recorder, policy: BatchPolicy, requests: list[dict[str, Any]], task: str = "run") -> list:
    batcher = MicroBatcher(recorder, policy, on_batch=recorder.records.append)
    await batcher.start()
    try:
        jobs = [batcher.submit(task, r, len(r["x"])) for r in requests]
        return await asyncio.gather(*jobs, return_exceptions=True)
    finally:
        await batcher.close()


def test_concurrent_requests_share_one_call_and_get_their_own_rows() -> None:
    rec = Recorder()
    requests = [{"x": rows_of(i, rows=1 + i % 2)} for i in range(5)]
    results = asyncio.run(serve(rec, BatchPolicy(max_batch=64, max_wait_ms=50), requests))
    assert len(rec.calls) == 1
    assert rec.records[0].requests == 5
    assert rec.records[0].rows == 7
    for request, result in zip(requests, results, strict=True):
        np.testing.assert_allclose(result["y"], request["x"] * 2, rtol=0, atol=0)
        assert result["row_sum"].shape == (len(request["x"]),)


def test_batches_never_exceed_max_batch_rows() -> None:
    rec = Recorder()
    requests = [{"x": rows_of(i, rows=1 + i % 3)} for i in range(12)]
    results = asyncio.run(serve(rec, BatchPolicy(max_batch=4, max_wait_ms=20), requests))
    assert all(not isinstance(r, BaseException) for r in results)
    assert max(len(inputs["x"]) for _, inputs in rec.calls) <= 4
    assert sum(len(inputs["x"]) for _, inputs in rec.calls) == sum(len(r["x"]) for r in requests)


def test_max_batch_one_turns_merging_off() -> None:
    rec = Recorder()
    asyncio.run(serve(rec, BatchPolicy(max_batch=1, max_wait_ms=20), [{"x": rows_of(i)} for i in range(4)]))
    assert [r.requests for r in rec.records] == [1, 1, 1, 1]


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param({"x": rows_of(1, width=3)}, {"x": rows_of(2, width=4)}, id="row-shape"),
        pytest.param({"x": rows_of(1)}, {"x": rows_of(2).astype(np.float64)}, id="dtype"),
        pytest.param({"x": rows_of(1)}, {"x": rows_of(2), "z": rows_of(0)}, id="input-names"),
        pytest.param({"x": rows_of(1)}, {"x": ["a"]}, id="tensor-vs-raw"),
    ],
)
def test_incompatible_requests_are_not_merged(first: dict, second: dict) -> None:
    rec = Recorder()
    results = asyncio.run(serve(rec, BatchPolicy(max_batch=16, max_wait_ms=30), [first, second]))
    assert all(not isinstance(r, BaseException) for r in results)
    assert [r.requests for r in rec.records] == [1, 1]


def test_raw_item_lists_are_merged_end_to_end() -> None:
    rec = Recorder()
    requests = [{"x": ["a", "bb"]}, {"x": ["ccc"]}]
    results = asyncio.run(serve(rec, BatchPolicy(max_batch=8, max_wait_ms=50), requests))
    assert rec.calls[0][1]["x"] == ["a", "bb", "ccc"]
    assert [r["n"].tolist() for r in results] == [[1, 2], [3]]


def test_one_bad_request_fails_alone_when_its_batch_is_split() -> None:
    rec = Recorder(fail_on=13.0)
    requests = [{"x": rows_of(v)} for v in (1.0, 13.0, 2.0)]
    results = asyncio.run(serve(rec, BatchPolicy(max_batch=8, max_wait_ms=50), requests))
    assert isinstance(results[1], InputError)
    np.testing.assert_allclose(results[0]["y"], rows_of(2.0), rtol=0, atol=0)
    np.testing.assert_allclose(results[2]["y"], rows_of(4.0), rtol=0, atol=0)
    assert [r.split for r in rec.records] == [True]


def test_full_queue_refuses_with_overloaded() -> None:
    async def scenario() -> list:
        rec = Recorder()
        rec.release.clear()  # hold the first batch in its thread so the queue fills up
        batcher = MicroBatcher(rec, BatchPolicy(max_batch=1, max_wait_ms=0, max_queue=2))
        await batcher.start()
        running = asyncio.ensure_future(batcher.submit("run", {"x": rows_of(0)}, 1))
        await asyncio.sleep(0.05)
        waiting = [asyncio.ensure_future(batcher.submit("run", {"x": rows_of(i)}, 1)) for i in (1, 2)]
        await asyncio.sleep(0)
        with pytest.raises(OverloadedError, match="max_queue"):
            await batcher.submit("run", {"x": rows_of(3)}, 1)
        rec.release.set()
        done = await asyncio.gather(running, *waiting)
        await batcher.close()
        return done

    assert len(asyncio.run(scenario())) == 3


def test_close_finishes_accepted_work_then_refuses_new() -> None:
    async def scenario() -> None:
        rec = Recorder()
        batcher = MicroBatcher(rec, BatchPolicy(max_batch=4, max_wait_ms=1000))
        await batcher.start()
        pending = [asyncio.ensure_future(batcher.submit("run", {"x": rows_of(i)}, 1)) for i in range(3)]
        await asyncio.sleep(0.01)
        await asyncio.wait_for(batcher.close(), timeout=5)  # must not wait out max_wait_ms
        assert all(p.done() and not p.exception() for p in pending)
        with pytest.raises(ShuttingDownError):
            await batcher.submit("run", {"x": rows_of(9)}, 1)

    asyncio.run(scenario())


def test_cancelled_caller_is_skipped() -> None:
    async def scenario() -> Recorder:
        rec = Recorder()
        batcher = MicroBatcher(rec, BatchPolicy(max_batch=8, max_wait_ms=100), on_batch=rec.records.append)
        await batcher.start()
        gone = asyncio.ensure_future(batcher.submit("run", {"x": rows_of(1)}, 1))
        kept = asyncio.ensure_future(batcher.submit("run", {"x": rows_of(2)}, 1))
        await asyncio.sleep(0.01)
        gone.cancel()
        result = await kept
        np.testing.assert_allclose(result["y"], rows_of(4), rtol=0, atol=0)
        await batcher.close()
        return rec

    rec = asyncio.run(scenario())
    assert [r.rows for r in rec.records] == [1]


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        pytest.param(BatchPolicy(max_batch=0), "max_batch", id="max-batch"),
        pytest.param(BatchPolicy(max_queue=0), "max_queue", id="max-queue"),
        pytest.param(BatchPolicy(workers=0), "workers", id="workers"),
        pytest.param(BatchPolicy(max_wait_ms=-1), "max_wait_ms", id="negative-wait"),
    ],
)
def test_invalid_policy_is_rejected(policy: BatchPolicy, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MicroBatcher(Recorder(), policy)


def test_split_refuses_outputs_that_are_not_batch_major() -> None:
    with pytest.raises(RuntimeError, match="batch-major"):
        split({"pooled": np.zeros((1, 4))}, [2, 1])
