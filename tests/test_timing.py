"""The interleaved timer with runners already open, and the split plan quantize times as a Pipeline runs it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
from tinybundle import tiny_inputs

from mmedge.bundle import load_bundle
from mmedge.graph import Graph
from mmedge.runtime import Pipeline
from mmedge.timing import interleaved_rounds


class _Counting:
    def __init__(self, ms: float) -> None:
        self.ms, self.calls = ms, 0

    def run(self, _names: object, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        assert set(feeds) == {"x"}
        self.calls += 1
        return [feeds["x"]]


def test_open_runners_are_timed_in_turn_with_caches_evicted() -> None:
    a, b = _Counting(1.0), _Counting(2.0)
    rounds = interleaved_rounds(
        {}, {"x": np.zeros(3)}, threads=1, runs=3, warmup=2, evict_bytes=1 << 20, opened={"a": a, "b": b}
    )
    first, second = next(rounds), next(rounds)
    rounds.close()
    assert set(first) == set(second) == {"a", "b"}
    assert all(ms >= 0 for ms in (*first.values(), *second.values()))
    assert a.calls == b.calls == 2 + 2 * 3  # warm-up, then runs per round


def test_quantize_times_the_split_plan_as_the_pipeline_runs_it(tiny_bundle: Path) -> None:
    pytest.importorskip("openvino")
    from mmedge.quantize.whole_graph import _Split

    bundle = load_bundle(tiny_bundle)
    graph = Graph(bundle.manifest)
    files = {c.name: bundle.path / c.file for c in bundle.manifest.components}
    split = _Split(graph, files, graph.order(), 2, {"image_encoder"})
    x = tiny_inputs(batch=1, seed=3)
    try:
        produced = split.run(None, x)
    finally:
        split.close()
    with Pipeline(tiny_bundle, {"image": "openvino", "*": "cpu"}, threads=2) as pipe:
        np.testing.assert_allclose(produced["fusion_head"]["logits"], pipe.run(x)["logits"], rtol=1e-4, atol=1e-5)
        plan = pipe.schedule  # the same thread plan: encoders at once, one thread each beside the costliest
        assert split._schedule.concurrent == plan.concurrent == {"text_encoder", "image_encoder", "audio_encoder"}
        # which encoder is costliest is measured, so only the shares are compared
        shares = sorted(split._schedule.threads[c] for c in plan.concurrent)
        assert shares == sorted(plan.threads[c] for c in plan.concurrent) == [1, 1, 2]
