"""``benchmarks/run_standard.py`` judges encoders against ceilings measured on their own CPU only,
and finds a text encoder's weight GEMMs at its deploy shape (``benchmarks/ceilings.py``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from ceilings import gemm_shapes
from run_standard import (
    TEXT_CEILING_HEADING,
    ceiling_lines,
    encoders_alone,
    text_ceiling_lines,
    write_ceiling_section,
)
from tinybundle import build_tiny_bundle, tiny_inputs

EPYC = {"cpu": "AMD EPYC", "flags": ["avx2", "avx512_vnni"]}


def _form(seconds: float) -> dict[str, float]:
    return {"min_s": seconds}


def _ceilings(machine: dict[str, Any]) -> dict[str, Any]:
    return {
        "machine": machine,
        "networks": {},
        "peak": {"fp32_gflops": 300.0, "int8_vnni_gops": 1200.0},
        "gemms": [
            {
                "m": 32,
                "k": 64,
                "n": 128,
                "fp32": _form(4e-6),
                "qlinear": _form(2e-6),
                "qdq": _form(1e-6),  # the fastest INT8 form sets the INT8 ceiling
                "dynamic": _form(3e-6),
            }
        ],
    }


def _record(gemms: list[dict[str, int]]) -> dict[str, Any]:
    return {
        "setup": {
            "model": "ResNetBertNet",
            "config": {"image_size": 224},
            "text_encoder_gemms": gemms,
            "quantization": {
                "precision": {"text_encoder": "int8"},
                "speed_check": {"text_encoder": {"fp32_ms": 0.016, "quantized_ms": 0.008}},
                "openvino_builds": {"text_encoder": {"own_file_ms": 0.02, "build_ms": 0.005, "chosen": True}},
            },
        },
        "report": {"machine": EPYC, "variants": []},
    }


def test_ceilings_of_another_cpu_are_not_applied() -> None:
    record = {
        "setup": {"model": "ResNetBertNet", "config": {"image_size": 224}},
        "report": {"machine": EPYC, "variants": []},
    }
    ceilings = {"machine": {"cpu": "Intel(R) Xeon(R) Processor", "flags": ["amx_int8", "avx2"]}, "networks": {}}
    for lines in (
        ceiling_lines(record, ceilings),
        text_ceiling_lines(_record([{"m": 1, "k": 2, "n": 3, "count": 1}]), ceilings),
    ):
        (line,) = lines
        assert "measured on another CPU (Intel(R) Xeon(R) Processor)" in line
        assert "run `benchmarks/ceilings.py` here" in line


def test_text_encoder_against_its_gemm_ceiling() -> None:
    # 4 GEMMs [32x64].[64x128], 2.10 MFLOP; ceilings 16 µs FP32, 4 µs INT8 (QDQ's 1 µs each)
    lines = text_ceiling_lines(_record([{"m": 32, "k": 64, "n": 128, "count": 4}]), _ceilings(EPYC))
    assert "FP32 MatMul 0.02 ms" in lines[0]
    assert "the fastest INT8 form per shape 0.00 ms" in lines[0]
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in lines[4:]}
    assert rows["alone, FP32 on onnxruntime (quantize speed check, median)"][4] == "100%"  # 0.016 ms = its ceiling
    assert rows["alone, INT8 on onnxruntime (quantize speed check, median)"][4] == "50%"  # twice the 4 µs ceiling
    assert rows["alone, its OpenVINO build on OpenVINO (one-graph check, median; shipped)"][4] == "80%"


def _alone(fp32: float, ort: float, ov: float, shipped: str = "int8_openvino") -> dict[str, Any]:
    def t(ms: float) -> dict[str, float]:
        return {"min_ms": ms, "median_ms": ms * 1.5, "runs": 10}

    return {"fp32_onnxruntime": t(fp32), "int8_onnxruntime": t(ort), "int8_openvino": t(ov), "shipped": shipped}


def test_encoders_timed_alone_replace_the_checks_in_turn_and_say_what_1_25x_asks() -> None:
    """Timed the ceilings' way (minimum, run after run), the rows come from ``encoders_alone``; the
    closing line says whether 1.25× faster than the shipped encoder would beat its GEMM ceiling."""
    record = _record([{"m": 32, "k": 64, "n": 128, "count": 4}])  # INT8 ceiling 0.004 ms
    record["setup"]["encoders_alone"] = {"text_encoder": _alone(0.016, 0.008, 0.0045)}
    lines = text_ceiling_lines(record, _ceilings(EPYC))
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in lines if line.startswith("| alone")}
    assert list(rows) == [
        "alone, run after run, FP32 on onnxruntime (min)",
        "alone, run after run, INT8 on onnxruntime (min)",
        "alone, run after run, INT8 on OpenVINO (min; shipped)",
        "alone, run after run, INT8 on OpenVINO (median; shipped)",
    ]
    assert rows["alone, run after run, INT8 on OpenVINO (min; shipped)"][4] == "89%"  # 4 µs ceiling / 4.5 µs
    assert rows["alone, run after run, INT8 on OpenVINO (median; shipped)"][2] == "0.01"  # 6.75 µs
    # 4.5 µs / 1.25 = 3.6 µs, under the 4 µs the GEMMs alone take at their ceiling
    assert "would fill 111% of that time, so no kernel measured on this CPU gets there" in lines[-1]
    record["setup"]["encoders_alone"] = {"text_encoder": _alone(0.016, 0.008, 0.006, shipped="int8_onnxruntime")}
    lines = text_ceiling_lines(record, _ceilings(EPYC))
    assert "INT8 on onnxruntime (min; shipped)" in "".join(lines)
    assert "would fill 62% of that time, leaving 0.00 ms for everything else (attention" in lines[-1]  # 6.4 µs


def test_encoders_alone_times_each_runtime_once_and_names_the_shipped_one(tmp_path: Path) -> None:
    work = tmp_path / "work"
    build_tiny_bundle(work / "fp32")
    int8 = build_tiny_bundle(work / "int8", seed=1)
    manifest = json.loads((int8 / "manifest.json").read_text(encoding="utf-8"))
    for c in manifest["components"]:
        if c["name"] == "image_encoder":  # marked INT8 and put on OpenVINO by quantize's backend check
            c["precision"], c["quantization"] = "int8", {"backend": {"backend": "openvino"}}
    (int8 / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    sample = tiny_inputs(batch=1)
    alone = encoders_alone(work, sample, threads=1, seconds=0.05)
    assert set(alone) == {"image_encoder", "text_encoder"}
    assert alone["image_encoder"]["shipped"] == "int8_openvino"
    assert set(alone["image_encoder"]) == {"fp32_onnxruntime", "int8_onnxruntime", "int8_openvino", "shipped"}
    assert alone["text_encoder"] == {
        "fp32_onnxruntime": alone["text_encoder"]["fp32_onnxruntime"],
        "shipped": "fp32_onnxruntime",
    }
    for timing in (alone["image_encoder"]["int8_openvino"], alone["text_encoder"]["fp32_onnxruntime"]):
        assert 0 < timing["min_ms"] <= timing["median_ms"]
        assert timing["runs"] >= 5


def test_a_gemm_the_ceilings_lack_is_named() -> None:
    (line,) = text_ceiling_lines(_record([{"m": 16, "k": 64, "n": 128, "count": 1}]), _ceilings(EPYC))
    assert "has no GEMM [16×64]·[64×128]" in line


def test_no_text_section_without_weight_gemms(tmp_path: Path) -> None:
    """An LSTM text encoder has no weight MatMuls: the image section is written, no text section."""
    record = _record([])
    assert text_ceiling_lines(record, _ceilings(EPYC)) == []
    result = tmp_path / "standard.json"
    result.write_text(json.dumps(record), encoding="utf-8")
    (tmp_path / "ceilings.json").write_text(json.dumps(_ceilings(EPYC)), encoding="utf-8")
    result.with_suffix(".md").write_text("# Standard\n\n## Setup\n\nx\n", encoding="utf-8")
    write_ceiling_section(result, tmp_path / "ceilings.json")
    text = result.with_suffix(".md").read_text(encoding="utf-8")
    assert "## Image encoder against the CPU's ceilings" in text
    assert TEXT_CEILING_HEADING not in text
    assert text.index("## Image encoder") < text.index("## Setup")


def test_text_section_follows_the_image_section_and_is_replaced(tmp_path: Path) -> None:
    result = tmp_path / "standard.json"
    result.write_text(json.dumps(_record([{"m": 32, "k": 64, "n": 128, "count": 4}])), encoding="utf-8")
    (tmp_path / "ceilings.json").write_text(json.dumps(_ceilings(EPYC)), encoding="utf-8")
    result.with_suffix(".md").write_text("# Standard\n\n## Setup\n\nx\n", encoding="utf-8")
    for _ in range(2):  # a second write replaces both sections instead of adding them again
        write_ceiling_section(result, tmp_path / "ceilings.json")
        text = result.with_suffix(".md").read_text(encoding="utf-8")
        assert text.count(TEXT_CEILING_HEADING) == 1
        assert text.index("## Image encoder") < text.index(TEXT_CEILING_HEADING) < text.index("## Setup")


def test_gemm_shapes_of_a_transformer_like_graph(tmp_path: Path) -> None:
    """Weight MatMuls over [batch, tokens, 64] count batch·tokens rows; Gemm transB swaps the weight;
    a product of two activations is not a weight GEMM."""
    x = helper.make_tensor_value_info("text", TensorProto.FLOAT, ["batch", "tokens", 64])
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, None)
    weights = [
        numpy_helper.from_array(np.zeros((64, 128), np.float32), "w_up"),
        numpy_helper.from_array(np.zeros((128, 64), np.float32), "w_down"),
        numpy_helper.from_array(np.zeros((10, 64), np.float32), "w_head"),  # Gemm with transB: [64 → 10]
        numpy_helper.from_array(np.array([-1, 64], np.int64), "flat"),
    ]
    nodes = [
        helper.make_node("MatMul", ["text", "w_up"], ["h"]),
        helper.make_node("MatMul", ["h", "w_down"], ["d"]),
        helper.make_node("Transpose", ["d"], ["dt"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["d", "dt"], ["scores"]),  # activation by activation: not counted
        helper.make_node("Reshape", ["d", "flat"], ["rows"]),
        helper.make_node("Gemm", ["rows", "w_head"], ["out"], transB=1),
        helper.make_node("Identity", ["scores"], ["unused"]),
    ]
    graph = helper.make_graph(
        nodes, "g", [x], [y, helper.make_tensor_value_info("unused", TensorProto.FLOAT, None)], weights
    )
    path = tmp_path / "text_encoder.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    assert gemm_shapes(path, length=32) == {(32, 64, 128): 1, (32, 128, 64): 1, (32, 64, 10): 1}
