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


def _conv_relu_conv(path: Path) -> None:
    """Conv → Relu → Conv: the QDQ quantizer drops the Relu (the quantized range clips it)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b1"),
        numpy_helper.from_array(rng.standard_normal((4, 8, 3, 3)).astype(np.float32), "w2"),
        numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b2"),
    ]
    nodes = [
        helper.make_node("Conv", ["image", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["out"], name="conv2", pads=[1, 1, 1, 1]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4, 8, 8])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(path))


def test_a_relu_the_quantizer_removed_is_reapplied_in_float(tmp_path: Path) -> None:
    _conv_relu_conv(tmp_path / "fp32.onnx")
    rng = np.random.default_rng(1)
    images = [rng.standard_normal((1, 3, 8, 8)).astype(np.float32) for _ in range(8)]
    reader = SampleReader([{"image": x} for x in images])
    apply(Recipe.for_mode("static"), tmp_path / "fp32.onnx", tmp_path / "qdq.onnx", exclude=[], samples=reader)
    fp32, qdq = onnx.load(str(tmp_path / "fp32.onnx")), onnx.load(str(tmp_path / "qdq.onnx"))
    assert "Relu" not in [n.op_type for n in qdq.graph.node]  # onnxruntime folded it into the quantized range

    edited = without_quantization(qdq, fp32, ["conv2"])
    onnx.checker.check_model(edited, full_check=True)
    conv2 = next(n for n in edited.graph.node if n.name == "conv2")
    relu = next(n for n in edited.graph.node if n.output[0] == conv2.input[0])
    assert relu.op_type == "Relu"  # conv2 reads the ReLU'd float tensor, not the pre-activation one

    def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return session.run(None, {"image": x})[0]

    x = images[0]  # within the calibrated ranges: the output's own Q/DQ (still there) does not clip it
    want = run(fp32, x)
    error = np.abs(run(edited, x) - want).mean()
    assert error < np.abs(run(qdq, x) - want).mean()
    assert error < 0.02 * np.abs(want).mean()  # reading the pre-ReLU tensor instead gave about 0.5
