"""Numeric kernels of preprocessing, numpy only: image resizing and audio resampling."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["resample", "resize"]

# Kaiser-windowed sinc resampling: 16 zero crossings each side, beta 8.6 (~ -90 dB stop band),
# pass band to 95% of the lower Nyquist frequency. Outputs are computed in chunks so memory
# stays bounded for long waveforms (taps per output grow when downsampling by a large factor).
_ZERO_CROSSINGS = 16
_KAISER_BETA = 8.6
_ROLLOFF = 0.95
_CHUNK = 4096  # outputs per chunk, fewer when a chunk would exceed _CHUNK_ENTRIES (input reads x taps)
_CHUNK_ENTRIES = 2**22  # 32 MiB per float64 temporary, whatever the rate ratio
_MAX_PHASES = 8192  # above this many distinct filters, compute them per chunk instead


def resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an ``(H, W, C)`` float image to ``size = (height, width)``.

    Bilinear (triangle) filtering whose support widens with the downscale factor, i.e.
    antialiased like Pillow's ``Image.resize(..., BILINEAR)`` and torchvision's
    ``Resize(antialias=True)``: shrinking averages every source pixel instead of skipping some.
    """
    height, width = size
    if image.shape[:2] == (height, width):
        return image
    rows = _triangle_weights(image.shape[0], height)
    cols = _triangle_weights(image.shape[1], width)
    return np.einsum("oh,hwc,pw->opc", rows, image.astype(np.float64), cols).astype(np.float32)


def _triangle_weights(n_in: int, n_out: int) -> np.ndarray:
    """``(n_out, n_in)`` row-normalised weights of a triangle filter mapping n_in pixels to n_out."""
    scale = n_in / n_out
    support = max(scale, 1.0)
    centers = (np.arange(n_out) + 0.5) * scale
    pixels = np.arange(n_in) + 0.5
    weights = np.clip(1.0 - np.abs(pixels[None, :] - centers[:, None]) / support, 0.0, None)
    return weights / weights.sum(axis=1, keepdims=True)


def resample(wave: np.ndarray, rate_in: int, rate_out: int, *, max_samples: int | None = None) -> np.ndarray:
    """Band-limited resampling of ``(..., samples)`` from ``rate_in`` to ``rate_out`` Hz.

    Each output sample is the windowed-sinc interpolation of the input at its time, with the
    sinc's cutoff at the lower of the two Nyquist frequencies, so downsampling does not alias.
    Samples outside the signal count as zero. Output ``j`` sits at input time ``j * down / up``
    (the reduced rate ratio), so its filter depends only on ``j % up``: the ``up`` filters are
    computed once (polyphase) unless the ratio is unusual enough to make that table large.
    ``max_samples`` stops after that many output samples (the caller crops the rest anyway), so
    upsampling a long wave costs no more than its kept part.
    """
    if rate_in == rate_out:
        return wave if max_samples is None else wave[..., :max_samples]
    g = math.gcd(rate_in, rate_out)
    up, down = rate_out // g, rate_in // g
    cutoff = _ROLLOFF * min(1.0, up / down)  # relative to the input's Nyquist frequency
    half_width = _ZERO_CROSSINGS / cutoff  # in input samples
    offsets = np.arange(-math.ceil(half_width), math.ceil(half_width) + 1)
    n_in = wave.shape[-1]
    n_out = round(n_in * up / down) if max_samples is None else min(round(n_in * up / down), max_samples)
    table = (  # worth it only when phases repeat: a short wave at an odd rate needs fewer filters than up
        _phase_weights(np.arange(up), up, down, offsets=offsets, cutoff=cutoff, half_width=half_width)
        if up <= min(_MAX_PHASES, n_out)
        else None
    )
    out = np.empty((*wave.shape[:-1], n_out), dtype=np.float32)
    chunk = max(1, min(_CHUNK, _CHUNK_ENTRIES // (len(offsets) * max(1, math.prod(wave.shape[:-1])))))
    for start in range(0, n_out, chunk):
        j = np.arange(start, min(start + chunk, n_out))
        index = ((j * down) // up)[:, None] + offsets
        weights = (
            table[j % up]
            if table is not None
            else _phase_weights(j % up, up, down, offsets=offsets, cutoff=cutoff, half_width=half_width)
        )
        weights = weights * ((index >= 0) & (index < n_in))
        out[..., start : start + len(j)] = np.sum(wave[..., np.clip(index, 0, n_in - 1)] * weights, axis=-1)
    return out


def _phase_weights(
    phases: np.ndarray, up: int, down: int, *, offsets: np.ndarray, cutoff: float, half_width: float
) -> np.ndarray:
    """``(len(phases), len(offsets))`` Kaiser-windowed sinc taps for outputs of the given phases."""
    frac = (phases * down % up) / up  # output time minus the input sample it follows
    distance = frac[:, None] - offsets[None, :]
    inside = np.clip(1.0 - (distance / half_width) ** 2, 0.0, None)
    window = np.i0(_KAISER_BETA * np.sqrt(inside)) / np.i0(_KAISER_BETA)
    return cutoff * np.sinc(cutoff * distance) * window * (np.abs(distance) <= half_width)
