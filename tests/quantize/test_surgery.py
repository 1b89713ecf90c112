"""Direct QDQ graph edits used by the fallback: weights read back, nodes taken out of quantization."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from mmedge.quantize._apply import apply, prepare
from mmedge.quantize._surgery import dequantized_weights, without_quantization
from mmedge.quantize.calibration import SampleReader
from mmedge.quantize.recipes import Recipe

Samples = Callable[..., list[dict[str, np.ndarray]]]


@pytest.fixture
def image_qdq(tiny_bundle: Path, tmp_path: Path, tiny_samples: Samples) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """(prepared FP32, static QDQ) image encoder of the tiny bundle."""
    pre = prepare("image_encoder", tiny_bundle / "image_encoder.onnx", tmp_path)
    reader = SampleReader([{"image": s["image"]} for s in tiny_samples(8)])
    apply(Recipe.for_mode("static"), pre, tmp_path / "qdq.onnx", exclude=[], samples=reader)
    return onnx.load(str(pre)), onnx.load(str(tmp_path / "qdq.onnx"))


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"image": x})[
        0
    ]


def test_dequantized_weights_round_trip_within_half_a_step(image_qdq: tuple) -> None:
    fp32, qdq = image_qdq
    pairs = dequantized_weights(qdq, fp32)
    assert set(pairs) == {"w", "b"}
    w, w8 = pairs["w"]
    step = np.abs(w).reshape(4, -1).max(axis=1) / 127  # symmetric per-channel INT8
    np.testing.assert_array_less(np.abs(w - w8).reshape(4, -1).max(axis=1), step / 2 + 1e-7)


def test_without_quantization_gives_the_node_fp32_inputs(image_qdq: tuple, tiny_samples: Samples) -> None:
    fp32, qdq = image_qdq
    conv = next(n.name for n in fp32.graph.node if n.op_type == "Conv")
    before = qdq.SerializeToString()
    edited = without_quantization(qdq, fp32, [conv])
    assert qdq.SerializeToString() == before  # a copy is edited
    onnx.checker.check_model(edited, full_check=True)
    node = next(n for n in edited.graph.node if n.op_type == "Conv")
    assert list(node.input) == ["image", "w", "b_fp32"]  # the DQ of the bias already writes "b"
    ops = [n.op_type for n in edited.graph.node]
    assert ops.count("DequantizeLinear") == 3  # the input/weight/bias DQs are gone; activations keep theirs
    x = tiny_samples(1, seed=5)[0]["image"]
    want = _run(fp32, x)
    assert np.abs(_run(edited, x) - want).max() < np.abs(_run(qdq, x) - want).max()
