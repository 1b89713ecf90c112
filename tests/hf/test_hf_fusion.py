"""Transformer fusion of a bundle's encoders (optimize_transformers) and dynamic INT8 of transformer encoders."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from hf._models import Exported

from mmedge.bundle import load_bundle
from mmedge.errors import BundleError, ExportError
from mmedge.export.hf import optimize_transformers
from mmedge.runtime import Pipeline

TEXTS = ["a photo of a red circle", "two dogs playing in the park", "a bowl"]
FUSED_ATOL = 1e-4


def _image(batch: int) -> np.ndarray:
    return np.random.default_rng(9).standard_normal((batch, 3, 32, 32)).astype(np.float32)


def _logits(path: Path) -> np.ndarray:
    with Pipeline(path, providers="cpu") as pipe:
        return pipe.run({"text": TEXTS, "image": _image(len(TEXTS))})["logits"]


@pytest.mark.slow
def test_auto_fusion_is_timed_verified_and_recorded(bert_export: Exported, tmp_path: Path) -> None:
    result = optimize_transformers(bert_export.path, tmp_path / "fused", seq_length=16)
    assert set(result.kept) == {"text_encoder"}  # the ResNet has no attention: left alone
    assert {t.fuser for t in result.trials} == {"onnxscript", "ort"}
    assert all(t.passed and t.max_abs_error <= FUSED_ATOL and t.latency_ms is not None for t in result.trials)
    onnxscript = next(t for t in result.trials if t.fuser == "onnxscript")
    assert onnxscript.fused_ops["Attention"] == 2  # both layers' attention, from the dynamo graph
    text = result.bundle.manifest.component("text_encoder")
    note = text.optimizations[-1]
    assert note.startswith(f"transformer-fusion:{result.kept['text_encoder']}")
    assert "unfused" in note
    assert "seq 16" in note
    if result.kept["text_encoder"] != "none":  # kept only when faster: then checked and different
        check = text.verification[-1]
        assert (check.stage, check.passed, check.dynamic_dims_ok) == ("optimize", True, True)
        assert check.shapes == (((2, 16), (2, 16)), ((3, 8), (3, 8)))  # batch and sequence both changed
        fused = onnx.load(str(result.path / text.file))
        assert {i.name: [d.dim_param for d in i.type.tensor_type.shape.dim] for i in fused.graph.input} == {
            "input_ids": ["batch", "seq"],
            "attention_mask": ["batch", "seq"],
        }
    np.testing.assert_allclose(_logits(result.path), _logits(bert_export.path), atol=FUSED_ATOL, rtol=1e-3)
    with pytest.raises(ExportError, match="no FP32 transformer encoder to fuse"):
        optimize_transformers(result.path, tmp_path / "again")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("fuser", "attention"),
    [pytest.param("onnxscript", True, id="onnxscript"), pytest.param("ort", False, id="ort")],
)
def test_named_fuser_is_applied_and_checked(bert_export: Exported, tmp_path: Path, fuser: str, attention: bool) -> None:
    result = optimize_transformers(bert_export.path, tmp_path / fuser, fuse=fuser, components=["text_encoder"])
    assert result.kept == {"text_encoder": fuser}
    (trial,) = result.trials
    assert trial.latency_ms is None  # a named fuser is applied, not timed
    # measured: ORT's optimizer fuses LayerNorm/GELU of a dynamo graph but not its attention
    assert ("Attention" in trial.fused_ops) is attention
    assert trial.fused_ops["SkipLayerNormalization"] == 4
    text = load_bundle(result.path).manifest.component("text_encoder")
    assert text.optimizations[-1].startswith(f"transformer-fusion:{fuser} (")
    assert text.verification[-1].passed
    np.testing.assert_allclose(_logits(result.path), _logits(bert_export.path), atol=FUSED_ATOL, rtol=1e-3)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        pytest.param({"fuse": "fast"}, ExportError, "fuse must be one of", id="fuse-mode"),
        pytest.param({"threads": 0}, ExportError, "threads must be a positive int", id="threads"),
        pytest.param({"min_speedup": 0.5}, ExportError, "min_speedup must be a number >= 1", id="speedup"),
        pytest.param({"model_type": "no-such-model"}, ExportError, "optimum knows no onnxruntime fusion", id="type"),
        pytest.param({"components": ["fusion_head"]}, ExportError, r"only FP32 ONNX encoders.*fusion_head", id="head"),
        pytest.param({"components": ["nope"]}, BundleError, "no component named 'nope'", id="unknown"),
    ],
)
def test_fusion_option_errors(tiny_bundle: Path, tmp_path: Path, kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        optimize_transformers(tiny_bundle, tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_dynamic_int8_of_the_bert_encoder_with_report(bert_export: Exported, tmp_path: Path) -> None:
    from mmedge.quantize import quantize_bundle

    hf = bert_export.hf
    texts = [f"{a} {b}" for a in TEXTS for b in ("on a white background", "near the house", "")]
    rng = np.random.default_rng(0)
    samples = []
    for text in texts:
        batch = hf([text], padding="max_length", max_length=12, truncation=True, return_tensors="np")
        samples.append(
            {
                "input_ids": batch["input_ids"].astype(np.int64),
                "attention_mask": batch["attention_mask"].astype(np.int64),
                "image": rng.standard_normal((1, 3, 32, 32)).astype(np.float32),
            }
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # an AccuracyWarning on random weights is in the report
        report = quantize_bundle(bert_export.path, tmp_path / "int8", calibration=samples, speed_check=False)
    text = next(c for c in report.components if c.name == "text_encoder")
    assert text.recipe["mode"] == "dynamic"
    assert "attention" in text.reason
    assert text.op_counts["MatMulInteger"] > 0
    assert text.outputs[0].cosine >= 0.99  # the encoder's own error, fed FP32 inputs
    manifest = load_bundle(tmp_path / "int8").manifest
    assert manifest.component("text_encoder").precision == "int8"
    assert manifest.input("input_ids").preprocess.mask_input == "attention_mask"  # strings still work
    with Pipeline(tmp_path / "int8", providers="cpu") as pipe:
        assert pipe.run({"text": TEXTS, "image": _image(len(TEXTS))})["logits"].shape == (3, 4)
