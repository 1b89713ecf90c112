"""Mel spectrogram front-end with an STFT-free implementation that exports everywhere.

``torchaudio.transforms.MelSpectrogram`` computes an STFT. In ONNX that is the ``STFT`` op: the
TorchScript exporter cannot export it, mobile execution providers do not run it, and onnxruntime
runs it slowly. A short-time Fourier transform with a fixed window is a strided convolution with
cos/sin kernels, so ``impl="conv"`` computes the same power spectrogram with convolutions (window
folded into the kernels, same centre padding) followed by the same mel filterbank as a matrix
product. It matches torchaudio to float32 rounding.

One ``Conv1d`` over whole frames costs ``n_fft`` multiply-adds per frequency bin and frame. When
``n_fft`` and ``hop_length`` share a divisor ``N1`` (400 and 160 share 20), the DFT is split in two
stages as in a Cooley-Tukey FFT: a grouped strided conv over blocks of ``N1`` samples computes
``N1`` DFTs of length ``n_fft / N1``, and a grouped 1x1 conv combines them with the twiddle factors.
That is ~5x fewer multiply-adds at the reference sizes (timings in ``benchmarks/NOTES.md``); the
one-conv form remains for sizes without such a divisor.
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
    torchaudio's STFT (``"torchaudio"``) or the equivalent convolutions (``"conv"``; ``split`` is
    the block size of its two-stage DFT, None when it uses one conv). Neither keeps its constants
    in the ``state_dict``: they follow from the arguments, so a checkpoint loads into either
    implementation.
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
        self.split: int | None = None
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
        self._set_constants(window, _scale(normalized, window, n_fft), fb)

    @classmethod
    def from_torchaudio(cls, ms: nn.Module) -> MelFrontend:
        """The ``impl="conv"`` equivalent of a torchaudio ``MelSpectrogram`` or ``Spectrogram`` module.

        Copies the module's own window and filterbank, so custom windows and mel settings are
        reproduced exactly; a ``Spectrogram`` gets the identity as its filterbank (its "mels" are the
        ``n_fft // 2 + 1`` frequency bins). Raises :class:`ExportError` for settings a convolution
        cannot compute.
        """
        import torchaudio

        if isinstance(ms, torchaudio.transforms.MelSpectrogram):
            spec, fb, sample_rate = ms.spectrogram, ms.mel_scale.fb.detach().cpu(), ms.sample_rate
        elif isinstance(ms, torchaudio.transforms.Spectrogram):
            spec, fb, sample_rate = ms, torch.eye(ms.n_fft // 2 + 1), 0
        else:
            raise ExportError(
                f"expected a torchaudio.transforms.MelSpectrogram or Spectrogram, found {type(ms).__name__}"
            )
        problems = []
        if spec.power is None or spec.power <= 0:
            problems.append(f"power={spec.power!r} (a complex or non-positive spectrogram); use power=1.0 or 2.0")
        if not spec.onesided:
            problems.append("onesided=False; the convolution front-end computes the one-sided spectrum")
        if spec.center and spec.pad_mode not in PAD_MODES:
            problems.append(f"pad_mode={spec.pad_mode!r}; use one of {PAD_MODES}")
        if spec.window.ndim != 1 or spec.window.numel() != spec.win_length or spec.win_length > spec.n_fft:
            problems.append(
                f"a window of shape {tuple(spec.window.shape)} for win_length={spec.win_length}, n_fft={spec.n_fft}"
            )
        if problems:
            raise ExportError(
                f"cannot build a convolution front-end from this {type(ms).__name__}: " + "; ".join(problems)
            )
        front = cls(  # the window and filterbank it builds are replaced by the module's own below
            sample_rate or 16000,
            spec.n_fft,
            spec.hop_length,
            fb.shape[1] if sample_rate else 1,
            win_length=spec.win_length,
            pad=spec.pad,
            center=spec.center,
            pad_mode=spec.pad_mode if spec.center else "reflect",
            power=float(spec.power),
        )
        front.sample_rate, front.n_mels = sample_rate, fb.shape[1]  # a Spectrogram has no sample rate: 0
        window = spec.window.detach().cpu().to(torch.float64)
        front._set_constants(window, _scale(spec.normalized, window, spec.n_fft), fb)
        return front.to(spec.window.device)

    def forward(self, waveform: Tensor) -> Tensor:
        if self.impl == "torchaudio":
            return self.mel(waveform)
        leading = waveform.shape[:-1]
        x = waveform.reshape(-1, 1, waveform.shape[-1])
        if self.pad > 0:
            x = F.pad(x, (self.pad, self.pad))
        if self.center:
            x = F.pad(x, (self.n_fft // 2, self.n_fft // 2), mode=self.pad_mode)
        power = self._one_conv_power(x) if self.split is None else self._two_stage_power(x)
        if self.power != 2.0:
            power = power.pow(self.power / 2.0)
        mel = torch.matmul(power.transpose(1, 2), self.fb).transpose(1, 2)
        return mel.reshape((*leading, mel.shape[-2], -1))  # frames as -1: the tracer keeps it dynamic

    def _set_constants(self, window: Tensor, scale: float, fb: Tensor) -> None:
        """DFT kernels for ``window`` (float64) and the mel filterbank ``fb`` [freqs, n_mels], as buffers."""
        full = _full_window(window, self.n_fft) * scale
        self.split = _split(self.n_fft, self.hop_length)
        if self.split is None:
            self.register_buffer("dft", _dft_kernels(full), persistent=False)
            self.register_buffer("fb", fb.float(), persistent=False)
            return
        stage1, stage2, bins = _two_stage_kernels(full, self.split)
        self.register_buffer("stage1", stage1, persistent=False)
        self.register_buffer("stage2", stage2, persistent=False)
        # rows in the two-stage output's bin order; bins past Nyquist (padding of the last stage) weigh 0
        rows = torch.where((bins <= self.n_fft // 2)[:, None], fb[bins.clamp(max=self.n_fft // 2)], 0.0)
        self.register_buffer("fb", rows.float(), persistent=False)

    def _one_conv_power(self, x: Tensor) -> Tensor:
        spec = F.conv1d(x, self.dft, stride=self.hop_length)  # [N, 2 * freqs, frames]: real then imaginary
        real, imag = spec.chunk(2, dim=1)
        return real * real + imag * imag

    def _two_stage_power(self, x: Tensor) -> Tensor:
        # Reshapes name every dim but one: onnxruntime's symbolic shape inference (quant_pre_process)
        # fails on the shape arithmetic unflatten/flatten export to with the TorchScript exporter.
        n, n1 = x.shape[0], self.split
        n2, k1 = self.n_fft // n1, _kept_k1(n1)
        blocks = x.shape[-1] // n1  # samples past the last whole block belong to no frame
        x = x[:, :, : blocks * n1].reshape(n, blocks, n1).transpose(1, 2)  # [N, n1, blocks]
        # stage 1, per offset j < n1: length-n2 DFT of the samples j, j + n1, ... of each frame
        partial = F.conv1d(x, self.stage1, stride=self.hop_length // n1, groups=n1)  # [N, (j, re/im, k2), frames]
        partial = partial.reshape(n, n1 * 2, n2, -1).transpose(1, 2).reshape(n, n2 * n1 * 2, -1)  # (k2, j, re/im)
        # stage 2, per k2: twiddle and sum over j -> bins k2 + n2 * k1, real then imaginary
        spec = F.conv1d(partial, self.stage2, groups=n2).reshape(n * n2, 2, -1)  # [N k2, re/im, (k1, frames)]
        real, imag = spec.chunk(2, dim=1)  # tensors of rank <= 4 and no ReduceSum: NNAPI takes every op
        return (real * real + imag * imag).reshape(n, n2 * k1, -1)  # [N, (k2, k1), frames]

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


def _full_window(window: Tensor, n_fft: int) -> Tensor:
    """``window`` centred in ``n_fft`` samples with zeros, as ``torch.stft`` does for a short window."""
    left = (n_fft - window.numel()) // 2
    full = torch.zeros(n_fft, dtype=torch.float64)
    full[left : left + window.numel()] = window
    return full


def _dft_kernels(window: Tensor) -> Tensor:
    """float32 [2 * (n_fft // 2 + 1), 1, n_fft]: windowed cos then -sin rows of the one-sided DFT.

    Built in float64 so the only rounding is the final cast.
    """
    n_fft = window.numel()
    k = torch.arange(n_fft // 2 + 1, dtype=torch.float64)[:, None]
    n = torch.arange(n_fft, dtype=torch.float64)[None, :]
    angle = 2.0 * math.pi * ((k * n) % n_fft) / n_fft  # reduce mod n_fft first: exact angles
    return (torch.cat([torch.cos(angle), -torch.sin(angle)]) * window).float().unsqueeze(1)


def _split(n_fft: int, hop_length: int) -> int | None:
    """The block size of the two-stage DFT, or None where one conv needs at most 1.5x its multiply-adds.

    A block size must divide ``n_fft`` (whole blocks per frame) and ``hop_length`` (frames start
    on a block); among those, the one with the fewest multiply-adds.
    """
    one_conv = (n_fft // 2 + 1) * 2 * n_fft
    sizes = [d for d in range(2, n_fft) if n_fft % d == 0 and hop_length % d == 0]
    best = min(sizes, key=lambda d: _two_stage_cost(n_fft, d), default=None)
    return best if best is not None and 1.5 * _two_stage_cost(n_fft, best) <= one_conv else None


def _two_stage_cost(n_fft: int, n1: int) -> int:
    """Multiply-adds per frame: n1 DFTs of length n2, then per k2 a (2 n1 -> 2 k1) twiddled sum."""
    n2 = n_fft // n1
    return n1 * 2 * n2 * n2 + n2 * 2 * _kept_k1(n1) * 2 * n1


def _kept_k1(n1: int) -> int:
    """How many ``k1`` the second stage computes per ``k2``: ``k1 <= n1 / 2``, the rest are past Nyquist."""
    return n1 // 2 + 1


def _two_stage_kernels(window: Tensor, n1: int) -> tuple[Tensor, Tensor, Tensor]:
    """The two grouped-conv kernels of the split DFT, and the frequency bin of each output row.

    Sample ``j + n1 * m`` of a frame (``j < n1``, ``m < n2``), bin ``k2 + n2 * k1``:
    ``X = sum_j exp(-2πi j (k2 + n2 k1) / n_fft) * sum_m w x exp(-2πi m k2 / n2)``. Stage 1 (groups
    ``j``, kernel over ``m``, window folded in) gives the inner sums for every ``k2``; stage 2 (groups
    ``k2``, 1x1 over ``j`` and real/imaginary) applies the twiddles. Only ``k1 <= n1 / 2`` is kept:
    higher bins are past Nyquist for every ``k2``. Built in float64, cast once.
    """
    n_fft = window.numel()
    n2, k1s = n_fft // n1, _kept_k1(n1)
    j = torch.arange(n1, dtype=torch.float64)
    m = torch.arange(n2, dtype=torch.float64)
    k2 = torch.arange(n2, dtype=torch.float64)
    inner = 2.0 * math.pi * ((k2[:, None] * m[None, :]) % n2) / n2  # [k2, m]
    w = window.reshape(n2, n1).T[:, None, :]  # [j, 1, m]: w[j + n1 m]
    stage1 = torch.cat([torch.cos(inner)[None] * w, -torch.sin(inner)[None] * w], dim=1)  # [j, re/im · k2, m]
    k1 = torch.arange(k1s, dtype=torch.float64)
    bins = k2[:, None] + n2 * k1[None, :]  # [k2, k1]
    twiddle = 2.0 * math.pi * ((bins[:, :, None] * j[None, None, :]) % n_fft) / n_fft  # [k2, k1, j]
    cos, sin = torch.cos(twiddle), torch.sin(twiddle)
    # (a + ib)(cos - i sin): real = a cos + b sin, imaginary = b cos - a sin; inputs are (a, b) per j
    real = torch.stack([cos, sin], dim=-1).flatten(-2)
    imag = torch.stack([-sin, cos], dim=-1).flatten(-2)
    stage2 = torch.cat([real, imag], dim=1)  # [k2, re/im · k1, (j, re/im)]
    return (
        stage1.reshape(n1 * 2 * n2, 1, n2).float(),
        stage2.reshape(n2 * 2 * k1s, 2 * n1, 1).float(),
        bins.flatten().long(),
    )
