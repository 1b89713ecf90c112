"""TextImageNet: LSTM text encoder + ResNet-18 image encoder + concat/linear fusion head."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from mmedge.bundle import ImagePreprocess, TextPreprocess
from mmedge.data import TEXTIMAGE_LABELS, VOCAB
from mmedge.models._blocks import (
    ConcatHead,
    LSTMTextEncoder,
    example_image,
    example_text,
    generator,
    image_preprocess,
    resnet_encoder,
    text_preprocess,
)

__all__ = ["TextImageConfig", "TextImageNet"]

RESNET18_FEATURES = 512


@dataclass(frozen=True)
class TextImageConfig:
    vocab: tuple[str, ...] = VOCAB  # id -> token; id 0 is <pad>, 1 is <unk>
    labels: tuple[str, ...] = TEXTIMAGE_LABELS  # class names, one logit each
    max_text_length: int = 16  # tokens the runtime pads/crops text to (the LSTM itself takes any length)
    embed_dim: int = 64  # token embedding width
    text_hidden: int = 128  # LSTM hidden size = text feature width
    text_layers: int = 1  # stacked LSTM layers
    image_size: int = 64  # square image side the model is trained and exported at


class TextImageNet(nn.Module):
    """Classify a (text, image) pair: ``forward(text int64 [B, T], image float32 [B, 3, H, W]) -> logits [B, C]``."""

    def __init__(self, config: TextImageConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or TextImageConfig()
        self.vocab = config.vocab
        self.labels = config.labels
        self.preprocess: dict[str, TextPreprocess | ImagePreprocess] = {
            "text": text_preprocess(config.max_text_length),
            "image": image_preprocess(config.image_size),
        }
        self.text_encoder = LSTMTextEncoder(len(config.vocab), config.embed_dim, config.text_hidden, config.text_layers)
        self.image_encoder = resnet_encoder(18)
        self.head = ConcatHead(config.text_hidden + RESNET18_FEATURES, len(config.labels))

    def forward(self, text: Tensor, image: Tensor) -> Tensor:
        return self.head(self.text_encoder(text), self.image_encoder(image))

    def example_inputs(self, batch: int = 1) -> dict[str, Tensor]:
        """Reproducible random inputs of the trained shapes, keyed like ``forward``'s arguments."""
        gen = generator()
        return {
            "text": example_text(batch, self.config.max_text_length, len(self.vocab), gen),
            "image": example_image(batch, self.config.image_size, gen),
        }
