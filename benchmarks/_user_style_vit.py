"""A second model in another's style: transformers throughout, from Hugging Face configs.

Text: BERT (4 layers, 256 wide) on 64 tokens with ``token_type_ids``, its pooler output; image: a
ViT (4 layers, 192 wide, 16² patches at 224²), its class token; audio: Wav2Vec2 (seven conv
feature layers, 2 transformer layers) on 1 s of 16 kHz audio, mean-pooled; a softmax-gated sum
of projections; ``forward`` returns a tuple (logits, gates), unnamed, so agreement is by cosine.
Random weights (no download, no training: ``train`` is None). Used by ``user_style.py --model
_user_style_vit``.
"""

from __future__ import annotations

import numpy as np
import torch
from _user_style_model import inputs_toml
from torch import nn
from transformers import BertConfig, BertModel, ViTConfig, ViTModel, Wav2Vec2Config, Wav2Vec2Model

MODEL_CLASS = "GatedTransformers"
VOCAB, TOKENS, SAMPLE_RATE = 3000, 64, 16000
train = None

EXPORT_TOML = inputs_toml(
    {
        "input_ids": {"shape": [1, TOKENS], "dtype": "int64", "high": VOCAB, "modality": "text"},
        "token_type_ids": {"shape": [1, TOKENS], "dtype": "int64", "high": 2, "modality": "text"},
        "pixel_values": {"shape": [1, 3, 224, 224], "modality": "image"},
        "input_values": {"shape": [1, SAMPLE_RATE], "modality": "audio"},
    }
)


class GatedTransformers(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        text = BertConfig(
            vocab_size=VOCAB, hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024
        )
        image = ViTConfig(
            hidden_size=192, num_hidden_layers=4, num_attention_heads=3, intermediate_size=768, patch_size=16
        )
        audio = Wav2Vec2Config(
            hidden_size=192, num_hidden_layers=2, num_attention_heads=3, intermediate_size=768, conv_dim=(128,) * 7
        )
        self.text = BertModel(text)
        self.vit = ViTModel(image, add_pooling_layer=False)
        self.w2v = Wav2Vec2Model(audio)
        self.gate = nn.Linear(256 + 192 + 192, 3)
        self.proj = nn.ModuleList([nn.Linear(256, 128), nn.Linear(192, 128), nn.Linear(192, 128)])
        self.cls = nn.Linear(128, 7)

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor,
        pixel_values: torch.Tensor,
        input_values: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        t = self.text(input_ids=input_ids, token_type_ids=token_type_ids).pooler_output
        v = self.vit(pixel_values=pixel_values).last_hidden_state[:, 0]
        a = self.w2v(input_values).last_hidden_state.mean(1)
        g = torch.softmax(self.gate(torch.cat([t, v, a], -1)), -1)
        h = sum(g[:, i : i + 1] * p(x) for i, (p, x) in enumerate(zip(self.proj, (t, v, a), strict=True)))
        return self.cls(h), g


def synthetic(rng: np.random.Generator, n: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``n`` samples: two segments of random tokens, images of noise, noisy tones; no classes."""
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    tones = np.sin(2 * np.pi * rng.uniform(100, 2000, (n, 1)) * t) * rng.uniform(0.1, 0.5, (n, 1))
    inputs = {
        "input_ids": rng.integers(1, VOCAB, (n, TOKENS)),
        "token_type_ids": np.repeat((np.arange(TOKENS) >= TOKENS // 2)[None].astype(np.int64), n, 0),
        "pixel_values": rng.standard_normal((n, 3, 224, 224)).astype(np.float32),
        "input_values": (tones + 0.05 * rng.standard_normal((n, SAMPLE_RATE))).astype(np.float32),
    }
    return inputs, np.full(n, -1)
