"""Building blocks shared by the reference models: encoders, the concat head, example inputs."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mmedge.bundle import AudioPreprocess, ImagePreprocess, TextPreprocess
from mmedge.data import IMAGENET_MEAN, IMAGENET_STD, PAD_ID, UNK_ID

EXAMPLE_SEED = 0  # example inputs are reproducible, so export verification is too


def resnet_encoder(depth: int) -> nn.Module:
    """A randomly initialised torchvision ResNet-18/50 whose ``fc`` is Identity: image -> [B, 512|2048]."""
    from torchvision.models import resnet18, resnet50

    builders = {18: resnet18, 50: resnet50}
    if depth not in builders:
        raise ValueError(f"ResNet depth must be one of {sorted(builders)}, got {depth}")
    net = builders[depth](weights=None)
    net.fc = nn.Identity()
    return net


class LSTMTextEncoder(nn.Module):
    """Token ids [B, T] -> the last LSTM layer's final hidden state [B, hidden], for any T."""

    def __init__(self, vocab_size: int, embed_dim: int, hidden_size: int, num_layers: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD_ID)
        self.lstm = nn.LSTM(embed_dim, hidden_size, num_layers=num_layers, batch_first=True)

    def forward(self, text: Tensor) -> Tensor:
        _, (h_n, _) = self.lstm(self.embedding(text))
        return h_n[-1]


class ConcatHead(nn.Module):
    """Encoder features -> concatenation -> Linear -> logits [B, num_classes]."""

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.classifier = nn.Linear(in_features, num_classes)

    def forward(self, *features: Tensor) -> Tensor:
        return self.classifier(torch.cat(features, dim=1))


def text_preprocess(max_length: int) -> TextPreprocess:
    """Whitespace/vocabulary tokenization as in ``mmedge.data``; the exporter writes the vocab file."""
    return TextPreprocess(max_length=max_length, pad_id=PAD_ID, unk_id=UNK_ID, lowercase=True)


def image_preprocess(size: int) -> ImagePreprocess:
    """uint8 RGB -> [0, 1] -> ImageNet mean/std, the normalisation ``mmedge.data`` trains with."""
    return ImagePreprocess(size=(size, size), mean=IMAGENET_MEAN, std=IMAGENET_STD, scale=1.0 / 255.0)


def audio_preprocess(sample_rate: int, seconds: float) -> AudioPreprocess:
    return AudioPreprocess(sample_rate=sample_rate, max_seconds=seconds, mono=True)


def generator() -> torch.Generator:
    return torch.Generator().manual_seed(EXAMPLE_SEED)


def example_text(batch: int, length: int, vocab_size: int, gen: torch.Generator) -> Tensor:
    """int64 [batch, length] of word ids; rows after the first end in some padding, as real text does."""
    ids = torch.randint(4, vocab_size, (batch, length), generator=gen)
    for row in range(1, batch):
        keep = int(torch.randint(1, length + 1, (1,), generator=gen))
        ids[row, keep:] = PAD_ID
    return ids


def example_image(batch: int, size: int, gen: torch.Generator) -> Tensor:
    return torch.randn(batch, 3, size, size, generator=gen)


def example_audio(batch: int, samples: int, gen: torch.Generator) -> Tensor:
    return 0.1 * torch.randn(batch, samples, generator=gen)
