"""TriModalNet: text (LSTM) + image (ResNet-18) + audio (log-mel CNN) encoders + concat/linear head."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from mmedge.bundle import AudioPreprocess, ImagePreprocess, TextPreprocess
from mmedge.data import TRIMODAL_LABELS, VOCAB
from mmedge.export.mel import MelFrontend
from mmedge.models._blocks import (
    ConcatHead,
    LSTMTextEncoder,
    audio_preprocess,
    example_audio,
    example_image,
    example_text,
    generator,
    image_preprocess,
    resnet_encoder,
    text_preprocess,
)
from mmedge.models.textimage import RESNET18_FEATURES

__all__ = ["AudioEncoder", "TriModalConfig", "TriModalNet"]

LOG_FLOOR = 1e-6  # log(mel + LOG_FLOOR): finite for digital silence


@dataclass(frozen=True)
class TriModalConfig:
    vocab: tuple[str, ...] = VOCAB  # id -> token; id 0 is <pad>, 1 is <unk>
    labels: tuple[str, ...] = TRIMODAL_LABELS  # class names, one logit each
    max_text_length: int = 16  # tokens the runtime pads/crops text to (the LSTM itself takes any length)
    embed_dim: int = 64  # token embedding width
    text_hidden: int = 128  # LSTM hidden size = text feature width
    text_layers: int = 1  # stacked LSTM layers
    image_size: int = 64  # square image side the model is trained and exported at
    sample_rate: int = 16000  # mono audio sample rate (Hz)
    audio_seconds: float = 1.0  # clip length the runtime pads/crops to (the encoder takes any length)
    n_fft: int = 400  # STFT size (25 ms at 16 kHz)
    hop_length: int = 160  # STFT hop (10 ms at 16 kHz)
    n_mels: int = 64  # mel bands
    audio_frontend: str = "conv"  # MelFrontend impl: "conv" (exports everywhere) or "torchaudio" (STFT op)
    audio_channels: tuple[int, int] = (16, 32)  # channels of the two conv blocks over the log-mel image
    audio_features: int = 128  # audio feature width


class AudioEncoder(nn.Module):
    """Waveform [B, samples] -> mel -> log -> 2x (Conv/BN/ReLU/MaxPool) -> global average -> Linear."""

    def __init__(self, frontend: MelFrontend, channels: tuple[int, int], out_features: int) -> None:
        super().__init__()
        self.frontend = frontend
        blocks: list[nn.Module] = []
        for c_in, c_out in zip((1, *channels[:-1]), channels, strict=True):
            blocks += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2)]
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.proj = nn.Linear(channels[-1], out_features)

    def forward(self, audio: Tensor) -> Tensor:
        log_mel = torch.log(self.frontend(audio) + LOG_FLOOR).unsqueeze(1)  # [B, 1, n_mels, frames]
        return self.proj(self.pool(self.blocks(log_mel)).flatten(1))


class TriModalNet(nn.Module):
    """Classify (text, image, audio): ``forward(text [B, T], image [B, 3, H, W], audio [B, samples]) -> logits``."""

    def __init__(self, config: TriModalConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or TriModalConfig()
        self.vocab = config.vocab
        self.labels = config.labels
        self.preprocess: dict[str, TextPreprocess | ImagePreprocess | AudioPreprocess] = {
            "text": text_preprocess(config.max_text_length),
            "image": image_preprocess(config.image_size),
            "audio": audio_preprocess(config.sample_rate, config.audio_seconds),
        }
        self.text_encoder = LSTMTextEncoder(len(config.vocab), config.embed_dim, config.text_hidden, config.text_layers)
        self.image_encoder = resnet_encoder(18)
        frontend = MelFrontend(
            config.sample_rate, config.n_fft, config.hop_length, config.n_mels, impl=config.audio_frontend
        )
        self.audio_encoder = AudioEncoder(frontend, config.audio_channels, config.audio_features)
        features = config.text_hidden + RESNET18_FEATURES + config.audio_features
        self.head = ConcatHead(features, len(config.labels))

    def forward(self, text: Tensor, image: Tensor, audio: Tensor) -> Tensor:
        return self.head(self.text_encoder(text), self.image_encoder(image), self.audio_encoder(audio))

    def example_inputs(self, batch: int = 1) -> dict[str, Tensor]:
        """Reproducible random inputs of the trained shapes, keyed like ``forward``'s arguments."""
        gen = generator()
        return {
            "text": example_text(batch, self.config.max_text_length, len(self.vocab), gen),
            "image": example_image(batch, self.config.image_size, gen),
            "audio": example_audio(batch, round(self.config.sample_rate * self.config.audio_seconds), gen),
        }
