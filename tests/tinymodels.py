"""One tiny configuration per reference model, and the tiny modules, shared by every test area.

The modules (``MeanText``, ``LSTMText``, ``ConvImage``, ``ConvAudio``) and the models built from
them (``TriNet``, ``MaskedNet``, with ``tri_inputs``/``masked_inputs``) are imported by name:
``from tinymodels import TriNet`` (``pythonpath = ["tests"]``).

Tests build these in milliseconds and export them in seconds; a guard test in test_models.py
fails when a model is added to ``mmedge.models.REFERENCE_MODELS`` without an entry here.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mmedge.models import (
    REFERENCE_MODELS,
    CaptionConfig,
    ResNetBertConfig,
    TextImageConfig,
    TriModalConfig,
)

TINY_CONFIGS: dict[str, Any] = {
    "TextImageNet": TextImageConfig(image_size=32, embed_dim=8, text_hidden=16),
    "TriModalNet": TriModalConfig(
        image_size=32,
        embed_dim=8,
        text_hidden=16,
        audio_seconds=0.25,
        n_mels=16,
        audio_channels=(4, 8),
        audio_features=8,
    ),
    "CaptionNet": CaptionConfig(image_size=32, channels=(8, 16), grid=2, feature_dim=16, embed_dim=8, hidden=16),
    "ResNetBertNet": ResNetBertConfig(image_size=32, hidden=32, layers=2, heads=4, fusion_dim=16),
}


def tiny_model(name: str, **overrides: Any) -> Any:
    """A freshly initialised reference model ``name`` with its tiny config (fields overridable)."""
    return REFERENCE_MODELS[name](dataclasses.replace(TINY_CONFIGS[name], **overrides))


def quantize_on_synthetic(bundle: Path, out: Path, *, calibration: int, holdout: int, **kwargs: Any) -> Any:
    """``quantize_bundle`` of a reference model's bundle on its synthetic data (calibration seed 0,
    held-out seed 1 with its labels); ``kwargs`` go to ``quantize_bundle``."""
    from mmedge.bundle import load_bundle
    from mmedge.quantize import quantize_bundle, synthetic_calibration

    manifest = load_bundle(bundle).manifest
    held = synthetic_calibration(manifest, holdout, seed=1)
    return quantize_bundle(
        bundle,
        out,
        calibration=synthetic_calibration(manifest, calibration, seed=0),
        holdout=held,
        labels=held.labels,
        **kwargs,
    )


VOCAB = 20  # token ids of the tiny text modules


class MeanText(nn.Module):
    """ids [B, T] -> mean embedding [B, 8] (no recurrence: dynamo exports it)."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, 8)

    def forward(self, text: Tensor) -> Tensor:
        return self.embedding(text).mean(1)


class LSTMText(nn.Module):
    """ids [B, T] -> the LSTM's raw ``(out, (h, c))``: a nested tuple output."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, 8)
        self.lstm = nn.LSTM(8, 6, batch_first=True)

    def forward(self, text: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        return self.lstm(self.embedding(text))


class ConvImage(nn.Module):
    """image [B, 3, H, W] -> [B, 4]."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, image: Tensor) -> Tensor:
        return self.pool(torch.relu(self.conv(image))).flatten(1)


class ConvAudio(nn.Module):
    """waveform [B, samples] -> [B, features]: one strided conv, averaged over time."""

    def __init__(self, features: int = 8) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, features, 9, stride=4)

    def forward(self, audio: Tensor) -> Tensor:
        return torch.relu(self.conv(audio.unsqueeze(1))).mean(-1)


class TriNet(nn.Module):
    """Written the way DESIGN.md writes a model: encoders called on forward's raw arguments."""

    def __init__(self) -> None:
        super().__init__()
        self.text_encoder = MeanText()
        self.image_encoder = ConvImage()
        self.audio_encoder = ConvAudio(features=4)
        self.head = nn.Linear(16, 3)

    def forward(self, text: Tensor, image: Tensor, audio: Tensor) -> Tensor:
        t = self.text_encoder(text)
        i = self.image_encoder(image)
        a = self.audio_encoder(audio)
        return self.head(torch.cat([t, i, a], dim=1))


class MaskedNet(nn.Module):
    """LSTM tuple output, pooled in ``forward`` with a raw ``mask`` input the head must receive."""

    def __init__(self) -> None:
        super().__init__()
        self.text_encoder = LSTMText()
        self.image_encoder = ConvImage()
        self.head = nn.Linear(6 + 6 + 4, 3)

    def forward(self, text: Tensor, image: Tensor, mask: Tensor) -> dict[str, Tensor]:
        out, (h, _c) = self.text_encoder(text)
        pooled = (out * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1.0)
        features = torch.cat([pooled, h[-1], self.image_encoder(image)], dim=1)
        return {"logits": self.head(features), "embedding": features}


class Similarity(nn.Module):
    """Two encoders into one space and their cosine similarity matrix, as CLIPModel.forward."""

    def __init__(self) -> None:
        super().__init__()
        self.text_encoder = nn.Sequential(nn.Embedding(50, 16), nn.Flatten(), nn.Linear(16 * 6, 8))
        self.image_encoder = nn.Sequential(nn.Conv2d(3, 4, 4, 4), nn.Flatten(), nn.Linear(4 * 4 * 4, 8))

    def forward(self, text: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        t = nn.functional.normalize(self.text_encoder(text), dim=-1)
        i = nn.functional.normalize(self.image_encoder(image), dim=-1)
        return 10.0 * i @ t.T


def tri_inputs(batch: int = 2) -> dict[str, Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {
        "text": torch.randint(0, VOCAB, (batch, 7), generator=gen),
        "image": torch.randn(batch, 3, 12, 12, generator=gen),
        "audio": torch.randn(batch, 400, generator=gen),
    }


def masked_inputs(batch: int = 2) -> dict[str, Tensor]:
    gen = torch.Generator().manual_seed(0)
    mask = torch.ones(batch, 7)
    mask[1:, 5:] = 0.0
    return {
        "text": torch.randint(0, VOCAB, (batch, 7), generator=gen),
        "image": torch.randn(batch, 3, 12, 12, generator=gen),
        "mask": mask,
    }
