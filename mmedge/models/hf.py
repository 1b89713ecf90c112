"""Multimodal models built from Hugging Face ``transformers`` modules, shaped for the split export.

mmedge splits a model at the submodules its ``forward`` calls on raw inputs, so each model here
calls its encoders once, directly on its arguments:

* :class:`HFTextEncoder` turns any transformers text encoder into ``(input_ids, attention_mask)
  -> one vector per text`` ([CLS], pooler output, or the masked mean of a sentence embedder).
* :class:`BertResNetNet` is the design documents' ResNet-50 + BERT [CLS] classifier with
  additive fusion, the BERT being a ``transformers.BertModel``.
* :class:`CLIPDualEncoder` wraps a ``transformers.CLIPModel`` as text tower
  (``get_text_features``), image tower (``get_image_features``) and a similarity head
  (``logits_per_image``).
* :class:`SentenceEmbedder` is a text-only embedding model (mean pooling + L2 norm, as
  sentence-transformers' all-MiniLM models).

Nothing is downloaded: build the transformers modules from configs (random init) or load local
weights. ``transformers`` is imported only by :meth:`BertResNetNet.__init__`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from mmedge.bundle import ImagePreprocess
from mmedge.data import TEXTIMAGE_LABELS
from mmedge.models._blocks import example_image, generator, image_preprocess, resnet_encoder
from mmedge.models.resnet_bert import AdditiveFusionHead

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "POOLINGS",
    "BertResNetConfig",
    "BertResNetNet",
    "CLIPDualEncoder",
    "CLIPImageTower",
    "CLIPSimilarityHead",
    "CLIPTextTower",
    "HFTextEncoder",
    "SentenceEmbedder",
    "l2_normalize",
]

POOLINGS = ("cls", "pooler", "mean")
# The pixel statistics CLIP was trained with (OpenAI's preprocessing).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_RESNET_FEATURES = {18: 512, 50: 2048}


def l2_normalize(x: Tensor) -> Tensor:
    """``x / ||x||`` over the last axis, written as a sum of squares.

    Not ``Tensor.norm``: that exports as ONNX ReduceL2, which onnxruntime's symbolic shape
    inference (the first step of quantization) cannot handle at opset 18.
    """
    return x / (x * x).sum(dim=-1, keepdim=True).clamp(min=1e-24).sqrt()


class HFTextEncoder(nn.Module):
    """``(input_ids, attention_mask)`` [B, T] -> one vector per text [B, hidden].

    ``pooling``: "cls" takes the first position's last hidden state (BERT's [CLS]), "pooler" the
    model's ``pooler_output``, "mean" the mean over non-padding positions (sentence embedders).
    """

    def __init__(self, model: nn.Module, pooling: str = "cls") -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, found {pooling!r}")
        self.model = model
        self.pooling = pooling

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask)
        if self.pooling == "pooler":
            return out.pooler_output
        hidden = out.last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0]
        weights = attention_mask.to(hidden.dtype).unsqueeze(-1)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


@dataclass(frozen=True)
class BertResNetConfig:
    labels: tuple[str, ...] = TEXTIMAGE_LABELS  # class names, one logit each
    vocab_size: int = 30522  # BERT token embeddings; must cover the tokenizer's ids
    hidden: int = 768  # BERT width = text feature width
    layers: int = 4  # BERT layers
    heads: int = 12  # attention heads; must divide hidden
    intermediate: int = 3072  # BERT MLP width
    max_positions: int = 512  # position embeddings: the longest text the encoder accepts
    pad_id: int = 0  # the tokenizer's padding id ([PAD])
    image_depth: int = 50  # ResNet-18 or ResNet-50
    image_size: int = 64  # square image side the model is trained and exported at
    fusion_dim: int = 512  # width of the tanh(W_t t + W_i i) fusion


class BertResNetNet(nn.Module):
    """``forward(input_ids, attention_mask int64 [B, T], image float32 [B, 3, H, W]) -> logits [B, C]``.

    A ``transformers.BertModel`` (random init from ``config``) gives the [CLS] vector, a
    torchvision ResNet the image vector, and ``tanh(W_t t + W_i i) -> Linear`` the logits. Text
    preprocessing comes from the tokenizer given to ``export_model(tokenizer=...)``.
    """

    def __init__(self, config: BertResNetConfig | None = None) -> None:
        super().__init__()
        from transformers import BertConfig, BertModel

        self.config = config = config or BertResNetConfig()
        if config.image_depth not in _RESNET_FEATURES:
            raise ValueError(f"image_depth must be one of {sorted(_RESNET_FEATURES)}, found {config.image_depth}")
        bert = BertConfig(
            vocab_size=config.vocab_size,
            hidden_size=config.hidden,
            num_hidden_layers=config.layers,
            num_attention_heads=config.heads,
            intermediate_size=config.intermediate,
            max_position_embeddings=config.max_positions,
            pad_token_id=config.pad_id,
        )
        self.labels = config.labels
        self.preprocess: dict[str, ImagePreprocess] = {"image": image_preprocess(config.image_size)}
        self.text_encoder = HFTextEncoder(BertModel(bert, add_pooling_layer=False), pooling="cls")
        self.image_encoder = resnet_encoder(config.image_depth)
        features = _RESNET_FEATURES[config.image_depth]
        self.head = AdditiveFusionHead(config.hidden, features, config.fusion_dim, len(config.labels))

    def forward(self, input_ids: Tensor, attention_mask: Tensor, image: Tensor) -> Tensor:
        return self.head(self.text_encoder(input_ids, attention_mask), self.image_encoder(image))

    def example_inputs(self, batch: int = 1, length: int = 16) -> dict[str, Tensor]:
        """Reproducible random inputs keyed like ``forward``; rows after the first are padded."""
        gen = generator()
        ids = torch.randint(1, self.config.vocab_size, (batch, length), generator=gen)
        mask = torch.ones_like(ids)
        for row in range(1, batch):
            keep = int(torch.randint(1, length + 1, (1,), generator=gen))
            ids[row, keep:], mask[row, keep:] = self.config.pad_id, 0
        return {"input_ids": ids, "attention_mask": mask, "image": example_image(batch, self.config.image_size, gen)}


class CLIPTextTower(nn.Module):
    """``CLIPModel.get_text_features``: (input_ids, attention_mask) -> projected text features."""

    def __init__(self, clip: Any) -> None:
        super().__init__()
        self.text_model = clip.text_model
        self.projection = clip.text_projection

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.projection(self.text_model(input_ids=input_ids, attention_mask=attention_mask).pooler_output)


class CLIPImageTower(nn.Module):
    """``CLIPModel.get_image_features``: pixel_values -> projected image features."""

    def __init__(self, clip: Any) -> None:
        super().__init__()
        self.vision_model = clip.vision_model
        self.projection = clip.visual_projection

    def forward(self, pixel_values: Tensor) -> Tensor:
        return self.projection(self.vision_model(pixel_values=pixel_values).pooler_output)


class CLIPSimilarityHead(nn.Module):
    """(text [Bt, D], image [Bi, D]) -> cosine similarity * exp(logit_scale), [Bi, Bt] as CLIP's."""

    def __init__(self, logit_scale: nn.Parameter) -> None:
        super().__init__()
        self.logit_scale = logit_scale

    def forward(self, text_features: Tensor, image_features: Tensor) -> Tensor:
        return l2_normalize(image_features) @ l2_normalize(text_features).t() * self.logit_scale.exp()


class CLIPDualEncoder(nn.Module):
    """A ``transformers.CLIPModel`` as two towers and a similarity head.

    ``forward(input_ids, attention_mask, pixel_values) -> {"logits_per_image": [B_image, B_text]}``,
    equal to ``CLIPModel(...).logits_per_image``. The towers share the CLIP model's parameters.
    """

    def __init__(self, clip: Any) -> None:
        super().__init__()
        size = int(clip.config.vision_config.image_size)
        self.preprocess: dict[str, ImagePreprocess] = {
            "pixel_values": ImagePreprocess(size=(size, size), mean=CLIP_MEAN, std=CLIP_STD)
        }
        self.text_encoder = CLIPTextTower(clip)
        self.image_encoder = CLIPImageTower(clip)
        self.head = CLIPSimilarityHead(clip.logit_scale)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, pixel_values: Tensor) -> dict[str, Tensor]:
        logits = self.head(self.text_encoder(input_ids, attention_mask), self.image_encoder(pixel_values))
        return {"logits_per_image": logits}


class SentenceEmbedder(nn.Module):
    """``forward(input_ids, attention_mask) -> {"embedding": [B, hidden]}``: mean pooling, then L2 norm.

    The pooling and normalisation of sentence-transformers models such as all-MiniLM-L6-v2; the
    encoder is exported as ``text_encoder.onnx`` and the normalisation as the head.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.text_encoder = HFTextEncoder(model, pooling="mean")

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> dict[str, Tensor]:
        return {"embedding": l2_normalize(self.text_encoder(input_ids, attention_mask))}
