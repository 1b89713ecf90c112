"""Every reference model exports, verifies and carries its preprocessing metadata (small configs)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import onnx
import pytest
from tinymodels import tiny_model
from torch import nn

from mmedge.bundle import RAW_INPUTS, Edge, TextPreprocess
from mmedge.export import ExportResult, export_model
from mmedge.models import REFERENCE_MODELS

LOGITS_ATOL = 1e-4

CASES = [
    pytest.param(lambda: tiny_model("TextImageNet", text_hidden=8), None, id="TextImageNet"),
    pytest.param(
        # the real torchaudio MelSpectrogram, which the export replaces by convolutions (audio_frontend="auto")
        lambda: tiny_model("TriModalNet", text_hidden=8, audio_frontend="torchaudio"),
        None,
        id="TriModalNet",
    ),
    pytest.param(
        lambda: tiny_model("CaptionNet", channels=(4, 8)),
        {"image": "image_encoder"},  # the decoder consumes computed state: it is the head
        id="CaptionNet",
    ),
    pytest.param(
        lambda: tiny_model("ResNetBertNet", layers=1, heads=2),
        None,
        id="ResNetBertNet",
        marks=pytest.mark.slow,  # ResNet-50 takes ~40 s to export on 2 cores
    ),
]


def test_every_reference_model_is_covered() -> None:
    assert {p.id for p in CASES} == set(REFERENCE_MODELS)


def _ops(path: Path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path)).graph.node}


def _check_common(model: nn.Module, result: ExportResult) -> None:
    m = result.manifest
    assert all(r.passed for r in result.verification)
    logits = [r for r in result.verification if r.output == "logits"]
    assert {"fusion_head", "chain"} <= {r.component for r in logits}
    assert all(r.max_abs_error <= LOGITS_ATOL for r in logits)
    assert all(c.verification and all(v.passed for v in c.verification) for c in m.components)
    assert m.outputs[0].labels == tuple(model.labels)
    assert (result.path / "vocab.txt").read_text(encoding="utf-8").splitlines() == list(model.vocab)
    for name, pre in model.preprocess.items():
        spec = m.input(name)
        if isinstance(pre, TextPreprocess):
            assert spec.preprocess == TextPreprocess(**{**vars(pre), "vocab_file": "vocab.txt"})
            assert spec.shape == ("batch", "seq")
        else:
            assert spec.preprocess == pre
    for row in logits:  # the second run really changed batch (and sequence length where there is one)
        assert row.shapes[0][0] != row.shapes[1][0]


@pytest.mark.parametrize(("build", "encoders"), CASES)
def test_reference_model_exports_and_verifies(
    build: Callable[[], nn.Module], encoders: dict | None, tmp_path: Path
) -> None:
    model = build()
    result = export_model(model, model.example_inputs(batch=2), encoders, out=tmp_path / "bundle")
    _check_common(model, result)
    m = result.manifest
    name = type(model).__name__
    if name in ("TextImageNet", "TriModalNet"):
        # the LSTM needs TorchScript to keep its sequence length dynamic
        assert m.component("text_encoder").exporter == "torchscript"
        assert m.component("text_encoder").verification[0].shapes == (((2, 16),), ((3, 12),))
    if name == "TriModalNet":
        assert "mel_frontend=conv:frontend.mel" in m.component("audio_encoder").optimizations
        assert "STFT" not in _ops(result.path / "audio_encoder.onnx")
        assert m.input("audio").shape == ("batch", "samples")
        assert m.input("audio").preprocess.sample_rate == 16000
    if name == "CaptionNet":
        head = m.component("fusion_head")
        assert [t.name for t in head.inputs] == ["image_features", "tokens"]
        assert Edge(RAW_INPUTS, "tokens", "fusion_head", "tokens") in m.wiring
        assert head.outputs[0].shape == ("batch", "seq", len(model.vocab))
        assert m.input("tokens").modality == "text"
    if name == "ResNetBertNet":
        assert m.component("text_encoder").exporter == "dynamo"
        assert m.input("image").preprocess.size == (32, 32)


@pytest.mark.slow  # a second full TriModalNet export (~30 s on 2 cores)
def test_trimodal_conv_frontend_and_monolithic(tmp_path: Path) -> None:
    model = tiny_model("TriModalNet", text_hidden=8, audio_frontend="torchaudio")
    result = export_model(
        model, model.example_inputs(batch=2), out=tmp_path / "b", audio_frontend="conv", monolithic=True
    )
    _check_common(model, result)
    audio = result.manifest.component("audio_encoder")
    assert "mel_frontend=conv:frontend.mel" in audio.optimizations
    assert "STFT" not in _ops(result.path / "audio_encoder.onnx")
    # the monolithic model has the LSTM and no STFT any more: TorchScript exports all of it
    assert result.exporters["monolithic"] == "torchscript"
    assert "STFT" not in _ops(result.path / "model.onnx")
    mono = [r for r in result.verification if r.component == "monolithic"]
    assert [r.output for r in mono] == ["logits"]
    assert mono[0].max_abs_error <= LOGITS_ATOL
