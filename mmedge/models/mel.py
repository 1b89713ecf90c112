"""Mel spectrogram front-end with an STFT-free implementation that exports everywhere.

``torchaudio.transforms.MelSpectrogram`` computes an STFT. In ONNX that is the ``STFT`` op: the
TorchScript exporter cannot export it, mobile execution providers do not run it, and in an INT8
bundle it took ~29% of inference time. A short-time Fourier transform with a fixed window is a
strided 1-D convolution with cos/sin kernels, so ``impl="conv"`` computes the same power
spectrogram as one ``Conv1d`` (window folded into the kernels, same centre padding) followed by
the same mel filterbank as a matrix product. It matches torchaudio to float32 rounding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmedge.errors import ExportError

__all__ = ["MelFrontend"]

IMPLS = ("conv", "torchaudio")
PAD_MODES = ("reflect", "constant", "replicate", "circular")


class MelFrontend(nn.Module):
    """Waveform ``[..., samples]`` -> mel power spectrogram ``[..., n_mels, frames]``.

    Arguments mean what they mean in ``torchaudio.transforms.MelSpectrogram``; ``impl`` picks
    torchaudio's STFT (``"torchaudio"``) or the equivalent convolution (``"conv"``). Neither keeps
    its constants in the ``state_dict``: they follow from the arguments, so a checkpoint loads into
    either implementation.
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        n_fft: int = 400,
        hop_length: int = 160,
        n_mels: int = 64,
        *,
        impl: str = "conv",
        win_length: int | None = None,
        f_min: float = 0.0,
        f_max: float | None = None,
        pad: int = 0,
        center: bool = True,
        pad_mode: str = "reflect",
        power: float = 2.0,
        normalized: bool | str = False,
        norm: str | None = None,
        mel_scale: str = "htk",
    ) -> None:
        super().__init__()
        if impl not in IMPLS:
            raise ValueError(f"MelFrontend impl must be one of {IMPLS}, got {impl!r}")
        if pad_mode not in PAD_MODES:
            raise ValueError(f"MelFrontend pad_mode must be one of {PAD_MODES}, got {pad_mode!r}")
        self.impl = impl
        self.sample_rate, self.n_fft, self.hop_length, self.n_mels = sample_rate, n_fft, hop_length, n_mels
        self.win_length = win_length if win_length is not None else n_fft
        self.pad, self.center, self.pad_mode, self.power = pad, center, pad_mode, power
        if impl == "torchaudio":
            self.mel = _torchaudio_mel(
                self, f_min=f_min, f_max=f_max, normalized=normalized, norm=norm, mel_scale=mel_scale
            )
            return
        import torchaudio

        window = torch.hann_window(self.win_length, dtype=torch.float64)
        fb = torchaudio.functional.melscale_fbanks(
            n_fft // 2 + 1,
            f_min,
            f_max if f_max is not None else float(sample_rate // 2),
            n_mels,
            sample_rate,
            norm,
            mel_scale,
        )
        self.register_buffer("dft", _dft_kernels(window, n_fft, _scale(normalized, window, n_fft)), persistent=False)
        self.register_buffer("fb", fb.float(), persistent=False)

    @classmethod
    def from_torchaudio(cls, ms: nn.Module) -> MelFrontend:
        """The ``impl="conv"`` equivalent of a ``torchaudio.transforms.MelSpectrogram`` module.

        Copies the module's own window and filterbank, so custom windows and mel settings are
        reproduced exactly. Raises :class:`ExportError` for settings a convolution cannot compute.
        """
        import torchaudio

        if not isinstance(ms, torchaudio.transforms.MelSpectrogram):
            raise ExportError(f"expected a torchaudio.transforms.MelSpectrogram, found {type(ms).__name__}")
        spec = ms.spectrogram
        problems = []
        if spec.power is None or spec.power <= 0:
            problems.append(f"power={spec.power!r} (a complex or non-positive spectrogram); use power=1.0 or 2.0")
        if not spec.onesided:
            problems.append("onesided=False; the mel filterbank needs the one-sided spectrum")
        if spec.center and spec.pad_mode not in PAD_MODES:
            problems.append(f"pad_mode={spec.pad_mode!r}; use one of {PAD_MODES}")
        if spec.window.ndim != 1 or spec.window.numel() != spec.win_length or spec.win_length > spec.n_fft:
            problems.append(
                f"a window of shape {tuple(spec.window.shape)} for win_length={spec.win_length}, n_fft={spec.n_fft}"
            )
        if problems:
            raise ExportError(
                "cannot build a convolution mel front-end from this MelSpectrogram: " + "; ".join(problems)
            )
        front = cls(
            ms.sample_rate,
            spec.n_fft,
            spec.hop_length,
            ms.n_mels,
            win_length=spec.win_length,
            pad=spec.pad,
            center=spec.center,
            pad_mode=spec.pad_mode if spec.center else "reflect",
            power=float(spec.power),
        )
        window = spec.window.detach().to(torch.float64)
        scale = _scale(spec.normalized, window, spec.n_fft)
        front.dft = _dft_kernels(window, spec.n_fft, scale).to(front.dft.device)
        front.fb = ms.mel_scale.fb.detach().float().clone()
        return front

    def forward(self, waveform: Tensor) -> Tensor:
        if self.impl == "torchaudio":
            return self.mel(waveform)
        leading = waveform.shape[:-1]
        x = waveform.reshape(-1, 1, waveform.shape[-1])
        if self.pad > 0:
            x = F.pad(x, (self.pad, self.pad))
        if self.center:
            x = F.pad(x, (self.n_fft // 2, self.n_fft // 2), mode=self.pad_mode)
        spec = F.conv1d(x, self.dft, stride=self.hop_length)  # [N, 2 * freqs, frames]: real then imaginary
        real, imag = spec.chunk(2, dim=1)
        power = real * real + imag * imag
        if self.power != 2.0:
            power = power.pow(self.power / 2.0)
        mel = torch.matmul(power.transpose(1, 2), self.fb).transpose(1, 2)
        return mel.reshape((*leading, *mel.shape[-2:]))

    def extra_repr(self) -> str:
        return (
            f"impl={self.impl!r}, sample_rate={self.sample_rate}, n_fft={self.n_fft}, "
            f"hop_length={self.hop_length}, n_mels={self.n_mels}"
        )


def _torchaudio_mel(
    front: MelFrontend, *, f_min: float, f_max: float | None, normalized: bool | str, norm: str | None, mel_scale: str
) -> nn.Module:
    import torchaudio

    mel = torchaudio.transforms.MelSpectrogram(
        sample_rate=front.sample_rate,
        n_fft=front.n_fft,
        win_length=front.win_length,
        hop_length=front.hop_length,
        f_min=f_min,
        f_max=f_max,
        pad=front.pad,
        n_mels=front.n_mels,
        power=front.power,
        normalized=normalized,
        center=front.center,
        pad_mode=front.pad_mode,
        norm=norm,
        mel_scale=mel_scale,
    )
    # Derived constants, not weights: keep them out of the state_dict like the conv impl does.
    mel.spectrogram.register_buffer("window", mel.spectrogram.window, persistent=False)
    mel.mel_scale.register_buffer("fb", mel.mel_scale.fb, persistent=False)
    return mel


def _scale(normalized: bool | str, window: Tensor, n_fft: int) -> float:
    """The factor torchaudio's ``normalized`` applies to the complex spectrum."""
    if normalized is True or normalized == "window":
        return 1.0 / math.sqrt(float(window.pow(2).sum()))
    if normalized == "frame_length":
        return 1.0 / math.sqrt(n_fft)
    return 1.0


def _dft_kernels(window: Tensor, n_fft: int, scale: float) -> Tensor:
    """float32 [2 * (n_fft // 2 + 1), 1, n_fft]: windowed cos then -sin rows of the one-sided DFT.

    Built in float64 so the only rounding is the final cast. A window shorter than ``n_fft`` is
    centred in it with zeros, as ``torch.stft`` does.
    """
    left = (n_fft - window.numel()) // 2
    full = torch.zeros(n_fft, dtype=torch.float64)
    full[left : left + window.numel()] = window
    k = torch.arange(n_fft // 2 + 1, dtype=torch.float64)[:, None]
    n = torch.arange(n_fft, dtype=torch.float64)[None, :]
    angle = 2.0 * math.pi * ((k * n) % n_fft) / n_fft  # reduce mod n_fft first: exact angles
    kernels = torch.cat([torch.cos(angle), -torch.sin(angle)]) * full * scale
    return kernels.float().unsqueeze(1)
