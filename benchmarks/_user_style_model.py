"""A multimodal model written as users write theirs, not as mmedge's reference models are.

Text: DistilBERT built from a config (4 layers, 384 wide, 8000 tokens) reading ``input_ids`` and an
``attention_mask``; image: torchvision's MobileNetV3-small at 224²; audio: torchaudio's
``MelSpectrogram`` and two convs on 1 s of 16 kHz audio; a concat + MLP head. ``forward`` takes four
keyword tensors and returns a dict. Random weights (no download). Used by ``user_style.py``.
"""

from __future__ import annotations

import torch
import torchaudio
import torchvision
from torch import nn
from transformers import DistilBertConfig, DistilBertModel

VOCAB, TOKENS, SAMPLE_RATE = 8000, 128, 16000

EXPORT_TOML = f"""
[inputs.input_ids]
shape = [1, {TOKENS}]
dtype = "int64"
high = {VOCAB}
modality = "text"

[inputs.attention_mask]
shape = [1, {TOKENS}]
dtype = "int64"
high = 2
modality = "text"

[inputs.pixel_values]
shape = [1, 3, 224, 224]
modality = "image"

[inputs.waveform]
shape = [1, {SAMPLE_RATE}]
modality = "audio"
"""


class AudioTower(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mel = torchaudio.transforms.MelSpectrogram(sample_rate=SAMPLE_RATE, n_fft=400, hop_length=160, n_mels=64)
        self.net = nn.Sequential(
            nn.Conv2d(1, 32, 3, 2, 1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, 2, 1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        return self.net(torch.log(self.mel(wav) + 1e-6).unsqueeze(1))


class ClipLike(nn.Module):
    def __init__(self, n_classes: int = 10) -> None:
        super().__init__()
        config = DistilBertConfig(vocab_size=VOCAB, dim=384, n_layers=4, n_heads=6, hidden_dim=1536)
        self.bert = DistilBertModel(config)
        self.vision = torchvision.models.mobilenet_v3_small(num_classes=256)
        self.audio = AudioTower()
        self.proj = nn.Linear(384 + 256 + 64, 256)
        self.cls = nn.Linear(256, n_classes)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, pixel_values: torch.Tensor, waveform: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        t = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state[:, 0]
        h = torch.cat([t, self.vision(pixel_values), self.audio(waveform)], dim=-1)
        return {"logits": self.cls(torch.relu(self.proj(h)))}
