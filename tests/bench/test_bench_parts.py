"""The pieces of ``bench`` that need no process: attribution from spans, op aggregation of an
ORT trace, and the input tensors every variant shares."""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from tinybundle import VOCAB

from mmedge.bench._inputs import bench_inputs
from mmedge.bench._plan import check_same_inputs
from mmedge.bench._profile import hotspots, ort_op_totals
from mmedge.bench._stats import RunTiming, attribution
from mmedge.bench._variants import pipeline_sample
from mmedge.bundle import Bundle, load_bundle
from mmedge.errors import InputError

PLAN = (("text_encoder", "image_encoder"), ("fusion_head",))


def test_concurrent_encoders_share_their_stage_wall_time_by_busy_time() -> None:
    spans = [
        ("preprocess", "", 0, 10),
        ("component", "image_encoder", 22, 82),  # 60 busy, reported first: threads finish in any order
        ("component", "text_encoder", 20, 50),  # 30 busy; the stage runs from 20 to 82
        ("component", "fusion_head", 90, 100),
        ("execute", "", 12, 104),
        ("postprocess", "", 105, 110),
    ]
    sample = pipeline_sample(112, spans, PLAN)
    parts = {name: ns for name, _, ns in sample.parts}
    assert [name for name, _, _ in sample.parts] == [
        "preprocess",
        "text_encoder",
        "image_encoder",
        "fusion_head",
        "copies",
        "postprocess",
    ]
    assert parts == {
        "preprocess": 10,
        "text_encoder": 62 * 30 // 90,
        "image_encoder": 62 * 60 // 90,
        "fusion_head": 10,
        "copies": 92 - 72,
        "postprocess": 5,
    }
    assert list(sample.busy) == ["text_encoder", "image_encoder", "fusion_head"]
    assert sample.busy["image_encoder"] == 60


def test_attribution_is_the_mean_of_each_part() -> None:
    samples = [
        RunTiming(100, (("a", "component", 60), ("b", "copies", 30))),
        RunTiming(300, (("a", "component", 200), ("b", "copies", 90))),
    ]
    a = attribution(samples)
    assert [(p.name, p.mean_ms * 1e6) for p in a.parts] == [("a", pytest.approx(130)), ("b", pytest.approx(60))]
    assert a.end_to_end_ms * 1e6 == pytest.approx(200)
    assert a.unattributed_ms * 1e6 == pytest.approx(10)
    assert a.coverage == pytest.approx(0.95)


def test_ort_trace_is_aggregated_by_op_type_per_run(tmp_path: Path) -> None:
    events = [{"cat": "Session", "name": "model_run", "dur": 50}] * 2 + [
        {"cat": "Node", "name": "conv_kernel_time", "dur": 30, "args": {"op_name": "Conv"}},
        {"cat": "Node", "name": "conv2_kernel_time", "dur": 10, "args": {"op_name": "Conv"}},
        {"cat": "Node", "name": "relu_kernel_time", "dur": 20, "args": {"op_name": "Relu"}},
        {"cat": "Node", "name": "conv_fence_before", "dur": 0, "args": {}},
    ]
    trace = tmp_path / "trace.json"
    trace.write_text(json.dumps(events), encoding="utf-8")
    h = hotspots("image_encoder", *ort_op_totals(trace), top=1)
    assert h.runs == 2
    assert h.kernel_ms_per_run == pytest.approx(0.030)
    assert [(o.op, o.ms_per_run, o.calls_per_run, o.share) for o in h.ops] == [
        ("Conv", pytest.approx(0.020), 1.0, pytest.approx(2 / 3))
    ]


def test_synthetic_inputs_follow_the_manifest_and_are_seeded(tiny_bundle: Path) -> None:
    bundle = load_bundle(tiny_bundle)
    first = bench_inputs(bundle, (1, 4), None, seed=3)
    again = bench_inputs(bundle, (4,), None, seed=3)
    assert {k: v.shape for k, v in first[4].items()} == {"text": (4, 6), "image": (4, 3, 8, 8), "audio": (4, 160)}
    assert first[1]["text"].dtype == np.int64
    assert first[4]["text"].min() >= 0
    assert first[4]["text"].max() < len(VOCAB)
    for name, tensor in again[4].items():
        np.testing.assert_array_equal(tensor, first[4][name])


def test_given_inputs_are_cycled_to_each_batch_size(tiny_bundle: Path, tmp_path: Path) -> None:
    arrays = {
        "text": np.array([[2, 3], [4, 5]]),
        "image": np.zeros((2, 3, 8, 8), np.float32),
        "audio": np.ones((2, 160), np.float32),
    }
    np.savez(tmp_path / "in.npz", **arrays)
    tensors = bench_inputs(load_bundle(tiny_bundle), (3,), str(tmp_path / "in.npz"), seed=0)
    np.testing.assert_array_equal(tensors[3]["text"], [[2, 3], [4, 5], [2, 3]])


@pytest.mark.parametrize(
    ("given", "message"),
    [
        pytest.param({"text": np.zeros((1, 2), np.int64)}, r"missing \['image', 'audio'\]", id="missing"),
        pytest.param("nowhere.npz", "does not exist", id="no-file"),
    ],
)
def test_unusable_inputs_are_input_errors(tiny_bundle: Path, given: object, message: str) -> None:
    with pytest.raises(InputError, match=message):
        bench_inputs(load_bundle(tiny_bundle), (1,), given, seed=0)  # type: ignore[arg-type]


def test_bundles_with_other_inputs_cannot_be_compared(tiny_bundle: Path) -> None:
    bundle = load_bundle(tiny_bundle)
    other = Bundle(
        tiny_bundle.with_name("other"), dataclasses.replace(bundle.manifest, inputs=bundle.manifest.inputs[:2])
    )
    with pytest.raises(InputError, match="must take the same inputs"):
        check_same_inputs(bundle, [other])


def test_each_variant_follows_each_other_about_equally_often() -> None:
    """What one run leaves behind (caches, spinning threads) must not land on one variant more than others."""
    from collections import Counter

    from mmedge.bench._coord import _rounds

    order: list[str] = []

    class Fake:
        def __init__(self, name: str) -> None:
            self.name = name

        def request(self, command: dict) -> dict:
            order.append(self.name)
            return {}

    names = ["INT8", "FP32", "monolithic", "torch"]
    replicas = {n: [Fake(n)] for n in names}
    _rounds(replicas, 1, count=300, budget_s=None, into=None, progress=lambda _: None, phase="x")
    assert Counter(order) == dict.fromkeys(names, 300)
    pairs = Counter(itertools.pairwise(order))
    n = len(names)
    expected = 300 * (1 / n + 1 / n**2)  # per round: within it (n-1 of n(n-1) pairs), and across its border
    for a in names:
        for b in names:
            if a != b:
                assert 0.7 * expected < pairs[(a, b)] < 1.3 * expected, (a, b, pairs[(a, b)])


def test_every_batch_size_is_timed_on_a_graph_compiled_for_it(tiny_bundle: Path) -> None:
    """The one OpenVINO graph compiles at most a few shapes and runs further batch sizes in chunks
    of them; bench times each batch size as a deployment at that size runs it, compiled."""
    pytest.importorskip("openvino")
    from mmedge.bench._plan import variant_specs
    from mmedge.bench._variants import PipelineRunner
    from mmedge.openvino_graph import MAX_SHAPES

    sizes = tuple(range(1, MAX_SHAPES + 3))
    bundle = load_bundle(tiny_bundle)
    specs = variant_specs(
        bundle,
        [],
        torch_model=None,
        checkpoint=None,
        threads=1,
        providers="openvino",
        monolithic=False,
        graph_shapes=len(sizes) + 1,
    )
    runner = PipelineRunner(specs[0].spec)
    inputs = bench_inputs(bundle, sizes, None, seed=0)
    for batch in sizes:
        runner.run(inputs[batch])
    assert {shape[0][0] for shape in runner.pipe._whole.graph.shapes} == set(sizes)
    runner.pipe.close()
