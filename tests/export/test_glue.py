"""Glue folding: what ``forward`` computes from one modality's raw inputs before an encoder is exported in it.

Each model here calls an encoder the way real code does (``audio.unsqueeze(1)``, ``img.float() / 255``
then ``(x - mean) / std`` with buffers, ``permute``, ``flatten(1)``, a dict of inputs); each must
export, say in the manifest what was folded, and run in ``mmedge.runtime.Pipeline`` like PyTorch.
Computation mixing two modalities before an encoder is refused with the restructuring advice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from tinymodels import VOCAB, ConvImage, MeanText
from torch import Tensor, nn

from mmedge.errors import ExportError
from mmedge.export import export_model
from mmedge.runtime import Pipeline

ATOL = 1e-4


class Conv1dAudio(nn.Module):
    """[B, 1, samples] -> [B, 8]: wants a channel axis the raw waveform lacks."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 8, 9, stride=4)

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.conv(x)).mean(-1)


class AudioUnsqueeze(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.text_encoder, self.audio_encoder, self.head = MeanText(), Conv1dAudio(), nn.Linear(16, 3)

    def forward(self, text: Tensor, audio: Tensor) -> Tensor:
        return self.head(torch.cat([self.text_encoder(text), self.audio_encoder(audio.unsqueeze(1))], 1))


class Uint8Normalised(nn.Module):
    """uint8 pixels scaled and normalised in forward with registered buffers."""

    def __init__(self) -> None:
        super().__init__()
        self.text_encoder, self.image, self.head = MeanText(), ConvImage(), nn.Linear(12, 3)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, text: Tensor, img: Tensor) -> Tensor:
        x = img.float() / 255
        return self.head(torch.cat([self.text_encoder(text), self.image((x - self.mean) / self.std)], 1))


class ChannelsLast(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.vision, self.head = ConvImage(), nn.Linear(4, 2)

    def forward(self, photo: Tensor) -> Tensor:
        return self.head(self.vision(photo.permute(0, 3, 1, 2)))


class Flattened(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.text_encoder = MeanText()
        self.image_mlp = nn.Sequential(nn.Linear(3 * 6 * 6, 16), nn.ReLU(), nn.Linear(16, 4))
        self.head = nn.Linear(12, 2)

    def forward(self, text: Tensor, image: Tensor) -> Tensor:
        return self.head(torch.cat([self.text_encoder(text), self.image_mlp(image.flatten(1))], 1))


class DictText(nn.Module):
    """Takes {"ids", "mask"}; forward packs the dict (and slices the ids) before calling it."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, 8)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        mask = batch["mask"].unsqueeze(-1)
        return (self.embedding(batch["ids"]) * mask).sum(1) / mask.sum(1).clamp(min=1.0)


class DictInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.text, self.image_encoder, self.head = DictText(), ConvImage(), nn.Linear(12, 2)

    def forward(self, ids: Tensor, attention_mask: Tensor, image: Tensor) -> Tensor:
        t = self.text({"ids": ids[:, :6], "mask": attention_mask[:, :6].float()})
        return self.head(torch.cat([t, self.image_encoder(image)], 1))


class Towers(nn.Module):
    """Both encoders inside one container whose forward does the image's glue."""

    def __init__(self) -> None:
        super().__init__()
        self.text, self.image = MeanText(), ConvImage()

    def forward(self, text: Tensor, img: Tensor) -> tuple[Tensor, Tensor]:
        return self.text(text), self.image(img / 255)


class NestedCall(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.towers, self.head = Towers(), nn.Linear(12, 2)

    def forward(self, text: Tensor, img: Tensor) -> Tensor:
        return self.head(torch.cat(self.towers(text, img), 1))


class DictOfEncoders(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoders = nn.ModuleDict({"text": MeanText(), "image": ConvImage()})
        self.head = nn.Linear(12, 2)

    def forward(self, text: Tensor, img: Tensor) -> Tensor:
        return self.head(torch.cat([self.encoders["text"](text), self.encoders["image"](img[:, :, 1:-1, 1:-1])], 1))


def _text(batch: int = 2, seq: int = 7) -> Tensor:
    return torch.randint(0, VOCAB, (batch, seq), generator=torch.Generator().manual_seed(seq))


@dataclass(frozen=True)
class Glue:
    model: type[nn.Module]
    inputs: Callable[[int], dict[str, Tensor]]  # batch size -> example inputs
    encoders: dict[str, str]
    component: str  # the encoder the glue is folded into
    folded: tuple[str, ...]


CASES = [
    pytest.param(
        Glue(
            AudioUnsqueeze,
            lambda b: {"text": _text(b), "audio": torch.randn(b, 400)},
            {"text": "text_encoder", "audio": "audio_encoder"},
            "audio_encoder",
            ("unsqueeze",),
        ),
        id="audio-unsqueeze",
    ),
    pytest.param(
        Glue(
            Uint8Normalised,
            lambda b: {"text": _text(b), "img": torch.randint(0, 256, (b, 3, 12, 12), dtype=torch.uint8)},
            {"text": "text_encoder", "image": "image"},
            "image_encoder",
            ("float", "div", "sub"),
        ),
        id="uint8-normalise-buffers",
    ),
    pytest.param(
        Glue(
            ChannelsLast,
            lambda b: {"photo": torch.randn(b, 12, 12, 3)},
            {"image": "vision"},
            "image_encoder",
            ("permute",),
        ),
        id="permute",
    ),
    pytest.param(
        Glue(
            Flattened,
            lambda b: {"text": _text(b), "image": torch.randn(b, 3, 6, 6)},
            {"text": "text_encoder", "image": "image_mlp"},
            "image_encoder",
            ("flatten",),
        ),
        id="flatten",
    ),
    pytest.param(
        Glue(
            DictInputs,
            lambda b: {
                "ids": _text(b, 9),
                "attention_mask": (torch.arange(9) < 7).long().expand(b, 9).contiguous(),
                "image": torch.randn(b, 3, 12, 12),
            },
            {"text": "text", "image": "image_encoder"},
            "text_encoder",
            ("slice", "float", "pack dict"),
        ),
        id="dict-packing-and-slicing",
    ),
    pytest.param(
        Glue(
            NestedCall,
            lambda b: {"text": _text(b), "img": torch.rand(b, 3, 12, 12) * 255},
            {"text": "towers.text", "image": "towers.image"},
            "image_encoder",
            ("div",),
        ),
        id="encoder-called-inside-a-container",
    ),
    pytest.param(
        Glue(
            DictOfEncoders,
            lambda b: {"text": _text(b), "img": torch.randn(b, 3, 12, 12)},
            {"text": "encoders.text", "image": "encoders.image"},
            "image_encoder",
            ("slice",),
        ),
        id="encoder-in-a-module-dict",
    ),
]


@pytest.mark.parametrize("case", CASES)
def test_glue_is_folded_into_its_encoder(tmp_path: Path, case: Glue) -> None:
    model = case.model().eval()
    result = export_model(model, case.inputs(2), case.encoders, out=tmp_path / "b")
    manifest = result.manifest
    spec = next(e for e in result.encoders if e.name == case.component)
    assert spec.folded == case.folded
    assert manifest.component(case.component).folded == case.folded
    assert {t.name for t in manifest.component(case.component).inputs} == set(spec.inputs)  # raw model inputs
    assert all(not c.folded for c in manifest.components if c.name != case.component)
    assert any(w.startswith(f"{case.component}: folded the computation") for w in result.warnings)
    assert not [w for w in result.warnings if "exporter failed" in w]  # torch.export traced the glue
    # The fusion head gets features, not the raw input the glue consumed.
    assert not set(spec.inputs) & {t.name for t in manifest.component("fusion_head").inputs}
    check = case.inputs(3)  # another batch size than the export's
    with torch.no_grad():
        expected = model(**check).numpy()
    with Pipeline(result.path, "cpu", threads=1) as pipe:
        got = pipe.run({n: t.numpy() for n, t in check.items()})
    np.testing.assert_allclose(next(iter(got.values())), expected, atol=ATOL, rtol=1e-3)


def test_auto_split_folds_glue_too(tmp_path: Path) -> None:
    result = export_model(AudioUnsqueeze().eval(), {"text": _text(), "audio": torch.randn(2, 400)}, out=tmp_path / "b")
    assert [(e.name, e.path, e.folded) for e in result.encoders] == [
        ("text_encoder", "text_encoder", ()),
        ("audio_encoder", "audio_encoder", ("unsqueeze",)),
    ]


def test_glue_mixing_modalities_is_refused() -> None:
    class Cross(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.enc, self.image_encoder, self.head = nn.Linear(8, 4), ConvImage(), nn.Linear(8, 2)

        def forward(self, text_emb: Tensor, img: Tensor) -> Tensor:
            return self.head(torch.cat([self.enc(text_emb + img.mean()), self.image_encoder(img)], 1))

    inputs = {"text_emb": torch.randn(2, 8), "img": torch.randn(2, 3, 12, 12)}
    with pytest.raises(ExportError) as err:
        export_model(Cross(), inputs, {"text": "enc", "image": "image_encoder"}, out="unused")
    message = str(err.value)
    assert "submodule 'enc' receives a tensor computed inside Cross.forward" in message
    assert "more than one modality (text_emb: text, img: image)" in message
    assert "Restructure the model" in message


def test_folded_encoder_quantizes_and_runs(tmp_path: Path) -> None:
    from mmedge.quantize import quantize_bundle

    model = AudioUnsqueeze().eval()
    gen = torch.Generator().manual_seed(1)
    result = export_model(model, {"text": _text(), "audio": torch.randn(2, 400)}, out=tmp_path / "fp32")
    samples = [
        {
            "text": np.random.default_rng(i).integers(0, VOCAB, (2, 7)),
            "audio": torch.randn(2, 400, generator=gen).numpy(),
        }
        for i in range(12)
    ]
    report = quantize_bundle(result.path, tmp_path / "int8", calibration=samples, speed_check=False, min_agreement=0.0)
    assert {c.name for c in report.components} >= {"audio_encoder", "fusion_head"}
    check = {"text": _text(3, 5), "audio": torch.randn(3, 640, generator=gen)}  # other batch and length
    with torch.no_grad():
        expected = model(**check).numpy()
    with Pipeline(tmp_path / "int8", "cpu", threads=1) as pipe:
        audio = pipe.manifest.component("audio_encoder")
        assert audio.folded == ("unsqueeze",)
        assert [(t.name, t.shape) for t in audio.inputs] == [("audio", ("batch", "samples"))]
        got = pipe.run({n: t.numpy() for n, t in check.items()})["logits"]
    assert got.shape == expected.shape
    # INT8 error of an untrained tiny model: loose, but far below the logits' own spread.
    assert np.abs(got - expected).max() < 0.25


def test_a_raw_input_folded_and_also_used_by_the_head_feeds_both(tmp_path: Path) -> None:
    class Pooled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.text_encoder, self.head = nn.Embedding(VOCAB, 8), nn.Linear(8, 2)

        def forward(self, ids: Tensor, mask: Tensor) -> Tensor:
            tokens = self.text_encoder(ids * mask)  # glue: padding ids zeroed
            weights = mask.float().unsqueeze(-1)
            return self.head((tokens * weights).sum(1) / weights.sum(1))

    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, 5:] = 0
    model = Pooled().eval()
    result = export_model(model, {"ids": _text(), "mask": mask}, {"text": "text_encoder"}, out=tmp_path / "b")
    m = result.manifest
    assert m.component("text_encoder").folded == ("mul",)
    assert [t.name for t in m.component("text_encoder").inputs] == ["ids", "mask"]
    assert "mask" in {t.name for t in m.component("fusion_head").inputs}
    assert "ids" not in {t.name for t in m.component("fusion_head").inputs}
