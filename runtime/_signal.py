"""Numeric kernels of preprocessing, numpy only: image resizing and audio resampling.

Both are linear filters whose weights are banded (each output reads a short run of neighbouring
inputs), so both are applied as a few dense matrix products over blocks of outputs, in float32:
the cost grows with the input's size times the filter's length, never with input × output size.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache

import numpy as np

__all__ = ["resample", "resize", "resize_rows"]

RowReader = Callable[[int, int], np.ndarray]  # rows [start, stop) of an (H, W, C) image

# A block of consecutive outputs becomes one dense (outputs x inputs it reads) matrix product while
# that matrix holds at most _WASTE times its non-zero weights (or is tiny): zero weights cost little
# next to reading the input again per output, or a Python-level call per output.
_WASTE = 2.0
_TINY_BLOCK = 64  # weights; below this a block grows regardless (upsampling: 2 taps per output)
# Products of at most this many multiply-adds: OpenBLAS runs them on the calling thread (it wakes
# its threads from 2^18), which on a busy machine is much faster than waiting for idle cores; the
# smaller pieces also stay in cache.
_SMALL_PRODUCT = 2**18
_STRIP_BYTES = 2**20  # rows the horizontal pass takes at once when it goes first

# Kaiser-windowed sinc resampling: 16 zero crossings each side, beta 8.6 (~ -90 dB stop band),
# pass band to 95% of the lower Nyquist frequency.
_ZERO_CROSSINGS = 16
_KAISER_BETA = 8.6
_ROLLOFF = 0.95
_MAX_PHASES = 8192  # above this many distinct filters (an unusual rate ratio), filters are made per chunk
_CHUNK = 4096  # outputs per chunk of the per-chunk fallback, fewer when a chunk exceeds _CHUNK_ENTRIES
_CHUNK_ENTRIES = 2**22  # 32 MiB per float64 temporary, whatever the rate ratio


# ---------------------------------------------------------------------------------------------
# images


def resize(
    image: np.ndarray,
    size: tuple[int, int],
    *,
    resized: tuple[int, int] | None = None,
    offset: tuple[int, int] = (0, 0),
    kernel: str = "bilinear",
    clip: float | None = None,
) -> np.ndarray:
    """Resize an ``(H, W, C)`` image (uint8 or float) to float32 ``size = (height, width)``.

    Bilinear (triangle) or bicubic (Keys, a = -0.5) filtering whose support widens with the
    downscale factor, i.e. antialiased like Pillow's ``Image.resize(..., BILINEAR/BICUBIC)`` and
    torchvision's ``Resize(antialias=True)``: shrinking averages every source pixel instead of
    skipping some. uint8 pixels keep their 0–255 range (scale the small result, not the large input).

    With ``resized``, the image is resized to that ``(height, width)`` and the ``size`` window at
    ``offset = (top, left)`` of it is returned (a center crop after a resize): only the kept pixels
    are computed, each exactly as in the full resize.

    Computed in float32 (the filter weights exactly as Pillow's): within 1e-6 of the float64
    result for values in [0, 1] (tested against a float64 reference on random images), and of
    Pillow's mode ``"F"`` resize within 1e-5. Bicubic overshoots the input's range near edges, as
    Pillow's float resize does; with ``clip`` (the range's top, e.g. 255) each pass's result is
    clipped to ``[0, clip]`` and the horizontal pass goes first, as in Pillow's 8-bit resize.
    """
    return resize_rows(_array_rows(image), image.shape, size, resized=resized, offset=offset, kernel=kernel, clip=clip)


def resize_rows(
    read: RowReader,
    shape: tuple[int, ...],
    size: tuple[int, int],
    *,
    resized: tuple[int, int] | None = None,
    offset: tuple[int, int] = (0, 0),
    kernel: str = "bilinear",
    clip: float | None = None,
) -> np.ndarray:
    """:func:`resize` of an ``(H, W, C)`` image of ``shape`` whose rows ``read(start, stop)`` returns.

    Rows are read a block at a time, in order, when the vertical pass goes first (it does unless
    the image grows much taller, or ``clip`` asks for Pillow's order), so a decoder's image need not
    be copied into one large array; the horizontal pass first reads only the rows the vertical needs.
    """
    (h, w, c), (height, width) = shape, size
    full = resized or size
    rows = _band(h, full[0], offset[0], height, kernel) if (h, offset[0]) != (height, 0) or h != full[0] else None
    cols = _band(w, full[1], offset[1], width, kernel) if (w, offset[1]) != (width, 0) or w != full[1] else None
    if rows is None and cols is None:
        return _clip(read(0, h).astype(np.float32), clip)
    # Either order gives the same result unclipped; the cheaper one runs. Along axis 1 each weight
    # applies per channel (one product over the interleaved channels), so it costs C times its weights.
    rows_macs, cols_macs = (rows.macs if rows else 0), (cols.macs if cols else 0) * c * c
    cheaper = rows_macs * w * c + cols_macs * height <= cols_macs * h + rows_macs * width * c
    if rows is not None and (cols is None or (clip is None and cheaper)):
        out = _filter_rows(read, rows, w * c)
        return _clip(_filter_cols(out, cols, c) if cols else out, clip).reshape(height, width, c)
    first, end = rows.inputs if rows else (0, h)
    out = np.empty((end - first, width * c), np.float32)
    step = max(1, _STRIP_BYTES // (w * c))  # rows at a time: a decoder's image is never copied whole
    for start in range(first, end, step):
        stop = min(end, start + step)
        out[start - first : stop - first] = _filter_cols(read(start, stop).reshape(stop - start, w * c), cols, c)
    out = _clip(out, clip)
    if rows is not None:
        out = _clip(_filter_rows(lambda start, stop: out[start - first : stop - first], rows, width * c), clip)
    return out.reshape(height, width, c)


def _clip(pixels: np.ndarray, top: float | None) -> np.ndarray:
    return pixels if top is None else np.clip(pixels, 0.0, top, out=pixels)


def _array_rows(image: np.ndarray) -> RowReader:
    return lambda start, stop: image[start:stop]


class _Band:
    """A resampling filter from n_in to n_out samples as blocks of dense weights (float32, read-only)."""

    def __init__(self, blocks: list[tuple[int, int, int, np.ndarray]]) -> None:
        self.blocks = blocks  # (first output, end output, first input, (outputs, inputs) weights)
        self.macs = sum(b[3].size for b in blocks)  # multiply-adds per column filtered
        self.span = max(b[3].shape[1] for b in blocks)
        self.inputs = (blocks[0][2], max(b[2] + b[3].shape[1] for b in blocks))  # [first, end) of the inputs read
        self._interleaved: dict[int, list[np.ndarray]] = {}

    def interleaved(self, channels: int) -> list[np.ndarray]:
        """Per block, ``(inputs·C, outputs·C)`` weights applying it from the right to interleaved channels."""
        if channels not in self._interleaved:
            eye = np.eye(channels, dtype=np.float32)
            self._interleaved[channels] = [np.kron(b[3].T, eye) for b in self.blocks]
        return self._interleaved[channels]


def _triangle(x: np.ndarray) -> np.ndarray:
    return np.clip(1.0 - np.abs(x), 0.0, None)


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5, Pillow's and torchvision's bicubic."""
    a, x = -0.5, np.abs(x)
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    far = (((x - 5.0) * x + 8.0) * x - 4.0) * a
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


KERNELS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], float]] = {  # name: (kernel, support)
    "bilinear": (_triangle, 1.0),
    "bicubic": (_cubic, 2.0),
}


@lru_cache(maxsize=64)
def _band(n_in: int, n_out: int, offset: int = 0, count: int | None = None, kernel: str = "bilinear") -> _Band:
    """Pillow's antialiased weights mapping n_in pixels to n_out, for outputs [offset, offset + count)
    only (numbered from 0), in blocks of outputs."""
    function, reach = KERNELS[kernel]
    count = n_out - offset if count is None else count
    scale = n_in / n_out
    stretch = max(scale, 1.0)
    support = reach * stretch
    centers = (np.arange(offset, offset + count) + 0.5) * scale
    starts = np.clip(np.floor(centers - support + 0.5).astype(np.int64), 0, n_in - 1)
    stops = np.clip(np.floor(centers + support + 0.5).astype(np.int64), starts + 1, n_in)
    blocks, first = [], 0
    while first < count:
        end, taps = first + 1, int(stops[first] - starts[first])
        while end < count:
            size = (end + 1 - first) * int(stops[end] - starts[first])
            if size > _TINY_BLOCK and size > _WASTE * (taps + stops[end] - starts[end]):
                break
            taps += int(stops[end] - starts[end])
            end += 1
        start = int(starts[first])
        pixels = np.arange(start, int(stops[end - 1])) + 0.5
        within = (pixels[None, :] >= starts[first:end, None]) & (pixels[None, :] < stops[first:end, None])
        weights = np.where(within, function((pixels[None, :] - centers[first:end, None]) / stretch), 0.0)
        weights = (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)
        weights.flags.writeable = False
        blocks.append((first, end, start, weights))
        first = end
    return _Band(blocks)


def _filter_rows(read: RowReader, band: _Band, n_cols: int) -> np.ndarray:
    """``(n_out, n_cols)`` float32: the band applied along axis 0 of the rows ``read`` returns."""
    out = np.empty((band.blocks[-1][1], n_cols), np.float32)
    buffer = np.empty(0, np.float32)  # a float32 copy of one product's rows: never the whole image in float
    for first, end, start, weights in band.blocks:
        rows = read(start, start + weights.shape[1]).reshape(weights.shape[1], n_cols)
        step = max(1, _SMALL_PRODUCT // weights.size)
        for c in range(0, n_cols, step):
            x = rows[:, c : c + step]
            if x.dtype != np.float32:
                x, buffer = _as_float32(x, buffer)
            np.matmul(weights, x, out=out[first:end, c : c + step])
    return out


def _filter_cols(x: np.ndarray, band: _Band, channels: int) -> np.ndarray:
    """``(rows, n_out·C)`` float32: the band applied along the pixels of ``(rows, n_in·C)`` interleaved rows."""
    out = np.empty((x.shape[0], band.blocks[-1][1] * channels), np.float32)
    buffer = np.empty(0, np.float32)
    for (first, end, start, _), weights in zip(band.blocks, band.interleaved(channels), strict=True):
        step = max(1, _SMALL_PRODUCT // weights.size)
        for r in range(0, len(x), step):
            cols = x[r : r + step, start * channels : start * channels + len(weights)]
            if cols.dtype != np.float32:
                cols, buffer = _as_float32(cols, buffer)
            np.matmul(cols, weights, out=out[r : r + step, first * channels : end * channels])
    return out


def _as_float32(x: np.ndarray, buffer: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``x`` converted into (a view of) ``buffer``, which grows when too small; returns both."""
    if buffer.size < x.size:
        buffer = np.empty(x.size, np.float32)
    view = buffer[: x.size].reshape(x.shape)
    np.copyto(view, x, "unsafe")
    return view, buffer


# ---------------------------------------------------------------------------------------------
# audio


def resample(wave: np.ndarray, rate_in: int, rate_out: int, *, max_samples: int | None = None) -> np.ndarray:
    """Band-limited resampling of ``(..., samples)`` from ``rate_in`` to ``rate_out`` Hz, as float32.

    Each output sample is the windowed-sinc interpolation of the input at its time, with the
    sinc's cutoff at the lower of the two Nyquist frequencies, so downsampling does not alias.
    Samples outside the signal count as zero. Output ``j`` sits at input time ``j * down / up``
    (the reduced rate ratio), so its filter depends only on ``j % up`` (polyphase): the ``up``
    filters are made once and applied as matrix products over a strided view of the wave, in
    float32 (within 2e-6 of float64 for waves in [-1, 1]). An unusual ratio (more than 8192
    filters, or more than the output has samples) makes the filters per chunk of outputs instead.
    ``max_samples`` stops after that many output samples (the caller crops the rest anyway), so
    upsampling a long wave costs no more than its kept part; the kept samples equal a full run's.
    """
    if rate_in == rate_out:
        return wave if max_samples is None else wave[..., :max_samples]
    g = math.gcd(rate_in, rate_out)
    up, down = rate_out // g, rate_in // g
    n_in = wave.shape[-1]
    n_full = round(n_in * up / down)
    n_out = n_full if max_samples is None else min(n_full, max_samples)
    if up <= _MAX_PHASES and _cycles_per_row(up, down) * up <= n_full:
        return _resample_polyphase(wave, _polyphase(up, down), n_out=n_out)
    return _resample_chunked(wave, up, down, n_out=n_out)


def _filter_shape(up: int, down: int) -> tuple[float, float, np.ndarray]:
    """Cutoff (relative to the input's Nyquist frequency), half width and tap offsets (input samples)."""
    cutoff = _ROLLOFF * min(1.0, up / down)
    half_width = _ZERO_CROSSINGS / cutoff
    reach = math.ceil(half_width)
    return cutoff, half_width, np.arange(-reach, reach + 1)


def _cycles_per_row(up: int, down: int) -> int:
    """Cycles of the rate ratio per polyphase row: enough that a row spans twice the filter."""
    return max(1, math.ceil(2 * len(_filter_shape(up, down)[2]) / down))


class _Polyphase:
    """All filters of an up/down ratio, grouped for matrix products over rows of the padded wave.

    Row ``m`` holds ``G`` cycles of the ratio: its ``G·up`` outputs read inputs from
    ``m·G·down`` on (a wave padded with the filter's reach of zeros in front). Outputs of a row
    are split into groups whose inputs lie within twice the filter's length, so each group is one
    product of a strided ``(rows, inputs)`` view with its ``(inputs, outputs)`` weights.
    """

    def __init__(self, up: int, down: int) -> None:
        cutoff, half_width, offsets = _filter_shape(up, down)
        taps, cycles = len(offsets), _cycles_per_row(up, down)
        self.reach, self.taps = int(-offsets[0]), taps
        self.inputs_per_row, self.outputs_per_row = cycles * down, cycles * up
        columns = np.arange(self.outputs_per_row)
        first = columns * down // up  # first input (padded) each output of a row reads
        weights = _phase_weights(columns % up, up, down, offsets=offsets, cutoff=cutoff, half_width=half_width)
        self.groups: list[tuple[int, int, int, np.ndarray]] = []  # (first output, end output, first input, weights)
        start = 0
        while start < len(columns):
            end = start + 1
            while end < len(columns) and first[end] - first[start] + taps <= 2 * taps:
                end += 1
            dense = np.zeros((first[end - 1] - first[start] + taps, end - start), np.float32)
            for k in range(start, end):
                dense[first[k] - first[start] : first[k] - first[start] + taps, k - start] = weights[k]
            self.groups.append((start, end, int(first[start]), dense))
            start = end
        # rows per product: small products (see _SMALL_PRODUCT), a fixed count so max_samples only crops
        self.rows_per_product = max(1, _SMALL_PRODUCT // max(g[3].size for g in self.groups))


@lru_cache(maxsize=16)
def _polyphase(up: int, down: int) -> _Polyphase:
    return _Polyphase(up, down)


def _resample_polyphase(wave: np.ndarray, plan: _Polyphase, *, n_out: int) -> np.ndarray:
    step, per_row = plan.rows_per_product, plan.outputs_per_row
    rows = math.ceil(math.ceil(n_out / per_row) / step) * step  # whole products: the same for any n_out
    flat = wave.reshape(-1, wave.shape[-1])
    length = rows * plan.inputs_per_row + 2 * plan.taps  # inputs the last row's last group reads, and more
    padded = np.zeros((len(flat), length), np.float32)
    kept = min(flat.shape[1], length - plan.reach)
    padded[:, plan.reach : plan.reach + kept] = flat[:, :kept]
    out = np.empty((len(flat), rows, per_row), np.float32)
    for channel in range(len(flat)):
        for first, end, start, weights in plan.groups:
            windows = np.lib.stride_tricks.sliding_window_view(padded[channel], len(weights))
            windows = windows[start :: plan.inputs_per_row][:rows]
            for r in range(0, rows, step):
                np.matmul(windows[r : r + step], weights, out=out[channel, r : r + step, first:end])
    return out.reshape(*wave.shape[:-1], rows * per_row)[..., :n_out]


def _resample_chunked(wave: np.ndarray, up: int, down: int, *, n_out: int) -> np.ndarray:
    """The same filters made per chunk of outputs (gathered taps, float64): for unusual rate ratios."""
    cutoff, half_width, offsets = _filter_shape(up, down)
    n_in = wave.shape[-1]
    out = np.empty((*wave.shape[:-1], n_out), dtype=np.float32)
    chunk = max(1, min(_CHUNK, _CHUNK_ENTRIES // (len(offsets) * max(1, math.prod(wave.shape[:-1])))))
    for start in range(0, n_out, chunk):
        j = np.arange(start, min(start + chunk, n_out))
        index = ((j * down) // up)[:, None] + offsets
        weights = _phase_weights(j % up, up, down, offsets=offsets, cutoff=cutoff, half_width=half_width)
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
