"""The INT8 kernel check: fused kernels against the exact QDQ arithmetic (static), dynamic INT8 against FP32,
and the 7-bit remedy."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from mmedge.bundle import load_bundle
from mmedge.cpu import int8_kernels_saturate
from mmedge.quantize import ComponentReport, QuantizationReport, quantize_bundle, saturation
from mmedge.quantize.saturation import KERNEL_MIN_COSINE, kernel_agreement

Samples = Callable[[int, int], list[dict[str, np.ndarray]]]


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
    if not int8_kernels_saturate():  # VNNI (or not x86): products sum in int32
        assert cosine >= KERNEL_MIN_COSINE
    else:
        assert cosine < KERNEL_MIN_COSINE


def test_seven_bit_weights_never_saturate(tmp_path: Path) -> None:
    assert kernel_agreement(_qdq_matmul(tmp_path / "reduced.onnx", 63), _feeds()) > 0.9999


def test_int8_kernels_saturate_on_x86_without_vnni(monkeypatch) -> None:
    from mmedge import cpu

    cases = [
        ("x86_64", ("avx", "avx2"), True),
        ("x86_64", ("avx2", "avx512_vnni"), False),
        ("x86_64", ("avx2", "avx_vnni"), False),
        ("aarch64", ("asimd", "asimddp"), False),
        ("x86_64", (), False),  # flags unknown (no /proc/cpuinfo): no false alarm
    ]
    for machine, flags, expected in cases:
        assert cpu.int8_kernels_saturate(machine, flags) is expected, (machine, flags)  # a recorded machine
        monkeypatch.setattr(cpu.platform, "machine", lambda machine=machine: machine)
        monkeypatch.setattr(cpu, "cpu_model_and_flags", lambda flags=flags: ("some CPU", flags))
        assert cpu.int8_kernels_saturate() is expected, (machine, flags)  # this machine


def test_runtime_warns_when_the_kernel_check_ran_on_a_cpu_without_the_problem(tmp_path: Path, monkeypatch) -> None:
    import dataclasses
    import warnings

    from tinybundle import build_tiny_bundle, tiny_inputs

    from mmedge.bundle import write_manifest
    from mmedge.errors import SaturationWarning
    from mmedge.runtime import Pipeline, pipeline

    out = tmp_path / "int8"
    samples = [tiny_inputs(seed=i) for i in range(10)]
    quantize_bundle(build_tiny_bundle(tmp_path / "fp32"), out, calibration=samples, speed_check=False)
    manifest = load_bundle(out).manifest
    image = manifest.component("image_encoder").quantization
    assert image["kernels_checked_on"]["saturating"] is pipeline.int8_kernels_saturate()  # recorded where it ran

    def checked_on(saturating: bool) -> None:
        components = tuple(
            dataclasses.replace(
                c, quantization={**c.quantization, "kernels_checked_on": {"cpu": "X", "saturating": saturating}}
            )
            if c.quantization and "kernels_checked_on" in c.quantization
            else c
            for c in manifest.components
        )
        write_manifest(out, dataclasses.replace(manifest, components=components))

    monkeypatch.setattr(pipeline, "int8_kernels_saturate", lambda: True)  # running on an AVX2-only CPU
    full_range = {
        c.name for c in manifest.components if c.precision == "int8" and "kernels_checked_on" in c.quantization
    }
    full_range -= {c.name for c in manifest.components if c.quantization and c.quantization["recipe"]["reduce_range"]}
    assert "image_encoder" in full_range

    def warned() -> set[str]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            Pipeline(out, "cpu", threads=1).close()
        return {str(w.message).split(" ")[0] for w in caught if issubclass(w.category, SaturationWarning)}

    checked_on(saturating=False)  # quantized on a VNNI CPU: nothing could saturate there
    assert warned() == full_range
    checked_on(saturating=True)  # checked on a CPU like this one: 7-bit weights were used where needed
    assert warned() == set()


def _dynamic_lstm(torch_bundle: Path, torch_samples: Samples, out: Path) -> tuple[QuantizationReport, ComponentReport]:
    """The torch bundle's LSTM text encoder as dynamic INT8, the rest FP32."""

    report = quantize_bundle(
        torch_bundle,
        out,
        calibration=torch_samples(32, 0),
        recipe={"text_encoder": "dynamic", "image_encoder": "fp32", "fusion_head": "fp32"},
        min_agreement=0.0,
        speed_check=False,
    )
    return report, next(c for c in report.components if c.name == "text_encoder")


def test_a_dynamic_lstm_agrees_with_fp32_on_any_cpu(torch_bundle: Path, torch_samples: Samples, tmp_path: Path) -> None:
    # Measured on AVX2: this LSTM's 8-bit dynamic INT8 agreed with FP32 at cosine 0.966 on its worst sample.
    report, text = _dynamic_lstm(torch_bundle, torch_samples, tmp_path / "int8")
    (features,) = text.outputs
    assert features.min_cosine >= 0.999
    if int8_kernels_saturate():
        assert text.recipe["reduce_range"]
        assert "7-bit weights (reduce_range) brought the outputs closer to FP32" in text.reason
        assert any(n.startswith("text_encoder: INT8 kernels saturated") and "SQNR" in n for n in report.notes)
    else:  # VNNI: int32 sums, so the finer 8-bit weights win
        assert not text.recipe["reduce_range"]
    record = load_bundle(tmp_path / "int8").manifest.component("text_encoder").quantization
    assert record["kernels_checked_on"]["saturating"] is int8_kernels_saturate()


def test_dynamic_components_are_not_requantized_where_kernels_cannot_saturate(
    torch_bundle: Path, torch_samples: Samples, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(saturation, "int8_kernels_saturate", lambda: False)
    monkeypatch.setattr(saturation, "_dynamic", lambda *a: pytest.fail("compared 7-bit weights on a VNNI CPU"))
    report, text = _dynamic_lstm(torch_bundle, torch_samples, tmp_path / "int8")
    assert not text.recipe["reduce_range"]
    assert not any("saturated" in n for n in report.notes)
