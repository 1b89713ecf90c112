"""One tiny configuration per reference model, and the tiny modules, shared by every test area.

Tests build these in milliseconds and export them in seconds; a guard test in test_models.py
fails when a model is added to ``mmedge.models.REFERENCE_MODELS`` without an entry here.
"""

from __future__ import annotations

import dataclasses
from typing import Any

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


VOCAB = 20  # token ids of the tiny text modules


class MeanText(nn.Module):
    """ids [B, T] -> mean embedding [B, 8] (no recurrence: dynamo exports it)."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, 8)

    def forward(self, text: Tensor) -> Tensor:
        return self.embedding(text).mean(1)
