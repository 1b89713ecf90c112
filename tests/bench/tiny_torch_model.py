"""A PyTorch twin of the tiny bundle (same inputs and encoder names) for the PyTorch variant tests.

The benchmark's PyTorch worker imports it as ``tiny_torch_model:TinyTorch`` with this folder on
PYTHONPATH; weights are random (latency does not depend on them).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class _Pool(nn.Module):
    def __init__(self, conv: nn.Module) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.conv(x)).flatten(2).mean(2)


class TinyTorch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.text_encoder = nn.EmbeddingBag(8, 4)
        self.image_encoder = _Pool(nn.Conv2d(3, 4, 3, padding=1))
        self.audio_encoder = _Pool(nn.Conv1d(1, 4, 5, stride=2))
        self.head = nn.Linear(12, 3)

    def forward(self, text: Tensor, image: Tensor, audio: Tensor) -> Tensor:
        features = (self.text_encoder(text), self.image_encoder(image), self.audio_encoder(audio.unsqueeze(1)))
        return self.head(torch.cat(features, dim=1))
