"""A tiny three-input model with a log-power spectral front-end, for the peer tests.

Its audio encoder is a spectrogram the way reference models compute one (a strided conv as the
DFT, a squaring, a mel matrix held in a non-persistent buffer, a log), so the keep-front-end
peers have nodes to keep FP32 and ExecuTorch's buffer handling is exercised. Worker processes
import it as ``tiny_peer_model:PeerNet`` with this folder and ``tests/`` on PYTHONPATH.
"""

from __future__ import annotations

import torch
from tinymodels import VOCAB, MeanText
from torch import Tensor, nn

SAMPLES = 400


class ConvImage(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, image: Tensor) -> Tensor:
        return torch.relu(self.conv(image)).mean((2, 3))


class LogMelAudio(nn.Module):
    """waveform [B, samples] -> strided conv (DFT) -> power -> mel -> log -> conv -> mean."""

    def __init__(self) -> None:
        super().__init__()
        self.dft = nn.Conv1d(1, 16, 32, stride=16, bias=False)
        self.register_buffer("mel", torch.rand(16, 8, generator=torch.Generator().manual_seed(1)), persistent=False)
        self.conv = nn.Conv1d(8, 8, 3, padding=1)

    def forward(self, audio: Tensor) -> Tensor:
        spec = self.dft(audio.unsqueeze(1))
        power = spec * spec
        mel = torch.matmul(power.transpose(1, 2), self.mel)
        log_mel = torch.log(mel + 1e-6).transpose(1, 2)
        return torch.relu(self.conv(log_mel)).mean(2)


class PeerNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.text_encoder = MeanText()
        self.image_encoder = ConvImage()
        self.audio_encoder = LogMelAudio()
        self.head = nn.Linear(24, 5)

    def forward(self, text: Tensor, image: Tensor, audio: Tensor) -> Tensor:
        return self.head(torch.cat([self.text_encoder(text), self.image_encoder(image), self.audio_encoder(audio)], 1))

    def example_inputs(self, batch: int = 2) -> dict[str, Tensor]:
        gen = torch.Generator().manual_seed(0)
        return {
            "text": torch.randint(0, VOCAB, (batch, 6), generator=gen),
            "image": torch.randn(batch, 3, 12, 12, generator=gen),
            "audio": torch.randn(batch, SAMPLES, generator=gen),
        }
