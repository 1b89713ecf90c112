"""ResNetBertNet: ResNet-50 image encoder + a small BERT-style text transformer, additive fusion.

The transformer is written out in plain torch (no ``nn.TransformerEncoder``, whose fused fast
path exports and quantizes differently from the module code): token + position embeddings,
pre-LayerNorm blocks of multi-head self-attention with a key padding mask and a GELU MLP, and a
final LayerNorm. The text feature is the vector at position 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from mmedge.bundle import ImagePreprocess, TextPreprocess
from mmedge.data import PAD_ID, TEXTIMAGE_LABELS, VOCAB
from mmedge.models._blocks import (
    example_image,
    example_text,
    generator,
    image_preprocess,
    resnet_encoder,
    text_preprocess,
)

__all__ = ["AdditiveFusionHead", "ResNetBertConfig", "ResNetBertNet", "TextTransformer"]

RESNET50_FEATURES = 2048
# Added to the attention scores of padding keys. Finite (so an all-padding row stays finite) and
# representable in fp16, like the original BERT's -10000.
MASK_BIAS = -1e4


@dataclass(frozen=True)
class ResNetBertConfig:
    vocab: tuple[str, ...] = VOCAB  # id -> token; id 0 is <pad> (masked out of attention), 1 is <unk>
    labels: tuple[str, ...] = TEXTIMAGE_LABELS  # class names, one logit each
    max_text_length: int = 16  # tokens the runtime pads/crops text to
    max_positions: int = 64  # position embeddings: the longest text the encoder accepts
    hidden: int = 768  # transformer width = text feature width
    layers: int = 4  # transformer blocks
    heads: int = 12  # attention heads; must divide hidden
    mlp_ratio: int = 4  # MLP width = mlp_ratio * hidden
    dropout: float = 0.1  # on embeddings, attention probabilities and residual branches
    fusion_dim: int = 512  # width of the tanh(W_t t + W_i i) fusion
    image_size: int = 64  # square image side the model is trained and exported at


class SelfAttention(nn.Module):
    """Multi-head scaled dot-product self-attention with an additive key bias."""

    def __init__(self, hidden: int, heads: int, dropout: float) -> None:
        super().__init__()
        if hidden % heads:
            raise ValueError(f"heads ({heads}) must divide hidden ({hidden})")
        self.heads, self.head_dim = heads, hidden // heads
        self.query, self.key, self.value = (nn.Linear(hidden, hidden) for _ in range(3))
        self.out = nn.Linear(hidden, hidden)
        self.dropout = nn.Dropout(dropout)

    def _split(self, x: Tensor) -> Tensor:  # [B, T, hidden] -> [B, heads, T, head_dim]
        return x.reshape(x.shape[0], x.shape[1], self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x: Tensor, key_bias: Tensor) -> Tensor:
        q, k, v = self._split(self.query(x)), self._split(self.key(x)), self._split(self.value(x))
        scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(self.head_dim) + key_bias
        context = torch.matmul(self.dropout(torch.softmax(scores, dim=-1)), v)
        return self.out(context.transpose(1, 2).reshape(x.shape))


class Block(nn.Module):
    """Pre-LN transformer block: x + attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, hidden: int, heads: int, mlp_ratio: int, dropout: float) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(hidden)
        self.attn = SelfAttention(hidden, heads, dropout)
        self.ln2 = nn.LayerNorm(hidden)
        self.mlp = nn.Sequential(
            nn.Linear(hidden, mlp_ratio * hidden), nn.GELU(), nn.Linear(mlp_ratio * hidden, hidden)
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, key_bias: Tensor) -> Tensor:
        x = x + self.dropout(self.attn(self.ln1(x), key_bias))
        return x + self.dropout(self.mlp(self.ln2(x)))


class TextTransformer(nn.Module):
    """Token ids [B, T] (T <= max_positions, 0 = padding) -> the position-0 vector [B, hidden]."""

    def __init__(self, config: ResNetBertConfig) -> None:
        super().__init__()
        self.tokens = nn.Embedding(len(config.vocab), config.hidden, padding_idx=PAD_ID)
        self.positions = nn.Embedding(config.max_positions, config.hidden)
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            Block(config.hidden, config.heads, config.mlp_ratio, config.dropout) for _ in range(config.layers)
        )
        self.ln_f = nn.LayerNorm(config.hidden)

    def forward(self, text: Tensor) -> Tensor:
        positions = torch.arange(text.shape[1], device=text.device)
        x = self.dropout(self.tokens(text) + self.positions(positions))
        key_bias = (text == PAD_ID).to(x.dtype)[:, None, None, :] * MASK_BIAS  # [B, 1, 1, T]
        for block in self.blocks:
            x = block(x, key_bias)
        return self.ln_f(x[:, 0])


class AdditiveFusionHead(nn.Module):
    """(text [B, Dt], image [B, Di]) -> tanh(W_t t + W_i i) -> Linear -> logits."""

    def __init__(self, text_dim: int, image_dim: int, fusion_dim: int, num_classes: int) -> None:
        super().__init__()
        self.text_proj = nn.Linear(text_dim, fusion_dim)
        self.image_proj = nn.Linear(image_dim, fusion_dim, bias=False)
        self.classifier = nn.Linear(fusion_dim, num_classes)

    def forward(self, text: Tensor, image: Tensor) -> Tensor:
        return self.classifier(torch.tanh(self.text_proj(text) + self.image_proj(image)))


class ResNetBertNet(nn.Module):
    """Classify (text, image): ``forward(text int64 [B, T], image float32 [B, 3, H, W]) -> logits [B, C]``."""

    def __init__(self, config: ResNetBertConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or ResNetBertConfig()
        self.vocab = config.vocab
        self.labels = config.labels
        self.preprocess: dict[str, TextPreprocess | ImagePreprocess] = {
            "text": text_preprocess(config.max_text_length),
            "image": image_preprocess(config.image_size),
        }
        self.text_encoder = TextTransformer(config)
        self.image_encoder = resnet_encoder(50)
        self.head = AdditiveFusionHead(config.hidden, RESNET50_FEATURES, config.fusion_dim, len(config.labels))

    def forward(self, text: Tensor, image: Tensor) -> Tensor:
        return self.head(self.text_encoder(text), self.image_encoder(image))

    def example_inputs(self, batch: int = 1) -> dict[str, Tensor]:
        """Reproducible random inputs of the trained shapes, keyed like ``forward``'s arguments."""
        gen = generator()
        return {
            "text": example_text(batch, self.config.max_text_length, len(self.vocab), gen),
            "image": example_image(batch, self.config.image_size, gen),
        }
