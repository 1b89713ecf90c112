"""What blocks full offload is reported per EP with its fix: an STFT front-end, 1-D ops, dynamic shapes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from mmedge.bundle import (
    RAW_INPUTS,
    AudioPreprocess,
    Component,
    Edge,
    InputSpec,
    Manifest,
    ModelInfo,
    OutputSpec,
    TensorSpec,
    staged_bundle,
    write_manifest,
)
from mmedge.mobile.api import MobileReport, package_mobile

Packaged = Callable[..., tuple[Path, MobileReport]]


def _stft_bundle(out: Path) -> Path:
    """One audio encoder computing spectral energy with the ONNX STFT op, as torchaudio exports it."""
    window = numpy_helper.from_array(np.hanning(16).astype(np.float32), "window")
    step = numpy_helper.from_array(np.array(4, np.int64), "step")
    axes = numpy_helper.from_array(np.array([2], np.int64), "axes")
    nodes = [
        helper.make_node("Unsqueeze", ["audio", "axes"], ["signal"]),
        helper.make_node("STFT", ["signal", "step", "window"], ["spectrum"], onesided=1),
        helper.make_node("ReduceSumSquare", ["spectrum"], ["energy"], axes=[1, 2, 3], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "audio_encoder",
        [helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["batch", "samples"])],
        [helper.make_tensor_value_info("energy", TensorProto.FLOAT, ["batch"])],
        [window, step, axes],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    manifest = Manifest(
        model=ModelInfo(name="stft"),
        inputs=(InputSpec("audio", "audio", "float32", ("batch", "samples"), (1, 64), AudioPreprocess(16000, 0.004)),),
        components=(
            Component(
                name="audio_encoder",
                file="audio_encoder.onnx",
                role="encoder",
                modality="audio",
                inputs=(TensorSpec("audio", "float32", ("batch", "samples")),),
                outputs=(TensorSpec("energy", "float32", ("batch",)),),
            ),
        ),
        wiring=(Edge(RAW_INPUTS, "audio", "audio_encoder", "audio"),),
        outputs=(OutputSpec("energy", "audio_encoder", "energy", kind="scores"),),
    )
    with staged_bundle(out) as stage:
        onnx.save(model, stage / "audio_encoder.onnx")
        write_manifest(stage, manifest)
    return out


def test_stft_blocks_every_ep_and_the_fix_is_the_conv_frontend(tmp_path: Path) -> None:
    report = package_mobile(_stft_bundle(tmp_path / "stft"), tmp_path / "mobile", target="generic")
    audio = report.component("audio_encoder")
    assert audio.ops["ai.onnx:STFT"] == 1
    for ep in audio.eps:
        assert "ai.onnx:STFT" in {u.op for u in ep.unsupported}, ep.ep
        assert not ep.fully_supported
    stft = next(b for b in audio.blockers if b.op == "ai.onnx:STFT")
    assert set(stft.eps) == {"NNAPI", "CoreML", "XNNPACK"}
    assert stft.actionable
    assert "--audio-frontend conv" in stft.fix
    assert "--audio-frontend conv" in report.to_markdown()
    assert audio.verification.passed  # the STFT still runs on the CPU EP, fixed to 64 samples


def test_one_dimensional_convolutions_are_flagged_with_the_2d_rewrite(packaged: Packaged) -> None:
    _, report = packaged("android")
    conv = next(b for b in report.component("audio_encoder").blockers if b.op == "ai.onnx:Conv")
    assert set(conv.eps) == {"NNAPI", "XNNPACK"}
    assert "rank 3" in conv.reason
    assert "Conv2d" in conv.fix


def test_dynamic_shapes_block_nnapi_and_coreml_until_fixed(packaged: Packaged) -> None:
    _, dynamic = packaged("generic")
    blocker = next(b for b in dynamic.component("fusion_head").blockers if b.op == "dynamic shapes")
    assert set(blocker.eps) == {"NNAPI", "CoreML"}
    assert "--fixed-shapes" in blocker.fix
    _, fixed = packaged("generic", fixed_shapes={"batch": 1})
    head = fixed.component("fusion_head")
    assert all(e.fully_supported for e in head.eps if e.ep != "XNNPACK")


def test_contrib_fusions_are_flagged_with_basic_optimization(packaged: Packaged) -> None:
    _, extended = packaged("generic", fixed_shapes={"batch": 1})
    fused = next(b for b in extended.component("image_encoder").blockers if b.op == "com.microsoft:FusedConv")
    assert "NNAPI" in fused.eps
    assert "--optimization basic" in fused.fix
    _, basic = packaged("generic", fixed_shapes={"batch": 1}, optimization="basic")
    image = basic.component("image_encoder")
    assert next(e for e in image.eps if e.ep == "NNAPI").fully_supported
    assert not any(op.startswith("com.microsoft") for op in image.ops)


def test_a_weight_that_is_not_a_constant_gets_the_fix_that_applies() -> None:
    """XNNPACK wants MatMul/Gemm weights constant: a weight computed from constants alone is folded
    by export, one computed from the inputs (attention's Q·Kᵀ) cannot be, a missing Gemm bias is neither."""
    from mmedge.mobile._rules import RULES, GraphFacts

    w = numpy_helper.from_array(np.eye(4, dtype=np.float32), "w")
    nodes = [
        helper.make_node("Transpose", ["w"], ["w_t"], name="transpose_w"),
        helper.make_node("MatMul", ["x", "w_t"], ["folded"], name="folded"),
        helper.make_node("Transpose", ["x"], ["x_t"], name="transpose_x"),
        helper.make_node("MatMul", ["x", "x_t"], ["scores"], name="scores"),
        helper.make_node("Gemm", ["x", "w"], ["no_bias"], name="no_bias"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 4])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [4, 4]) for n in ("folded", "scores", "no_bias")],
        [w],
    )
    facts = GraphFacts.of(graph)
    fixes = {}
    for node in graph.node:
        misses = [rule(node, facts, None) for rule in RULES["XNNPACK"].get(node.op_type, ())]
        fixes[node.name] = next((m.fix for m in misses if m is not None), None)
    assert "constant folding" in fixes["folded"]
    assert "activation-by-activation" in fixes["scores"]
    assert "bias" in fixes["no_bias"]
