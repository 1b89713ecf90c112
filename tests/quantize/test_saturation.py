"""The INT8 kernel check: fused kernels against the exact QDQ arithmetic, and the 7-bit remedy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from mmedge.quantize.saturation import KERNEL_MIN_COSINE, kernel_agreement
from onnx import TensorProto, helper, numpy_helper


def _vnni() -> bool:
    """Whether onnxruntime's U8S8 kernels can use VNNI here (then nothing saturates)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags.split() for f in ("avx512_vnni", "avx_vnni", "amx_int8"))


def _qdq_matmul(path: Path, largest: int) -> Path:
    """x (uint8 range [0, 2]) → Q/DQ → MatMul with int8 weights → Q/DQ: 16 inputs, 4 outputs.

    Output 0's weights are all ``-largest``; the others are small enough never to clip, so a
    clipped output 0 changes the direction of the output vector.
    """
    scale = np.float32(2 / 255)
    init = [
        numpy_helper.from_array(np.array(scale), "xs"),
        numpy_helper.from_array(np.array(0, np.uint8), "xz"),
        numpy_helper.from_array(np.array([[-largest, 10, -20, 30]] * 16, np.int8), "wq"),
        numpy_helper.from_array(np.array(np.float32(0.01)), "ws"),
        numpy_helper.from_array(np.array(0, np.int8), "wz"),
        numpy_helper.from_array(np.array(np.float32(largest * 16 * 2 * 0.01 / 127)), "ys"),
        numpy_helper.from_array(np.array(128, np.uint8), "yz"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
        helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"]),
        helper.make_node("MatMul", ["xd", "wd"], ["m"]),
        helper.make_node("QuantizeLinear", ["m", "ys", "yz"], ["mq"]),
        helper.make_node("DequantizeLinear", ["mq", "ys", "yz"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
        init,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def _feeds() -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [{"x": rng.uniform(1.6, 2.0, (2, 16)).astype(np.float32)} for _ in range(3)]  # activations near 255


def test_full_range_weights_saturate_without_vnni(tmp_path: Path) -> None:
    # two products of 255 x -127 overflow int16 in VPMADDUBSW: AVX2 clips, VNNI does not
    cosine = kernel_agreement(_qdq_matmul(tmp_path / "full.onnx", 127), _feeds())
    if _vnni():
        assert cosine >= KERNEL_MIN_COSINE
    else:
        assert cosine < KERNEL_MIN_COSINE


def test_seven_bit_weights_never_saturate(tmp_path: Path) -> None:
    assert kernel_agreement(_qdq_matmul(tmp_path / "reduced.onnx", 63), _feeds()) > 0.9999
