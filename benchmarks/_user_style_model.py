"""A multimodal model written as users write theirs, not as mmedge's reference models are.

Text: DistilBERT built from a config (4 layers, 384 wide, 8000 tokens) reading ``input_ids`` and an
``attention_mask``; image: torchvision's MobileNetV3-small at 224²; audio: torchaudio's
``MelSpectrogram`` and two convs on 1 s of 16 kHz audio; a concat + MLP head. ``forward`` takes four
keyword tensors and returns a dict. Random weights (no download), then ``train`` on ``synthetic``
data, where each modality carries the class (class tokens in the text, a class colour in the
image, a class tone in the audio), so held-out predictions are confident and INT8 agreement is
measured on a model that has learnt something, as users' models have. Used by ``user_style.py``.
"""

from __future__ import annotations

import json

import numpy as np
import torch
import torchaudio
import torchvision
from torch import nn
from transformers import DistilBertConfig, DistilBertModel

MODEL_CLASS = "ClipLike"
VOCAB, TOKENS, SAMPLE_RATE = 8000, 128, 16000


def inputs_toml(inputs: dict[str, dict[str, object]]) -> str:
    """export.toml's ``[inputs.NAME]`` tables (shape, dtype, bounds, modality) for ``mmedge export --config``."""
    return "".join(
        f"\n[inputs.{name}]\n" + "".join(f"{key} = {json.dumps(value)}\n" for key, value in fields.items())
        for name, fields in inputs.items()
    )


EXPORT_TOML = inputs_toml(
    {
        "input_ids": {"shape": [1, TOKENS], "dtype": "int64", "high": VOCAB, "modality": "text"},
        "attention_mask": {"shape": [1, TOKENS], "dtype": "int64", "high": 2, "modality": "text"},
        "pixel_values": {"shape": [1, 3, 224, 224], "modality": "image"},
        "waveform": {"shape": [1, SAMPLE_RATE], "modality": "audio"},
    }
)


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


N_CLASSES = 10


def synthetic(rng: np.random.Generator, n: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``n`` samples (batch-first arrays by input name) and their classes.

    Text: padded ids, a fifth of them from the class's block of the vocabulary; image: noise
    with a class colour added; audio: the class's tone in noise, at a random phase and loudness.
    """
    labels = rng.integers(0, N_CLASSES, n)
    lengths = rng.integers(20, TOKENS, n)
    ids = np.zeros((n, TOKENS), np.int64)
    block = (VOCAB - 1) // N_CLASSES
    colours = np.random.default_rng(1234).standard_normal((N_CLASSES, 3)).astype(np.float32)
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    images = rng.standard_normal((n, 3, 224, 224)).astype(np.float32)
    waves = 0.05 * rng.standard_normal((n, SAMPLE_RATE))
    for i, (c, length) in enumerate(zip(labels, lengths, strict=True)):
        ids[i, :length] = rng.integers(1, VOCAB, length)
        marks = rng.random(length) < 0.2
        ids[i, :length][marks] = 1 + c * block + rng.integers(0, block, int(marks.sum()))
        images[i] += colours[c][:, None, None]
        freq = 200.0 * 1.3**c
        waves[i] += rng.uniform(0.1, 0.5) * np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi))
    inputs = {
        "input_ids": ids,
        "attention_mask": (ids > 0).astype(np.int64),
        "pixel_values": images,
        "waveform": waves.astype(np.float32),
    }
    return inputs, labels


def train(model: ClipLike, steps: int, batch: int = 16, seed: int = 0) -> float:
    """AdamW on ``synthetic`` batches; the accuracy on 128 fresh samples."""
    rng = np.random.default_rng(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(steps):
        inputs, labels = synthetic(rng, batch)
        logits = model(**{k: torch.from_numpy(v) for k, v in inputs.items()})["logits"]
        loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(labels))
        opt.zero_grad()
        loss.backward()
        opt.step()
    # Batch-norm statistics anew from the trained weights (MobileNetV3's momentum 0.01 leaves them
    # near their start after a short run): their average over a few batches.
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    with torch.no_grad():
        for _ in range(8):
            model(**{k: torch.from_numpy(v) for k, v in synthetic(rng, batch)[0].items()})
    model.eval()
    inputs, labels = synthetic(np.random.default_rng(seed + 1), 128)
    with torch.no_grad():
        logits = model(**{k: torch.from_numpy(v) for k, v in inputs.items()})["logits"]
    return float((logits.argmax(-1).numpy() == labels).mean())
