"""encoders=None: per modality, the largest submodule fed by that modality's raw inputs alone, whatever its name.

None of these encoders is named after its modality ("resnet", "bert", "gru"), or the name says it
in another word ("vision", "sound"): the split is decided by data flow on one forward pass, and
the report (Split.notes, ExportResult.warnings, ``mmedge doctor``) says how.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tinymodels import VOCAB, ConvImage, tiny_model
from torch import Tensor, nn

from mmedge.export import export_model
from mmedge.export._split import plan_split
from mmedge.export.doctor import diagnose
from mmedge.export.doctor_cli import show_report
from mmedge.runtime import Pipeline


class TinyResNet(nn.Module):
    """Nested blocks, so smaller candidates (``resnet.layer1``, ``resnet.stem``) exist inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.layer1 = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.layer1(self.stem(x))).flatten(1)


class TinyBert(nn.Module):
    """ids and an attention mask -> the [CLS] vector, as a Hugging Face encoder is used."""

    def __init__(self) -> None:
        super().__init__()
        self.embeddings = nn.Embedding(VOCAB, 16)
        self.layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True, dropout=0.0)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.layer(self.embeddings(input_ids), src_key_padding_mask=attention_mask == 0)


class ResNetBert(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.resnet, self.bert, self.classifier = TinyResNet(), TinyBert(), nn.Linear(8 + 16, 3)

    def forward(self, pixels: Tensor, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        cls = self.bert(input_ids, attention_mask)[:, 0]  # post-processing stays in the head
        return self.classifier(torch.cat([self.resnet(pixels), cls], 1))


class VisionSoundGru(nn.Module):
    """A GRU over filterbank frames, a raw-wave conv fed ``wave.unsqueeze(1)``, and a vision tower."""

    def __init__(self) -> None:
        super().__init__()
        self.vision = ConvImage()
        self.sound = nn.Sequential(nn.Conv1d(1, 8, 9, stride=4), nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten())
        self.gru = nn.GRU(12, 10, batch_first=True)
        self.fuse = nn.Sequential(nn.Linear(4 + 8 + 10, 64), nn.ReLU(), nn.Linear(64, 2))  # biggest, but fuses

    def forward(self, x: Tensor, wave: Tensor, fbank: Tensor) -> Tensor:
        _, h = self.gru(fbank)
        return self.fuse(torch.cat([self.vision(x), self.sound(wave.unsqueeze(1)), h[-1]], 1))


def _resnet_bert_inputs(batch: int = 2) -> dict[str, Tensor]:
    gen = torch.Generator().manual_seed(batch)
    mask = torch.ones(batch, 6, dtype=torch.long)
    mask[0, 4:] = 0
    return {
        "pixels": torch.randn(batch, 3, 8, 8, generator=gen),
        "input_ids": torch.randint(0, VOCAB, (batch, 6), generator=gen),
        "attention_mask": mask,
    }


def _vision_sound_inputs(batch: int = 2) -> dict[str, Tensor]:
    gen = torch.Generator().manual_seed(batch)
    return {
        "x": torch.randn(batch, 3, 10, 10, generator=gen),
        "wave": torch.randn(batch, 200, generator=gen),
        "fbank": torch.randn(batch, 5, 12, generator=gen),
    }


@pytest.mark.parametrize(
    ("model", "inputs", "expected"),
    [
        pytest.param(
            ResNetBert,
            _resnet_bert_inputs,
            [
                ("image_encoder", "resnet", ("pixels",), ()),
                ("text_encoder", "bert", ("input_ids", "attention_mask"), ()),
            ],
            id="resnet-bert",
        ),
        pytest.param(
            VisionSoundGru,
            _vision_sound_inputs,
            [
                ("fbank_encoder", "gru", ("fbank",), ()),
                ("image_encoder", "vision", ("x",), ()),
                ("wave_encoder", "sound", ("wave",), ("unsqueeze",)),
            ],
            id="vision-sound-gru",
        ),
    ],
)
def test_encoders_are_found_by_data_flow_whatever_their_names(model: type, inputs, expected: list) -> None:
    split = plan_split(model().eval(), inputs(), None, {}, {})
    assert split.auto
    got = sorted((e.name, e.path, e.inputs, e.folded) for e in split.encoders)
    assert got == sorted(expected)
    for name, path, *_ in expected:
        (note,) = [n for n in split.notes if n.startswith(f"auto-split: {name} = ")]
        assert f"{model.__name__}.{path} on input" in note
        assert "parameters, the largest of the" in note


def test_the_modality_of_an_input_comes_from_its_tensor_when_its_name_says_nothing() -> None:
    split = plan_split(VisionSoundGru().eval(), _vision_sound_inputs(), None, {}, {})
    assert {e.path: e.modality for e in split.encoders} == {"vision": "image", "sound": "audio", "gru": "audio"}
    assert any("'x' (image: a float32 4-D tensor)" in n for n in split.notes)
    assert any("'fbank' (audio: a float32 3-D tensor)" in n for n in split.notes)


def test_auto_split_exports_and_runs_like_pytorch(tmp_path: Path) -> None:
    model = VisionSoundGru().eval()
    # [batch, frames, features]: "other" keeps the feature axis fixed (audio would make the last axis dynamic).
    result = export_model(model, _vision_sound_inputs(), out=tmp_path / "b", modalities={"fbank": "other"})
    assert result.auto_split
    assert [c.name for c in result.manifest.components] == [
        "fbank_encoder",
        "image_encoder",
        "audio_encoder",
        "fusion_head",
    ]
    assert result.manifest.component("audio_encoder").folded == ("unsqueeze",)
    assert any(w.startswith("auto-split: image_encoder = VisionSoundGru.vision") for w in result.warnings)
    check = _vision_sound_inputs(3)
    with torch.no_grad():
        expected = model(**check).numpy()
    with Pipeline(result.path, "cpu", threads=1) as pipe:
        got = pipe.run({n: t.numpy() for n, t in check.items()})["logits"]
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-3)


class TowersInPieces(nn.Module):
    """Each tower written as stages in forward: a big embedding table before a small transformer, and a
    projection after the CNN (which, after a real encoder, is the head's)."""

    def __init__(self) -> None:
        super().__init__()
        self.tok = nn.Embedding(5000, 16)  # more parameters than the transformer that reads it
        self.text = nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 2, 32, batch_first=True, dropout=0.0), 1)
        self.vision, self.vproj = TinyResNet(), nn.Linear(8, 16)
        self.head = nn.Linear(32, 3)

    def forward(self, pixels: Tensor, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        t = self.text(self.tok(input_ids), src_key_padding_mask=attention_mask == 0)[:, 0]
        return self.head(torch.cat([t, self.vproj(self.vision(pixels))], 1))


def test_an_embedding_table_before_its_transformer_is_folded_into_the_text_encoder(tmp_path: Path) -> None:
    model = TowersInPieces().eval()
    inputs = _resnet_bert_inputs()
    inputs["input_ids"] = inputs["input_ids"] % 5000
    split = plan_split(model, inputs, None, {}, {})
    got = {e.name: (e.path, e.inputs) for e in split.encoders}
    assert got == {"text_encoder": ("text", ("input_ids", "attention_mask")), "image_encoder": ("vision", ("pixels",))}
    (note,) = [n for n in split.notes if n.startswith("auto-split: text_encoder = ")]
    assert "the last text-only stage of the chain from TowersInPieces.tok (80,000 parameters" in note
    result = export_model(model, inputs, out=tmp_path / "b")
    check = _resnet_bert_inputs(3)
    check["input_ids"] = check["input_ids"] % 5000
    with torch.no_grad():
        expected = model(**check).numpy()
    with Pipeline(result.path, "cpu", threads=1) as pipe:
        np.testing.assert_allclose(pipe.run({n: t.numpy() for n, t in check.items()})["logits"], expected, atol=1e-5)
        encoded = pipe.encode("text_encoder", {n: check[n].numpy() for n in ("input_ids", "attention_mask")})
    assert [a.shape for a in encoded.values()] == [(3, 6, 16)]  # the transformer's output, not the table's


class SideBySide(nn.Module):
    """Two branches on the same ids, neither reading the other: the larger is the encoder."""

    def __init__(self) -> None:
        super().__init__()
        self.words = nn.Sequential(nn.Embedding(VOCAB, 32), nn.Flatten(), nn.Linear(32 * 6, 8))
        self.chars = nn.Sequential(nn.Embedding(VOCAB, 2), nn.Flatten(), nn.Linear(2 * 6, 8))
        self.vision = TinyResNet()
        self.head = nn.Linear(24, 3)

    def forward(self, pixels: Tensor, input_ids: Tensor) -> Tensor:
        return self.head(torch.cat([self.words(input_ids), self.chars(input_ids), self.vision(pixels)], 1))


def test_a_branch_beside_the_encoder_is_not_taken_for_its_next_stage() -> None:
    inputs = _resnet_bert_inputs()
    del inputs["attention_mask"]
    split = plan_split(SideBySide().eval(), inputs, None, {}, {})
    assert {e.name: e.path for e in split.encoders} == {"text_encoder": "words", "image_encoder": "vision"}


def test_doctor_shows_the_proposed_split_and_why(capsys: pytest.CaptureFixture[str]) -> None:
    report = diagnose(ResNetBert(), _resnet_bert_inputs())
    assert report.split == (  # in the order forward calls them
        "text_encoder = bert on 'input_ids', 'attention_mask' (text)",
        "image_encoder = resnet on 'pixels' (image)",
        "fusion_head = the rest of forward",
    )
    assert any(r.startswith("auto-split: text_encoder = ResNetBert.bert") for r in report.reasons)
    assert json.loads(json.dumps(report.to_dict()))["split"] == list(report.split)
    show_report(report)
    err = capsys.readouterr().err
    assert "Proposed split of ResNetBert" in err
    assert "text_encoder = bert on 'input_ids', 'attention_mask' (text)" in err
    assert "why" in err


def test_doctor_lists_glue_folded_into_an_encoder() -> None:
    report = diagnose(VisionSoundGru(), _vision_sound_inputs())
    assert "wave_encoder = sound on 'wave' (audio, folding unsqueeze)" in report.split
    assert any(r.startswith("wave_encoder: folded the computation") for r in report.reasons)


def test_doctor_cli_prints_the_split(capsys: pytest.CaptureFixture[str]) -> None:
    from mmedge.cli import main

    assert main(["doctor", "--model", "guarantees._models:CleanNet"]) == 0
    err = capsys.readouterr().err
    assert "Proposed split of CleanNet" in err
    assert "audio_encoder = audio_encoder on 'audio' (audio)" in err
    assert "why auto-split: text_encoder = CleanNet.text_encoder on input 'text'" in err
    assert main(["doctor", "--model", "guarantees._models:CleanNet", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["split"][-1] == "fusion_head = the rest of forward"


@pytest.mark.parametrize(
    ("name", "expected"),
    [("ResNetBertNet", {"text_encoder", "image_encoder"}), ("CaptionNet", {"image_encoder", "decoder.embedding"})],
)
def test_projections_after_a_real_encoder_stay_in_the_head(name: str, expected: set[str]) -> None:
    """ResNetBertNet's additive head projects each encoder's output (head.text_proj, head.image_proj);
    CaptionNet's decoder starts from the image features (decoder.init_h): no encoder reaches into them."""
    model = tiny_model(name).eval()
    split = plan_split(model, model.example_inputs(2), None, model.preprocess, {})
    assert {e.path for e in split.encoders} == expected


class ReturnsItsFeatures(ResNetBert):
    """Returns the towers' outputs as they are beside the logits, as a ``CLIPOutput`` returns its
    ``vision_model_output``: an encoder whose output is also a model output is still the encoder."""

    def forward(self, pixels: Tensor, input_ids: Tensor, attention_mask: Tensor) -> dict[str, Tensor]:
        image, tokens = self.resnet(pixels), self.bert(input_ids, attention_mask)
        return {"logits": self.classifier(torch.cat([image, tokens[:, 0]], 1)), "image": image, "tokens": tokens}


def test_encoder_outputs_returned_as_they_are_come_from_the_encoder(tmp_path: Path) -> None:
    model = ReturnsItsFeatures().eval()
    result = export_model(model, _resnet_bert_inputs(), out=tmp_path / "b")
    assert {e.name: e.path for e in result.encoders} == {"image_encoder": "resnet", "text_encoder": "bert"}
    outputs = {o.name: (o.component, o.tensor) for o in result.manifest.outputs}
    assert outputs["logits"] == ("fusion_head", "logits")
    assert outputs["image"][0] == "image_encoder"
    assert outputs["tokens"][0] == "text_encoder"
    assert [t.name for t in result.manifest.component("fusion_head").outputs] == ["logits"]
    check = _resnet_bert_inputs(3)
    with torch.no_grad():
        expected = model(**check)
    with Pipeline(result.path, "cpu", threads=1) as pipe:
        got = pipe.run({n: t.numpy() for n, t in check.items()})
    for name in ("logits", "image", "tokens"):
        np.testing.assert_allclose(got[name], expected[name].numpy(), atol=1e-5)


class OnlyTowers(ResNetBert):
    def forward(self, pixels: Tensor, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
        return self.resnet(pixels), self.bert(input_ids, attention_mask)


def test_a_model_returning_only_encoder_outputs_has_no_head_to_export(tmp_path: Path) -> None:
    from mmedge.errors import ExportError

    with pytest.raises(ExportError, match="nothing is left for a fusion head"):
        export_model(OnlyTowers().eval(), _resnet_bert_inputs(), out=tmp_path / "b")
    assert not (tmp_path / "b").exists()
