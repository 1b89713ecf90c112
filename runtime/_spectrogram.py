"""Whisper's log-mel features from a prepared wave, in numpy, as transformers' ``WhisperFeatureExtractor``.

The extractor's own numpy path frames the wave in a Python loop (about 0.1 s for Whisper's 30-s
window); here the frames are a strided view of the padded wave and one real FFT over all of them,
so the features cost a few milliseconds. The Slaney mel filters are built once per recipe.
"""

from __future__ import annotations

import functools

import numpy as np

from mmedge.bundle import AudioPreprocess

__all__ = ["mel_filters", "whisper_log_mel"]

_MEL_FLOOR = 1e-10  # of the mel power before log10
_DYNAMIC_RANGE = 8.0  # log10 units kept below the clip's loudest frame
_MAX_HZ = 8000.0  # the extractor's filters span 0 Hz to 8 kHz whatever the rate


def whisper_log_mel(wave: np.ndarray, pre: AudioPreprocess) -> np.ndarray:
    """``(samples,)`` float32 → ``(n_mels, samples // hop_length)`` float32 features of ``pre``."""
    half = pre.n_fft // 2
    padded = np.pad(wave, half, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, pre.n_fft)[:: pre.hop_length][:-1]
    spectrum = np.fft.rfft(frames * _hann(pre.n_fft), axis=-1)
    power = spectrum.real**2 + spectrum.imag**2  # float32 from numpy's float32 FFT
    mel = mel_filters(pre.sample_rate, pre.n_fft, pre.n_mels) @ power.T
    log = np.log10(np.maximum(mel, np.float32(_MEL_FLOOR)))
    log = np.maximum(log, log.max() - np.float32(_DYNAMIC_RANGE))
    return ((log + np.float32(4.0)) / np.float32(4.0)).astype(np.float32, copy=False)


@functools.lru_cache(maxsize=8)
def _hann(n_fft: int) -> np.ndarray:
    """The periodic Hann window (torch.hann_window's and the extractor's)."""
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)


@functools.lru_cache(maxsize=8)
def mel_filters(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """``(n_mels, n_fft // 2 + 1)`` triangular filters on the Slaney mel scale with Slaney (area)
    normalisation, as ``transformers.audio_utils.mel_filter_bank(..., norm="slaney", mel_scale="slaney")``."""
    fft_hz = np.linspace(0, sample_rate // 2, n_fft // 2 + 1)
    edges_hz = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(_MAX_HZ), n_mels + 2))
    slopes = edges_hz[None, :] - fft_hz[:, None]
    widths = np.diff(edges_hz)
    down = -slopes[:, :-2] / widths[:-1]
    up = slopes[:, 2:] / widths[1:]
    filters = np.maximum(0.0, np.minimum(down, up)) * (2.0 / (edges_hz[2:] - edges_hz[:-2]))
    filters = filters.T.astype(np.float32)
    filters.flags.writeable = False
    return filters


_LOG_HZ = 1000.0  # the Slaney scale is linear below this, logarithmic above
_LOG_MEL = 15.0
_LOG_STEP = np.log(6.4) / 27.0  # ln of the frequency ratio per mel above _LOG_HZ


def _hz_to_mel(hz: float) -> float:
    return _LOG_MEL + np.log(hz / _LOG_HZ) / _LOG_STEP if hz >= _LOG_HZ else 3.0 * hz / 200.0


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    return np.where(mels >= _LOG_MEL, _LOG_HZ * np.exp(_LOG_STEP * (mels - _LOG_MEL)), 200.0 * mels / 3.0)
