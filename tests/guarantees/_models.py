"""Tiny models, each with one pattern the pre-flight must report (and a clean one).

Every model has ``example_inputs(batch)``, so ``mmedge doctor --model guarantees._models:<Class>``
builds it like a reference model.
"""

from __future__ import annotations

import torch
from tinymodels import VOCAB, ConvAudio, MeanText
from torch import Tensor, nn


class _TwoInputs(nn.Module):
    """text [B, T] ids + audio [B, samples] → logits; subclasses choose the audio encoder."""

    def __init__(self, audio_encoder: nn.Module) -> None:
        super().__init__()
        self.text_encoder = MeanText()
        self.audio_encoder = audio_encoder
        self.head = nn.Linear(16, 3)

    def forward(self, text: Tensor, audio: Tensor) -> Tensor:
        return self.head(torch.cat([self.text_encoder(text), self.audio_encoder(audio)], dim=1))

    def example_inputs(self, batch: int = 2) -> dict[str, Tensor]:
        gen = torch.Generator().manual_seed(0)
        return {
            "text": torch.randint(1, VOCAB, (batch, 6), generator=gen),
            "audio": torch.randn(batch, 400, generator=gen),
        }


class CleanNet(_TwoInputs):
    def __init__(self) -> None:
        super().__init__(ConvAudio())


class MelAudio(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        import torchaudio

        self.mel = torchaudio.transforms.MelSpectrogram(sample_rate=16000, n_fft=64, hop_length=32, n_mels=8)

    def forward(self, audio: Tensor) -> Tensor:
        return torch.log(self.mel(audio) + 1e-6).mean(-1)


class MelNet(_TwoInputs):
    def __init__(self) -> None:
        super().__init__(MelAudio())


class StftAudio(nn.Module):
    def forward(self, audio: Tensor) -> Tensor:
        spec = torch.stft(audio, 14, hop_length=8, window=torch.hann_window(14), return_complex=True)
        return spec.abs()[:, :8].mean(-1)


class StftNet(_TwoInputs):
    def __init__(self) -> None:
        super().__init__(StftAudio())


class ComplexAudio(nn.Module):
    def forward(self, audio: Tensor) -> Tensor:
        phased = torch.polar(audio.abs(), audio)  # complex64
        return (phased * phased.conj()).real.reshape(audio.shape[0], 8, -1).mean(-1)


class ComplexNet(_TwoInputs):
    def __init__(self) -> None:
        super().__init__(ComplexAudio())


class BranchyAudio(ConvAudio):
    def forward(self, audio: Tensor) -> Tensor:
        features = super().forward(audio)
        if audio.mean() > 0:  # a Python branch on a value
            return features
        return -features


class BranchyNet(_TwoInputs):
    def __init__(self) -> None:
        super().__init__(BranchyAudio())


class CheckingAudio(ConvAudio):
    def forward(self, audio: Tensor) -> Tensor:
        # a value check stepped around while tracing, as transformers' attention-mask checks are
        if not torch.compiler.is_compiling() and bool(audio.abs().max() > 1e6):
            raise ValueError("audio out of range")
        return super().forward(audio)


class CheckingNet(_TwoInputs):
    def __init__(self) -> None:
        super().__init__(CheckingAudio())


class ScalingAudio(ConvAudio):
    def forward(self, audio: Tensor) -> Tensor:
        audio.mul_(0.5)  # writes into the caller's tensor
        return super().forward(audio)


class InPlaceNet(_TwoInputs):
    def __init__(self) -> None:
        super().__init__(ScalingAudio())


class DoubleAudio(ConvAudio):
    def forward(self, audio: Tensor) -> Tensor:
        energy = audio.double().pow(2).mean(-1, keepdim=True)  # float64 inside
        return super().forward(audio) * energy.float()


class DoubleNet(_TwoInputs):
    def __init__(self) -> None:
        super().__init__(DoubleAudio())


class HalfBoundaryAudio(ConvAudio):
    def forward(self, audio: Tensor) -> Tensor:
        return super().forward(audio).to(torch.bfloat16)  # a dtype the bundle cannot declare


class HalfBoundaryNet(_TwoInputs):
    def __init__(self) -> None:
        super().__init__(HalfBoundaryAudio())

    def forward(self, text: Tensor, audio: Tensor) -> Tensor:
        return self.head(torch.cat([self.text_encoder(text), self.audio_encoder(audio).float()], dim=1))


class PackedText(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, 8)
        self.lstm = nn.LSTM(8, 8, batch_first=True)

    def forward(self, text: Tensor) -> Tensor:
        lengths = (text != 0).sum(1)
        packed = nn.utils.rnn.pack_padded_sequence(
            self.embedding(text), lengths, batch_first=True, enforce_sorted=False
        )
        _, (h, _) = self.lstm(packed)
        return h[-1]


class PackedNet(_TwoInputs):
    def __init__(self) -> None:
        super().__init__(ConvAudio())
        self.text_encoder = PackedText()
