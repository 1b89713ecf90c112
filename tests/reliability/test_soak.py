"""Concurrency soak: one Pipeline, 8 threads, 2,000 mixed requests, bit-identical to the sequential run.

Requests mix batch sizes 1-8, sequence and wave lengths, ready tensors and raw forms (strings,
uint8 pixels, waves at another sample rate), and ``encode`` calls. The threaded results must
equal the sequential ones exactly, no call may fail, and resident memory may grow by at most
50 MB between the end of a warm-up and the end of the run (no per-call leak).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
from tinybundle import VOCAB, tiny_inputs

from mmedge.runtime import Audio, Pipeline

REQUESTS = 2000
THREADS = 8
MAX_RSS_GROWTH = 50 * 2**20


def _request(i: int) -> tuple[str, Any]:
    """Request ``i``: ("run", inputs) or ("encode", (name, value)), batch size 1 + i % 8."""
    batch = 1 + i % 8
    rng = np.random.default_rng(i)
    if i % 5 == 4:
        return "encode", ("image", rng.standard_normal((batch, 3, 8, 8)).astype(np.float32))
    inputs: dict[str, Any] = tiny_inputs(batch=batch, seq=2 + i % 7, samples=60 + i % 200, seed=i)
    if i % 3 == 0:  # raw forms: strings, pixels and waves go through preprocessing
        inputs["text"] = [" ".join(rng.choice(VOCAB[2:], 1 + j % 4)) for j in range(batch)]
        inputs["image"] = [rng.integers(0, 256, (5 + j, 9, 3), dtype=np.uint8) for j in range(batch)]
        inputs["audio"] = [Audio((0.1 * rng.standard_normal(200)).astype(np.float32), 22050) for _ in range(batch)]
    return "run", inputs


def _call(pipe: Pipeline, request: tuple[str, Any]) -> dict[str, np.ndarray]:
    kind, payload = request
    return pipe.run(payload) if kind == "run" else pipe.encode(*payload)


@pytest.mark.slow
def test_eight_threads_give_the_sequential_results_without_leaking(shared_bundle: Path) -> None:
    requests = [_request(i) for i in range(REQUESTS)]
    process = psutil.Process()
    with Pipeline(shared_bundle, "cpu") as pipe:
        expected = [_call(pipe, r) for r in requests]
        with ThreadPoolExecutor(THREADS) as pool:
            list(pool.map(lambda r: _call(pipe, r), requests[:200]))  # warm-up: arenas and caches settle
            warm = process.memory_info().rss
            results = list(pool.map(lambda r: _call(pipe, r), requests))
        grown = process.memory_info().rss - warm
    assert len(results) == REQUESTS
    for i, (got, want) in enumerate(zip(results, expected, strict=True)):
        assert got.keys() == want.keys(), i
        for name in want:
            np.testing.assert_array_equal(got[name], want[name], err_msg=f"request {i}, output {name}")
        assert next(iter(got.values())).shape[0] == 1 + i % 8
    assert grown < MAX_RSS_GROWTH, f"RSS grew by {grown / 2**20:.1f} MB over {REQUESTS} threaded calls"
