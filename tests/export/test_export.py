"""Whole exports of tiny models: split, exporters, verification, wiring, manifest, error paths."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from tinymodels import VOCAB, LSTMText, MaskedNet, MeanText, TriNet, masked_inputs, tri_inputs
from torch import Tensor, nn

from mmedge.bundle import RAW_INPUTS, AudioPreprocess, Edge, ImagePreprocess, TextPreprocess, load_bundle
from mmedge.errors import ExportError
from mmedge.export import ExportResult, Tolerance, export_model
from mmedge.export import _exporters as exporters

LOGITS_ATOL = 1e-4


def _session(bundle: Path, component: str) -> ort.InferenceSession:
    return ort.InferenceSession(str(bundle / f"{component}.onnx"), providers=["CPUExecutionProvider"])


def _run_chain(bundle: Path, inputs: dict[str, Tensor]) -> dict[str, np.ndarray]:
    """Run the bundle's components in manifest order, wired as the manifest says."""
    manifest = load_bundle(bundle).manifest
    values = {(RAW_INPUTS, n): t.numpy() for n, t in inputs.items()}
    for c in manifest.components:
        feeds = {e.input: values[(e.source, e.output)] for e in manifest.edges_into(c.name)}
        outs = _session(bundle, c.name).run(None, feeds)
        values.update({(c.name, t.name): v for t, v in zip(c.outputs, outs, strict=True)})
    return {o.name: values[(o.component, o.tensor)] for o in manifest.outputs}


def test_design_doc_model_exports_verifies_and_leaves_the_model_alone(tmp_path: Path) -> None:
    model = TriNet().train()
    text, image, audio = tri_inputs().values()
    result = export_model(
        model,
        example_inputs={"text": text, "image": image, "audio": audio},
        encoders={"text": "text_encoder", "image": "image_encoder", "audio": "audio_encoder"},
        out=tmp_path / "bundle",
        preprocess={
            "text": TextPreprocess(max_length=7),
            "image": ImagePreprocess(size=(12, 12)),
            "audio": AudioPreprocess(sample_rate=16000, max_seconds=0.025),
        },
        labels=("a", "b", "c"),
        vocab=[f"w{i}" for i in range(VOCAB)],
    )
    m = result.manifest
    assert sorted(p.name for p in result.path.iterdir()) == [
        "audio_encoder.onnx", "fusion_head.onnx", "image_encoder.onnx", "manifest.json", "text_encoder.onnx", "vocab.txt",
    ]  # fmt: skip
    assert not result.auto_split
    assert result.exporters == {
        "text_encoder": "dynamo",
        "image_encoder": "dynamo",
        "audio_encoder": "dynamo",
        "fusion_head": "dynamo",
    }
    assert [c.exporter for c in m.components] == ["dynamo"] * 4
    assert {c.opset for c in m.components} == {18}
    assert set(m.wiring) == {
        Edge(RAW_INPUTS, "text", "text_encoder", "text"),
        Edge(RAW_INPUTS, "image", "image_encoder", "image"),
        Edge(RAW_INPUTS, "audio", "audio_encoder", "audio"),
        Edge("text_encoder", "text_features", "fusion_head", "text_features"),
        Edge("image_encoder", "image_features", "fusion_head", "image_features"),
        Edge("audio_encoder", "audio_features", "fusion_head", "audio_features"),
    }
    assert [(i.name, i.modality, i.shape, i.example_shape) for i in m.inputs] == [
        ("text", "text", ("batch", "seq"), (2, 7)),
        ("image", "image", ("batch", 3, 12, 12), (2, 3, 12, 12)),
        ("audio", "audio", ("batch", "samples"), (2, 400)),
    ]
    assert m.input("text").preprocess.vocab_file == "vocab.txt"
    assert (result.path / "vocab.txt").read_text().splitlines()[3] == "w3"
    assert m.outputs[0].labels == ("a", "b", "c")
    assert m.outputs[0].kind == "logits"
    head = m.component("fusion_head")
    assert [v.reference for v in head.verification] == ["pytorch", "pytorch-chain"]
    assert all(v.passed and v.stage == "export" for c in m.components for v in c.verification)
    assert head.verification[0].shapes == (((2, 8), (2, 4), (2, 4)), ((3, 8), (3, 4), (3, 4)))
    for row in result.verification:
        assert row.passed
        assert row.max_abs_error <= LOGITS_ATOL
    # the chain on a third shape, independent of the exporter's own check
    other = {"text": text[:1, :3], "image": image[:1], "audio": audio[:1, :250]}
    np.testing.assert_allclose(
        _run_chain(result.path, other)["logits"], model.eval()(**other).detach().numpy(), atol=LOGITS_ATOL, rtol=1e-3
    )
    assert model.train().training  # the user's model: still its own mode, its own encoders
    assert type(model.text_encoder) is MeanText


def test_tuple_encoder_output_raw_mask_in_head_and_monolithic(tmp_path: Path) -> None:
    model = MaskedNet()
    result = export_model(
        model,
        masked_inputs(),
        {"text": "text_encoder", "image": "image_encoder"},
        out=tmp_path / "b",
        monolithic=True,
    )
    m = result.manifest
    text = m.component("text_encoder")
    assert [t.name for t in text.outputs] == ["text_features_0", "text_features_1_0", "text_features_1_1"]
    assert text.output_structure == ["text_features_0", ["text_features_1_0", "text_features_1_1"]]
    assert [t.shape for t in text.outputs] == [("batch", "seq", 6), (1, "batch", 6), (1, "batch", 6)]
    assert text.exporter == "torchscript"  # recurrent: TorchScript keeps the sequence length dynamic
    head = m.component("fusion_head")
    # c (text_features_1_1) is unused by forward, so it is not a head input; the raw mask is
    assert [t.name for t in head.inputs] == ["text_features_0", "text_features_1_0", "image_features", "mask"]
    graph_inputs = [i.name for i in onnx.load(str(result.path / "fusion_head.onnx")).graph.input]
    assert graph_inputs == ["text_features_0", "text_features_1_0", "image_features", "mask"]
    assert Edge(RAW_INPUTS, "mask", "fusion_head", "mask") in m.wiring
    assert m.input("mask").shape == ("batch", "seq")
    assert any("'mask' axis 1" in w for w in result.warnings)
    assert [(o.name, o.kind) for o in m.outputs] == [("logits", "logits"), ("embedding", "embedding")]
    assert head.output_structure == {"logits": "logits", "embedding": "embedding"}
    assert m.asset("monolithic").file == "model.onnx"
    assert "monolithic" not in {c.name for c in m.components}
    assert {r.component for r in result.verification} == {
        "text_encoder",
        "image_encoder",
        "fusion_head",
        "chain",
        "monolithic",
    }
    inputs = masked_inputs(batch=3)
    inputs = {"text": inputs["text"][:, :4], "image": inputs["image"], "mask": inputs["mask"][:, :4]}
    expected = model.eval()(**inputs)["logits"].detach().numpy()
    mono = _session(result.path, "model").run(["logits"], {n: t.numpy() for n, t in inputs.items()})[0]
    np.testing.assert_allclose(mono, expected, atol=LOGITS_ATOL, rtol=1e-3)
    np.testing.assert_allclose(_run_chain(result.path, inputs)["logits"], expected, atol=LOGITS_ATOL, rtol=1e-3)


def test_auto_split_exports_what_it_reports(tmp_path: Path) -> None:
    ids = torch.randint(0, VOCAB, (2, 7))
    result = export_model(_TextOnly(LSTMText(), 6), {"text": ids}, out=tmp_path / "b", dynamic=False)
    assert result.auto_split
    assert [(e.name, e.path, e.inputs) for e in result.encoders] == [("text_encoder", "text_encoder", ("text",))]
    assert result.warnings[0] == (
        "auto-split: text_encoder = _TextOnly.text_encoder on input 'text' (text: its name): 544 parameters, "
        "the largest of the 3 submodules called once on text alone"
    )
    assert "input 'text' (text) has no preprocessing metadata" in result.warnings[1]
    assert "[inputs.text.preprocess] to export.toml: max_length = 7 and a vocab_file" in result.warnings[1]
    assert [c.name for c in result.manifest.components] == ["text_encoder", "fusion_head"]
    assert result.manifest.input("text").shape == (2, 7)  # dynamic=False: every dim fixed
    assert result.manifest.component("fusion_head").outputs[0].shape == (2, 2)


class _TextOnly(nn.Module):
    def __init__(self, encoder: nn.Module, features: int) -> None:
        super().__init__()
        self.text_encoder = encoder
        self.head = nn.Linear(features, 2)

    def forward(self, text: Tensor) -> Tensor:
        out = self.text_encoder(text)
        return self.head(out[1][0][-1] if isinstance(out, tuple) else out)


def test_dynamo_fixing_a_dimension_falls_back_to_torchscript_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(exporters, "preferred_order", lambda _module: ("dynamo", "torchscript"))
    ids = torch.randint(0, VOCAB, (2, 7))
    result = export_model(_TextOnly(LSTMText(), 6), {"text": ids}, {"text": "text_encoder"}, out=tmp_path / "b")
    assert result.exporters["text_encoder"] == "torchscript"
    assert result.manifest.component("text_encoder").exporter == "torchscript"
    (warning,) = [w for w in result.warnings if w.startswith("text_encoder:")]
    assert "the dynamo exporter failed" in warning
    assert "'text' axis 1 ('seq') was fixed to 7" in warning


def test_a_torchscript_export_leaves_the_model_in_eval_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The TorchScript exporter restores the mode of the module it was given, recursively: the
    wrapper's (training) mode once reached the user's encoder, and the monolithic graph exported
    after it had training-mode Dropout nodes (which OpenVINO refuses to convert)."""

    class DropText(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed, self.drop = nn.Embedding(VOCAB, 8), nn.Dropout(0.5)

        def forward(self, text: Tensor) -> Tensor:
            return self.drop(self.embed(text)).mean(1)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.text_encoder, self.head = DropText(), nn.Linear(8, 2)

        def forward(self, text: Tensor) -> Tensor:
            return self.head(self.text_encoder(text))

    from mmedge.export._wrappers import MonolithicModule

    order = {True: ("dynamo", "torchscript"), False: ("torchscript", "dynamo")}
    monkeypatch.setattr(exporters, "preferred_order", lambda m: order[isinstance(m, MonolithicModule)])
    ids = torch.randint(0, VOCAB, (2, 7))
    result = export_model(Net(), {"text": ids}, {"text": "text_encoder"}, out=tmp_path / "b", monolithic=True)
    assert (result.exporters["text_encoder"], result.exporters["monolithic"]) == ("torchscript", "dynamo")
    assert "Dropout" not in {n.op_type for n in onnx.load(str(tmp_path / "b" / "model.onnx")).graph.node}


class _PythonLoop(nn.Module):
    """Works at any length in PyTorch, but loops in Python over it: both exporters unroll the loop."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(20, 4)

    def forward(self, text: Tensor) -> Tensor:
        x = self.embedding(text)
        total = x[:, 0]
        for i in range(1, text.shape[1]):
            total = total + x[:, i]
        return total


def test_a_dimension_no_exporter_keeps_dynamic_fails_naming_component_input_and_dim(tmp_path: Path) -> None:
    with pytest.raises(ExportError) as err:
        export_model(
            _TextOnly(_PythonLoop(), 4),
            {"text": torch.randint(0, 20, (2, 7))},
            {"text": "text_encoder"},
            out=tmp_path / "b",
        )
    message = str(err.value)
    assert "component 'text_encoder' could not be exported" in message
    assert "dynamo: dynamic dimension lost: 'text' axis 1 ('seq') was fixed to 7" in message
    assert "torchscript: output 'text_features': onnxruntime failed on the second input" in message
    assert not (tmp_path / "b").exists()


class _ExportsDifferently(nn.Module):
    """Two outputs that change while being exported: every mismatch must be reported at once."""

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor]:
        shift = 1.0 if torch.jit.is_tracing() or torch.compiler.is_exporting() else 0.0
        pooled = image.mean((2, 3))
        return pooled + shift, pooled * 2 + shift


def test_error_over_tolerance_lists_every_mismatching_output(tmp_path: Path) -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.image_encoder = _ExportsDifferently()

        def forward(self, image: Tensor) -> Tensor:
            a, b = self.image_encoder(image)
            return a + b

    with pytest.raises(ExportError) as err:
        export_model(
            Net(),
            {"image": torch.randn(2, 3, 4, 4)},
            {"image": "image_encoder"},
            out=tmp_path / "b",
            tolerance=Tolerance(atol=1e-3),
        )
    message = str(err.value)
    for exporter in ("dynamo", "torchscript"):
        line = next(line for line in message.splitlines() if line.strip().startswith(f"- {exporter}:"))
        assert "output 'image_features_0': max abs error 1 on the example input exceeds atol=0.001" in line
        assert "output 'image_features_1': max abs error 1" in line


def test_unsupported_operator_is_named_with_the_fix(tmp_path: Path) -> None:
    class Cumulative(nn.Module):
        def forward(self, audio: Tensor) -> Tensor:
            return torch.cummax(audio, dim=1).values

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.audio_encoder = Cumulative()

        def forward(self, audio: Tensor) -> Tensor:
            return self.audio_encoder(audio).sum(1)

    with pytest.raises(
        ExportError,
        match=r"(?s)component 'audio_encoder' uses aten::cummax, which no exporter could convert.*preprocessing",
    ) as err:
        export_model(Net(), {"audio": torch.randn(2, 50)}, {"audio": "audio_encoder"}, out=tmp_path / "b")
    assert "dynamo: operator aten::cummax is not supported" in str(err.value)
    assert "torchscript: operator aten::cummax is not supported" in str(err.value)


class _MelEncoder(nn.Module):
    def __init__(self) -> None:
        import torchaudio

        super().__init__()
        self.mel = torchaudio.transforms.MelSpectrogram(16000, n_fft=128, hop_length=64, n_mels=8)
        self.proj = nn.Linear(8, 4)

    def forward(self, audio: Tensor) -> Tensor:
        return self.proj(torch.log(self.mel(audio) + 1e-6).mean(-1))


class _MelNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.audio_encoder, self.head = _MelEncoder(), nn.Linear(4, 2)

    def forward(self, audio: Tensor) -> Tensor:
        return self.head(self.audio_encoder(audio))


def _export_mel(model: nn.Module, out: Path, **kwargs: Any) -> ExportResult:
    return export_model(model, {"audio": 0.1 * torch.randn(2, 1600)}, {"audio": "audio_encoder"}, out=out, **kwargs)


@pytest.mark.parametrize("mode", ["auto", "conv", None], ids=["auto", "conv", "default"])
def test_the_conv_audio_frontend_replaces_the_stft_and_is_recorded(tmp_path: Path, mode: str | None) -> None:
    import torchaudio

    model = _MelNet()
    result = _export_mel(model, tmp_path / "b", **({} if mode is None else {"audio_frontend": mode}))
    audio = result.manifest.component("audio_encoder")
    assert [o for o in audio.optimizations if o.startswith("mel_frontend")] == ["mel_frontend=conv:mel"]
    ops = {n.op_type for n in onnx.load(str(result.path / "audio_encoder.onnx")).graph.node}
    assert "STFT" not in ops
    assert "Conv" in ops
    assert all(r.passed for r in result.verification)
    assert isinstance(model.audio_encoder.mel, torchaudio.transforms.MelSpectrogram)  # swapped in a copy only
    assert not any("MelSpectrogram" in w for w in result.warnings)


def test_a_spectrogram_then_mel_scale_is_swapped_too(tmp_path: Path) -> None:
    import torchaudio

    class SpecEncoder(nn.Module):  # the spectrogram and mel scale as separate modules, as some write them
        def __init__(self) -> None:
            super().__init__()
            self.spec = torchaudio.transforms.Spectrogram(n_fft=128, hop_length=64)
            self.mel = torchaudio.transforms.MelScale(8, 16000, n_stft=65)
            self.to_db = torchaudio.transforms.AmplitudeToDB(top_db=80.0)
            self.proj = nn.Linear(8, 4)

        def forward(self, audio: Tensor) -> Tensor:
            return self.proj(self.to_db(self.mel(self.spec(audio))).mean(-1))

    model = _MelNet()
    model.audio_encoder = SpecEncoder()
    result = _export_mel(model, tmp_path / "b")
    assert "mel_frontend=conv:spec" in result.manifest.component("audio_encoder").optimizations
    assert "STFT" not in {n.op_type for n in onnx.load(str(result.path / "audio_encoder.onnx")).graph.node}
    assert all(r.passed for r in result.verification)


def test_keep_exports_the_model_s_stft(tmp_path: Path) -> None:
    result = _export_mel(_MelNet(), tmp_path / "b", audio_frontend="keep")
    assert not any(o.startswith("mel_frontend") for o in result.manifest.component("audio_encoder").optimizations)
    assert "STFT" in {n.op_type for n in onnx.load(str(result.path / "audio_encoder.onnx")).graph.node}


def test_auto_keeps_the_stft_and_says_why_where_the_swap_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mmedge.export.mel import MelFrontend

    def refuse(ms: Any) -> None:
        raise ExportError("cannot build a convolution mel front-end from this MelSpectrogram: pad_mode='odd'")

    monkeypatch.setattr(MelFrontend, "from_torchaudio", staticmethod(refuse))
    with pytest.raises(ExportError, match="pad_mode='odd'"):
        _export_mel(_MelNet(), tmp_path / "conv", audio_frontend="conv")
    assert not (tmp_path / "conv").exists()
    result = _export_mel(_MelNet(), tmp_path / "auto")
    assert "STFT" in {n.op_type for n in onnx.load(str(result.path / "audio_encoder.onnx")).graph.node}
    (kept,) = [w for w in result.warnings if "kept torchaudio's spectrogram" in w]
    assert kept.startswith("audio_encoder:")
    assert "pad_mode='odd'" in kept
    assert all(r.passed for r in result.verification)


def test_nested_encoder_path_and_external_data_over_the_protobuf_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Nested(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoders = nn.ModuleDict({"text": MeanText()})
            self.head = nn.Linear(8, 2)

        def forward(self, text: Tensor) -> Tensor:
            return self.head(self.encoders["text"](text))

    monkeypatch.setattr(exporters, "PROTOBUF_LIMIT", 64)  # pretend every component is over 2 GB
    model = Nested()
    ids = torch.randint(0, VOCAB, (2, 5))
    result = export_model(model, {"text": ids}, {"text": "encoders.text"}, out=tmp_path / "b")
    m = result.manifest
    assert result.encoders[0].path == "encoders.text"
    assert m.asset("text_encoder_weights").file == "text_encoder.onnx.data"
    assert m.asset("fusion_head_weights").file == "fusion_head.onnx.data"
    assert "external_data" in m.component("text_encoder").optimizations
    embedding = model.encoders["text"].embedding.weight.detach().numpy()
    assert embedding.tobytes() in (result.path / "text_encoder.onnx.data").read_bytes()
    assert embedding.tobytes() not in (result.path / "text_encoder.onnx").read_bytes()
    np.testing.assert_allclose(
        _run_chain(result.path, {"text": ids[:1, :3]})["logits"], model(ids[:1, :3]).detach().numpy(), atol=LOGITS_ATOL
    )
    assert isinstance(model.encoders["text"], MeanText)
