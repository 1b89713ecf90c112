"""A tiny tri-modal bundle built with onnx.helper (no torch), for tests of every stage.

text [batch, seq] int64 → Gather + mean → 4 features; image [batch, 3, 8, 8] → Conv/Relu/pool → 4;
audio [batch, samples] → Conv1d/Relu/pool → 4; head: concat → Gemm → 3 logits. Small enough to
build in milliseconds, real enough (dynamic batch/seq/samples, an asset, wiring) to exercise the
whole contract.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from mmedge.bundle import (
    RAW_INPUTS,
    AudioPreprocess,
    Component,
    Edge,
    ImagePreprocess,
    InputSpec,
    Manifest,
    ModelInfo,
    OutputSpec,
    TensorSpec,
    TextPreprocess,
    staged_bundle,
    write_manifest,
)

OPSET = 17
VOCAB = ("<pad>", "<unk>", "bright", "dark", "cat", "dog", "sky", "sea")
LABELS = ("a", "b", "c")


def _save(graph: onnx.GraphProto, path: Path) -> None:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 9
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)


def _vi(name: str, elem: int, shape: list) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def _text_graph(rng: np.random.Generator) -> onnx.GraphProto:
    emb = numpy_helper.from_array(rng.standard_normal((len(VOCAB), 4)).astype(np.float32), "emb")
    nodes = [
        helper.make_node("Gather", ["emb", "text"], ["tok"]),
        helper.make_node("ReduceMean", ["tok"], ["text_features"], axes=[1], keepdims=0),
    ]
    return helper.make_graph(
        nodes,
        "text_encoder",
        [_vi("text", TensorProto.INT64, ["batch", "seq"])],
        [_vi("text_features", TensorProto.FLOAT, ["batch", 4])],
        [emb],
    )


def _image_graph(rng: np.random.Generator) -> onnx.GraphProto:
    # 5x5 over 3 channels: 75 values per output, deep enough that the quantizer makes it INT8
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 5, 5)).astype(np.float32) * 0.15, "w")
    b = numpy_helper.from_array(np.zeros(4, np.float32), "b")
    nodes = [
        helper.make_node("Conv", ["image", "w", "b"], ["c"], pads=[2, 2, 2, 2]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["image_features"]),
    ]
    return helper.make_graph(
        nodes,
        "image_encoder",
        [_vi("image", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [_vi("image_features", TensorProto.FLOAT, ["batch", 4])],
        [w, b],
    )


def _audio_graph(rng: np.random.Generator) -> onnx.GraphProto:
    # 33 taps: deep enough that the quantizer makes it INT8 (shallower convs stay FP32)
    w = numpy_helper.from_array(rng.standard_normal((4, 1, 33)).astype(np.float32) * 0.3, "w")
    axes = numpy_helper.from_array(np.array([1], np.int64), "axes")
    nodes = [
        helper.make_node("Unsqueeze", ["audio", "axes"], ["u"]),
        helper.make_node("Conv", ["u", "w"], ["c"], strides=[2]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["audio_features"]),
    ]
    return helper.make_graph(
        nodes,
        "audio_encoder",
        [_vi("audio", TensorProto.FLOAT, ["batch", "samples"])],
        [_vi("audio_features", TensorProto.FLOAT, ["batch", 4])],
        [w, axes],
    )


def _head_graph(rng: np.random.Generator) -> onnx.GraphProto:
    w = numpy_helper.from_array(rng.standard_normal((12, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(3).astype(np.float32), "b")
    nodes = [
        helper.make_node("Concat", ["text_features", "image_features", "audio_features"], ["cat"], axis=1),
        helper.make_node("Gemm", ["cat", "w", "b"], ["logits"]),
    ]
    feats = [_vi(n, TensorProto.FLOAT, ["batch", 4]) for n in ("text_features", "image_features", "audio_features")]
    return helper.make_graph(nodes, "fusion_head", feats, [_vi("logits", TensorProto.FLOAT, ["batch", 3])], [w, b])


def _feature(name: str) -> tuple[TensorSpec]:
    return (TensorSpec(name, "float32", ("batch", 4)),)


def tiny_manifest() -> Manifest:
    """The manifest of the tiny bundle, before hashes are filled in."""
    inputs = (
        InputSpec(
            "text",
            "text",
            "int64",
            ("batch", "seq"),
            (1, 6),
            TextPreprocess(max_length=8, pad_id=0, unk_id=1, vocab_file="vocab.txt"),
        ),
        InputSpec("image", "image", "float32", ("batch", 3, 8, 8), (1, 3, 8, 8), ImagePreprocess(size=(8, 8))),
        InputSpec(
            "audio",
            "audio",
            "float32",
            ("batch", "samples"),
            (1, 160),
            AudioPreprocess(sample_rate=16000, max_seconds=0.01),
        ),
    )
    components = tuple(
        Component(
            name=f"{m}_encoder",
            file=f"{m}_encoder.onnx",
            role="encoder",
            modality=m,
            inputs=(TensorSpec(i.name, i.dtype, i.shape),),
            outputs=_feature(f"{m}_features"),
            exporter="onnx.helper",
            opset=OPSET,
        )
        for m, i in zip(("text", "image", "audio"), inputs, strict=True)
    ) + (
        Component(
            name="fusion_head",
            file="fusion_head.onnx",
            role="head",
            inputs=_feature("text_features") + _feature("image_features") + _feature("audio_features"),
            outputs=(TensorSpec("logits", "float32", ("batch", 3)),),
            exporter="onnx.helper",
            opset=OPSET,
        ),
    )
    wiring = tuple(Edge(RAW_INPUTS, m, f"{m}_encoder", m) for m in ("text", "image", "audio")) + tuple(
        Edge(f"{m}_encoder", f"{m}_features", "fusion_head", f"{m}_features") for m in ("text", "image", "audio")
    )
    return Manifest(
        model=ModelInfo(name="tiny", class_path="tests.tinybundle"),
        inputs=inputs,
        components=components,
        wiring=wiring,
        outputs=(OutputSpec("logits", "fusion_head", "logits", "logits", LABELS),),
        assets=(_vocab_asset(),),
        created_by={"mmedge": "test"},
    )


def _vocab_asset():
    from mmedge.bundle import Asset

    return Asset(name="vocab", file="vocab.txt")


def build_tiny_bundle(out: str | Path, seed: int = 0) -> Path:
    """Write the tiny bundle to ``out`` (atomically) and return its path."""
    rng = np.random.default_rng(seed)
    with staged_bundle(out) as stage:
        for name, make in (
            ("text_encoder", _text_graph),
            ("image_encoder", _image_graph),
            ("audio_encoder", _audio_graph),
            ("fusion_head", _head_graph),
        ):
            _save(make(rng), stage / f"{name}.onnx")
        (stage / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
        write_manifest(stage, tiny_manifest())
    return Path(out)


def tiny_inputs(batch: int = 2, seq: int = 6, samples: int = 160, seed: int = 0) -> dict[str, np.ndarray]:
    """Valid raw tensors for the tiny bundle."""
    rng = np.random.default_rng(seed)
    return {
        "text": rng.integers(0, len(VOCAB), (batch, seq)).astype(np.int64),
        "image": rng.standard_normal((batch, 3, 8, 8)).astype(np.float32),
        "audio": rng.standard_normal((batch, samples)).astype(np.float32),
    }
