"""Tiny multimodal models for the export tests: a few layers each, exported in seconds."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from tinymodels import VOCAB, MeanText
from torch import Tensor, nn


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
    """waveform [B, samples] -> [B, 4]."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 4, 9, stride=4)

    def forward(self, audio: Tensor) -> Tensor:
        return torch.relu(self.conv(audio.unsqueeze(1))).mean(-1)


class TriNet(nn.Module):
    """Written the way DESIGN.md writes a model: encoders called on forward's raw arguments."""

    def __init__(self) -> None:
        super().__init__()
        self.text_encoder = MeanText()
        self.image_encoder = ConvImage()
        self.audio_encoder = ConvAudio()
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


@pytest.fixture(scope="session")
def tiny() -> SimpleNamespace:
    """The tiny modules and example-input builders above, for tests to combine."""
    return SimpleNamespace(
        VOCAB=VOCAB,
        MeanText=MeanText,
        LSTMText=LSTMText,
        ConvImage=ConvImage,
        ConvAudio=ConvAudio,
        TriNet=TriNet,
        MaskedNet=MaskedNet,
        tri_inputs=tri_inputs,
        masked_inputs=masked_inputs,
    )
