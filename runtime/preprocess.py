"""Raw inputs → model tensors, following each input's preprocessing recipe in the manifest.

One rule decides what a value is: a numpy array with the input's rank is already the model
tensor and passes through untouched (it is validated strictly afterwards); anything else is a raw
form, and a Python ``list`` of raw items is a batch.

* image — a file path, a ``PIL.Image``, or an ``(H, W, C)`` / ``(H, W)`` array: uint8 pixels
  (scaled by ``scale``) or floats already in [0, 1] (pixels / 255); resized (antialiased bilinear or
  bicubic, see ``_signal.resize``) whole to the recipe's size, or first to ``resize`` (the shorter
  side, or a size) and center cropped (:func:`resize_plan`); in RGB order (arrays are taken as RGB;
  BGR where the recipe says), normalised with mean/std, laid out as the manifest says (NCHW or
  NHWC), and rounded to the input's dtype where it is an integer one (a model that takes uint8 pixels).
  A JPEG file mmedge opens itself is decoded at a reduced scale where the result stays at least
  :data:`DECODE_GAP` times the model's size (:func:`decode_reduced`).
* audio — a sound file path, :class:`Audio` / ``(wave, sample_rate)``, or a 1-D float array at
  the bundle's sample rate; waves are ``(samples,)`` or ``(channels, samples)``, mixed to mono
  if the bundle wants mono, resampled (windowed sinc, see ``_signal.resample``), cropped to the
  input's length, scaled to zero mean and unit variance where the recipe normalizes, and
  zero-padded; an integer input (a model that takes int16 PCM) gets PCM samples, and a
  ``whisper_log_mel`` recipe the wave's log-mel spectrogram (``_spectrogram.whisper_log_mel``).
* text — see :mod:`mmedge.runtime.text`.
* other — arrays without the batch axis are single items.

Reading files needs Pillow / soundfile (``pip install 'mmedge[files]'``), imported only then.
Every value is measured against :class:`~mmedge.runtime.limits.InputLimits` before it is
decoded or converted (files by their headers).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmedge.bundle import AudioPreprocess, ImagePreprocess, InputSpec
from mmedge.errors import InputError
from mmedge.runtime._signal import resample, resize, resize_rows
from mmedge.runtime._spectrogram import whisper_log_mel
from mmedge.runtime.limits import DEFAULT_LIMITS, InputLimits
from mmedge.runtime.text import Tokenizer, attention_mask, is_text, pad_ids, sequence_length, text_pair, tokenize

__all__ = [
    "DECODE_GAP",
    "MAX_AMPLITUDE",
    "MAX_SAMPLE_RATE",
    "MIN_AUDIO_SECONDS",
    "MIN_SAMPLE_RATE",
    "Audio",
    "AudioTensors",
    "TextTensors",
    "decode_reduced",
    "prepare",
    "prepare_audio",
    "prepare_text",
    "resize_plan",
]

MIN_SAMPLE_RATE = 1_000
MAX_SAMPLE_RATE = 768_000
MIN_AUDIO_SECONDS = 0.001  # a shorter wave (a 1-frame file) is a click, not audio; shorter clips are zero-padded
MAX_AMPLITUDE = 32_768.0  # louder than int16 full scale: PCM passed without scaling, not a float waveform
# a JPEG decodes at 1/2, 1/4 or 1/8 scale only while every side keeps this many times the model's
# largest side; the antialiased resize then filters what the decoder's scaling left
DECODE_GAP = 4
_FILES_HINT = "pip install 'mmedge[files]'"
_STRIP_BYTES = 2**18  # a PIL image's rows are converted to numpy at least this many bytes at a time


@dataclass(frozen=True)
class Audio:
    """A waveform with its sample rate: ``(samples,)`` or ``(channels, samples)`` floats."""

    wave: np.ndarray
    sample_rate: int


def prepare(
    spec: InputSpec,
    value: Any,
    tokenizer: Callable[[], Tokenizer | None],
    limits: InputLimits = DEFAULT_LIMITS,
) -> np.ndarray:
    """The batched model tensor for one input; ``tokenizer`` is called only if strings need it."""
    what = f"input {spec.name!r}"
    if isinstance(value, np.ndarray) and value.ndim == len(spec.shape):
        check_array(what, value, limits)
        return value
    items = _batch_items(spec, value, limits)
    if spec.modality == "text":
        return _text(spec, items, tokenizer, limits).ids
    if spec.modality == "image":
        pre = _recipe(spec, ImagePreprocess)
        return _as_dtype(_stacked(what, [_image(item, pre, spec, i, limits) for i, item in enumerate(items)]), spec)
    if spec.modality == "audio":
        return _audio_batch(spec, items, limits).samples
    for i, item in enumerate(items):
        if isinstance(item, np.ndarray):
            limits.check_elements(f"{what} item {i}", item.size, f"array of shape {list(item.shape)}")
    return _stack_arrays(items, spec)


@dataclass(frozen=True)
class TextTensors:
    """A text input's ids and, from raw items, the tensors derived from the same items.

    ``mask`` is int64 ``(batch, length)``: 1 for each token kept, 0 for padding. It comes from the
    item lengths, not from comparing ids with ``pad_id`` (tokenizers such as CLIP's pad with a real
    token). ``type_ids`` is int64 ``(batch, length)``: the tokenizer's segment ids of a text pair,
    0 elsewhere. A ready tensor has no known lengths or segments: both are None.
    """

    ids: np.ndarray
    mask: np.ndarray | None = None
    type_ids: np.ndarray | None = None


@dataclass(frozen=True)
class AudioTensors:
    """An audio input's samples and, for a recipe that keeps clip lengths, each clip's length: the
    batch is zero-padded to its longest clip, and the pipeline runs clips of other lengths alone."""

    samples: np.ndarray
    lengths: tuple[int, ...] | None = None  # None: every clip is padded to the input's length


def prepare_audio(spec: InputSpec, value: Any, limits: InputLimits = DEFAULT_LIMITS) -> AudioTensors:
    """An audio input's samples, with each clip's length where the recipe keeps lengths (``pad=False``)."""
    if isinstance(value, np.ndarray) and value.ndim == len(spec.shape):
        return AudioTensors(prepare(spec, value, _no_text, limits))
    return _audio_batch(spec, _batch_items(spec, value, limits), limits)


def _no_text() -> None:
    return None


def _audio_batch(spec: InputSpec, items: list[Any], limits: InputLimits) -> AudioTensors:
    pre = _recipe(spec, AudioPreprocess)
    clips = [_audio(item, pre, spec, i, limits) for i, item in enumerate(items)]
    lengths = tuple(c.shape[-1] for c in clips) if spec.keeps_length else None
    if lengths is not None and len(set(lengths)) > 1:
        longest = max(lengths)
        clips = [np.pad(c, [(0, 0)] * (c.ndim - 1) + [(0, longest - c.shape[-1])]) for c in clips]
    waves = _stacked(f"input {spec.name!r}", clips)
    return AudioTensors(_as_dtype(waves, spec, pcm=True), lengths)


def prepare_text(
    spec: InputSpec,
    value: Any,
    tokenizer: Callable[[], Tokenizer | None],
    limits: InputLimits = DEFAULT_LIMITS,
) -> TextTensors:
    """A text input's ids tensor and, when ``value`` is raw (strings, text pairs or id lists), its
    attention mask and token type ids."""
    if isinstance(value, np.ndarray) and value.ndim == len(spec.shape):
        return TextTensors(prepare(spec, value, tokenizer, limits))
    return _text(spec, _batch_items(spec, value, limits), tokenizer, limits)


def _batch_items(spec: InputSpec, value: Any, limits: InputLimits) -> list[Any]:
    what = f"input {spec.name!r}"
    items = _items(spec, value)
    if not items:
        raise InputError(f"{what}: got an empty list; pass at least one item")
    limits.check_batch(what, len(items))
    return items


def _text(
    spec: InputSpec, items: list[Any], tokenizer: Callable[[], Tokenizer | None], limits: InputLimits
) -> TextTensors:
    """Padded ids, the matching attention mask and token type ids of raw text items."""
    for i, item in enumerate(items):
        for text in text_pair(item) or (item,):
            if isinstance(text, str):
                limits.check_text(f"input {spec.name!r} item {i}", len(text))
    ids, types = tokenize(items, tokenizer() if any(is_text(i) for i in items) else None, spec, limits)
    pad = getattr(spec.preprocess, "pad_id", 0)
    length = sequence_length(spec)
    return TextTensors(pad_ids(ids, length, pad, spec.dtype), attention_mask(ids, length), pad_ids(types, length, 0))


def check_array(what: str, value: np.ndarray, limits: InputLimits) -> None:
    """Refuse a ready tensor over the batch or element limit (before it is validated or copied)."""
    if value.ndim:
        limits.check_batch(what, value.shape[0])
    limits.check_elements(what, value.size, f"array of shape {list(value.shape)}")


def _items(spec: InputSpec, value: Any) -> list[Any]:
    """The raw items in ``value``: a list is a batch, except a text item given as a list of ids."""
    if not isinstance(value, list):
        return [value]
    is_ids = spec.modality == "text" and all(isinstance(v, int | np.integer) for v in value)
    return [value] if is_ids and value else value


def _recipe(spec: InputSpec, kind: type) -> Any:
    if not isinstance(spec.preprocess, kind):
        raise InputError(
            f"input {spec.name!r}: the bundle has no {spec.modality} preprocessing, so raw {spec.modality} "
            f"cannot be converted; pass a {spec.dtype} tensor of shape {list(spec.shape)}"
        )
    return spec.preprocess


def _stacked(what: str, tensors: list[np.ndarray]) -> np.ndarray:
    """The batch of preprocessed items; they differ only if the model leaves the channel count open."""
    shapes = sorted({t.shape for t in tensors})
    if len(shapes) > 1:
        raise InputError(
            f"{what}: items have different shapes after preprocessing {[list(s) for s in shapes]}; "
            "give every item of a batch the same number of channels"
        )
    return np.stack(tensors)


def _as_dtype(tensor: np.ndarray, spec: InputSpec, *, pcm: bool = False) -> np.ndarray:
    """A preprocessed tensor in an integer input's dtype, rounded and clipped to its range (floats as they
    are): pixels as they are, waves in [-1, 1] (``pcm``) as PCM samples of that width (int16: × 32768; an
    unsigned type is offset to its middle, as 8-bit WAV is)."""
    dtype = np.dtype(spec.dtype)
    if dtype.kind not in "iu":
        return tensor
    bounds = np.iinfo(dtype)
    if pcm:
        half = (int(bounds.max) + 1) // 2 if dtype.kind == "u" else -int(bounds.min)
        tensor = tensor.astype(np.float64) * half + (half if dtype.kind == "u" else 0)
    return np.clip(np.rint(tensor), bounds.min, bounds.max).astype(dtype)


def _stack_arrays(items: list[Any], spec: InputSpec) -> np.ndarray:
    rank = len(spec.shape) - 1
    bad = [i for i, item in enumerate(items) if not isinstance(item, np.ndarray) or item.ndim != rank]
    if bad:
        raise InputError(
            f"input {spec.name!r}: items {bad} are not numpy arrays of rank {rank} (one item without the "
            f"batch axis); pass arrays, or one {spec.dtype} tensor of shape {list(spec.shape)}"
        )
    if len({item.shape for item in items}) > 1:
        raise InputError(f"input {spec.name!r}: items have different shapes {[list(i.shape) for i in items]}")
    return np.stack(items)


# ---------------------------------------------------------------------------------------------
# images


def _image(item: Any, pre: ImagePreprocess, spec: InputSpec, index: int, limits: InputLimits) -> np.ndarray:
    """One raw image → ``(C, H, W)`` (or ``(H, W, C)`` for NHWC) normalised float32."""
    channels = _channels(spec, pre)
    what = f"input {spec.name!r} item {index}"
    if isinstance(item, str | os.PathLike):
        item = _open_image(Path(item), what, limits, pre)
    if type(item).__module__.startswith("PIL."):
        return _layout(_pil_image(item, pre, channels, what, limits), pre.scale, pre, channels, what)
    if not isinstance(item, np.ndarray) or item.ndim not in (2, 3):
        found = f"array of shape {list(item.shape)}" if isinstance(item, np.ndarray) else type(item).__name__
        raise InputError(
            f"{what}: expected an image file path, a PIL image or an (H, W, C) array, found {found}; "
            f"a batch goes in a list, and a ready tensor must be {spec.dtype} {list(spec.shape)}"
        )
    limits.check_elements(what, item.size, f"image array of shape {list(item.shape)}")
    if item.size == 0:
        raise InputError(f"{what}: the image has no pixels (shape {list(item.shape)})")
    pixels = item if item.ndim == 3 else item[:, :, None]
    scale = _pixel_scale(pixels, pre, what)  # uint8 is resized as it is and the small result scaled
    resized, offset = resize_plan(pixels.shape[0], pixels.shape[1], pre)
    top = _clip_top(pre, 255.0 if pixels.dtype == np.uint8 else 1.0)
    out = resize(pixels, pre.size, resized=resized, offset=offset, kernel=pre.interpolation, clip=top)
    return _layout(out, scale, pre, channels, what)


def _pil_image(image: Any, pre: ImagePreprocess, channels: int, what: str, limits: InputLimits) -> np.ndarray:
    """A PIL image resized to ``pre.size`` (float32, 0–255); its rows are copied out a strip at a time."""
    width, height = image.size
    limits.check_elements(what, width * height * channels, f"image of {width}×{height} pixels")
    if not width or not height:
        raise InputError(f"{what}: the image has no pixels ({width}×{height})")
    mode = "L" if channels == 1 or image.mode == "L" else "RGB"  # a gray image stays 1 channel until resized
    image = image if image.mode == mode else image.convert(mode)
    resized, offset = resize_plan(height, width, pre)
    shape = (height, width, len(image.getbands()))
    return resize_rows(
        _PilRows(image),
        shape,
        pre.size,
        resized=resized,
        offset=offset,
        kernel=pre.interpolation,
        clip=_clip_top(pre, 255.0),
    )


def resize_plan(height: int, width: int, pre: ImagePreprocess) -> tuple[tuple[int, int], tuple[int, int]]:
    """The ``(height, width)`` a ``height × width`` image is resized to and the ``(top, left)`` of the
    recipe's ``size`` cropped from its center, as torchvision's ``Resize(pre.resize)`` +
    ``CenterCrop(pre.size)``: an int ``resize`` is the shorter side's length, the longer in proportion
    (rounded down); offsets are half the margin rounded as ``crop_rounding`` says (half to even, as
    torchvision; or down, as transformers' PIL processors). Without ``resize``: the whole image, stretched."""
    if pre.resize is None:
        return pre.size, (0, 0)
    if isinstance(pre.resize, tuple):
        resized = pre.resize
    else:
        side = pre.resize
        resized = (side, int(side * width / height)) if height <= width else (int(side * height / width), side)
    margins = (resized[0] - pre.size[0], resized[1] - pre.size[1])
    if pre.crop_rounding == "floor":
        return resized, (margins[0] // 2, margins[1] // 2)
    return resized, (round(margins[0] / 2), round(margins[1] / 2))


def _clip_top(pre: ImagePreprocess, top: float) -> float | None:
    """The pixel range's top where bicubic's overshoot is clipped after each pass, as Pillow's 8-bit
    resize (which every PIL-based eval transform runs) clips it; bilinear never overshoots."""
    return top if pre.interpolation == "bicubic" else None


class _PilRows:
    """``read(start, stop)`` of a PIL image's rows as ``(rows, W, C)`` uint8, converted a strip at a time.

    Converting a multi-megapixel photo to one array costs more than resizing it (a fresh buffer
    the size of the image); small strips, each the rows one block of the resize reads, stay in cache.
    """

    def __init__(self, image: Any) -> None:
        self._image = image
        self._strip = max(1, _STRIP_BYTES // (image.width * len(image.getbands())))
        self._first, self._rows = 0, np.empty((0, image.width, len(image.getbands())), np.uint8)

    def __call__(self, start: int, stop: int) -> np.ndarray:
        if start < self._first or stop > self._first + len(self._rows):
            end = min(self._image.height, max(stop, start + self._strip))
            rows = np.asarray(self._image.crop((0, start, self._image.width, end)))
            self._first, self._rows = start, rows if rows.ndim == 3 else rows[:, :, None]
        return self._rows[start - self._first : stop - self._first]


def _layout(pixels: np.ndarray, scale: float, pre: ImagePreprocess, channels: int, what: str) -> np.ndarray:
    """Resized ``(H, W, C)`` float32 pixels (this call's own) → scaled, normalised, in the recipe's layout."""
    pixels = _match_channels(pixels, channels, what)  # after resizing: a gray image is resized as 1 channel
    if pre.channel_order == "BGR":
        pixels = pixels[:, :, ::-1]  # a view: the in-place steps below still write this call's own buffer
    # in place: no temporaries the size of the tensor
    pixels *= np.float32(scale)
    pixels -= np.asarray(pre.mean, np.float32)
    pixels /= np.asarray(pre.std, np.float32)
    return np.ascontiguousarray(pixels.transpose(2, 0, 1) if pre.layout == "NCHW" else pixels)


def _channels(spec: InputSpec, pre: ImagePreprocess) -> int:
    axis = 1 if pre.layout == "NCHW" else 3
    dim = spec.shape[axis] if len(spec.shape) == 4 else None
    return dim if isinstance(dim, int) else len(pre.mean)


def decode_reduced(image: Any, pre: ImagePreprocess) -> None:
    """Ask a PIL image not yet loaded to decode at a reduced scale for a model of ``pre.size``.

    Why: JPEG's decoder can scale by 1/2, 1/4 or 1/8 inside its inverse DCT (Pillow's ``draft``,
    what ``Image.thumbnail`` uses), which costs a fraction of decoding every pixel of a 12-MP photo
    and of resizing them after. Kept to scales that leave :data:`DECODE_GAP` times the model's
    largest side, the resized tensor stays within 2 levels (of 255) of the full decode's, 0.2 on
    average (``benchmarks/results/preprocess.md``), about what two JPEG decoders differ by. Other
    formats ignore it. Only for images mmedge opens itself: ``draft`` changes the image object,
    which a caller's own PIL image must not see.
    """
    side = DECODE_GAP * max(*pre.size, *pre.resize_sides)  # both axes: an EXIF-rotated photo swaps them
    image.draft(None, (side, side))


def _open_image(path: Path, what: str, limits: InputLimits, pre: ImagePreprocess) -> Any:
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as e:
        raise InputError(f"{what}: reading image files needs Pillow: {_FILES_HINT} (or pass an array)") from e
    _check_file(path, what, "image")
    try:
        with Image.open(path) as image:
            width, height = image.size
            bands = len(image.getbands())
            limits.check_elements(what, width * height * bands, f"image file {path} of {width}×{height} pixels")
            decode_reduced(image, pre)
            image.load()
            return image
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise InputError(f"{what}: {path} declares an image too large to decode safely ({e})") from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:  # Pillow's plugins raise all of these
        raise InputError(f"{what}: {path} is not a readable image ({e})") from e


def _check_file(path: Path, what: str, kind: str) -> None:
    """A readable regular file at ``path``, or an InputError saying why not."""
    try:
        is_file = path.is_file()
    except (OSError, ValueError) as e:  # a name too long for the file system, a NUL byte
        raise InputError(f"{what}: {kind} file name {str(path)[:80]!r} is not a usable path ({e})") from e
    if not is_file:
        raise InputError(f"{what}: {kind} file {str(path)[:200]} does not exist (or is not a file)")


def _pixel_scale(pixels: np.ndarray, pre: ImagePreprocess, what: str) -> float:
    """The recipe's pixel scale for these pixels: ``scale`` for uint8; floats in [0, 1] are uint8 / 255,
    so ``scale * 255`` (1 for the default 1/255), after checking their range."""
    if pixels.dtype == np.uint8:
        return pre.scale
    if pixels.dtype.kind != "f":
        raise InputError(f"{what}: image arrays must be uint8 pixels or floats in [0, 1], found {pixels.dtype}")
    if not np.isfinite(pixels).all():
        raise InputError(f"{what}: the image contains NaN or Inf")
    low, high = float(pixels.min()), float(pixels.max())
    if low < 0.0 or high > 1.0:
        raise InputError(
            f"{what}: float images must be in [0, 1], found values from {low:g} to {high:g}; "
            "pass uint8 pixels, or divide by 255"
        )
    return pre.scale * 255.0


def _match_channels(pixels: np.ndarray, channels: int, what: str) -> np.ndarray:
    have = pixels.shape[2]
    if have == channels:
        return pixels
    if have == 1:
        return np.repeat(pixels, channels, axis=2)
    if have == 4 and channels == 3:
        return pixels[:, :, :3]  # drop alpha
    raise InputError(f"{what}: the model takes {channels}-channel images, found {have} channels")


# ---------------------------------------------------------------------------------------------
# audio


def _audio(item: Any, pre: AudioPreprocess, spec: InputSpec, index: int, limits: InputLimits) -> np.ndarray:
    """One raw waveform → float32 of the input's length, mono if the recipe says so."""
    what = f"input {spec.name!r} item {index}"
    wave, rate = _wave_and_rate(item, pre, what, limits)
    _check_rate(rate, what)
    limits.check_elements(what, wave.size, f"wave of shape {list(wave.shape)}")
    wave = wave[None, :] if wave.ndim == 1 else wave
    if wave.size == 0:
        raise InputError(f"{what}: the waveform has no samples")
    low, high = float(wave.min()), float(wave.max())  # NaN propagates; no temporary the size of the wave
    if not (np.isfinite(low) and np.isfinite(high)) or max(-low, high) > MAX_AMPLITUDE:
        raise InputError(
            f"{what}: waveforms must be finite floats in [-1, 1], found values from {low:g} to {high:g}; "
            "divide int16 PCM by 32768 (int32 by 2**31)"
        )
    _check_length(wave, rate, item, what)
    if not pre.mono:
        wave = _match_audio_channels(wave, spec, what)
    elif len(wave) > 1:  # float32, as the resampler computes: no float64 copy of a long wave
        wave = wave.mean(axis=0, keepdims=True, dtype=np.float32)
    fixed = isinstance(spec.shape[-1], int) and not pre.spectral
    length = spec.shape[-1] if fixed else round(pre.sample_rate * pre.max_seconds)
    wave = resample(wave, rate, pre.sample_rate, max_samples=length)
    if spec.keeps_length:  # a spectrogram needs a frame's worth: shorter clips are zero-padded to it
        length = min(length, max(wave.shape[-1], _least_samples(pre)))
    fitted = np.zeros((wave.shape[0], length), np.float32)
    kept = wave[:, :length]
    fitted[:, : kept.shape[1]] = _normalized(kept) if pre.normalize else kept
    if pre.spectral:
        return whisper_log_mel(fitted[0], pre)
    return fitted[0] if pre.mono and len(spec.shape) != 3 else fitted  # (batch, 1, samples) keeps its channel


def _least_samples(pre: AudioPreprocess) -> int:
    """The fewest samples a clip is prepared from: one spectrogram frame (and the STFT's reflect padding)."""
    return max(pre.hop_length, pre.n_fft // 2 + 1) if pre.spectral else 1


def _normalized(wave: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance per channel, as transformers' ``zero_mean_unit_var_norm`` (float32, eps 1e-7)."""
    centered = wave - wave.mean(axis=1, keepdims=True)
    return centered / np.sqrt(wave.var(axis=1, keepdims=True) + np.float32(1e-7))


def _check_length(wave: np.ndarray, rate: int, item: Any, what: str) -> None:
    """A ``(channels, samples)`` wave of at least MIN_AUDIO_SECONDS; an array that looks transposed is refused
    (a file's layout is known: a 1-frame stereo file is short audio, not a transposed wave)."""
    shortest = int(np.ceil(rate * MIN_AUDIO_SECONDS))
    from_file = isinstance(item, str | os.PathLike)
    if not from_file and wave.shape[0] > wave.shape[1] and wave.shape[0] >= shortest:
        raise InputError(
            f"{what}: a wave must be (samples,) or (channels, samples), found shape {list(wave.shape)}, "
            "which looks like (samples, channels); transpose it"
        )
    if wave.shape[1] < shortest:
        found = f"{item} holds" if from_file else "the wave has"
        raise InputError(
            f"{what}: {found} {wave.shape[1]} sample(s) per channel ({wave.shape[1] / rate:.3g} s at {rate} Hz), "
            f"too short to be audio: give at least {MIN_AUDIO_SECONDS * 1000:g} ms ({shortest} samples at {rate} Hz)"
        )


def _match_audio_channels(wave: np.ndarray, spec: InputSpec, what: str) -> np.ndarray:
    """A multi-channel wave with the model's channel count: a mono wave is copied to every channel."""
    want = spec.shape[1] if len(spec.shape) == 3 else None
    have = wave.shape[0]
    if not isinstance(want, int) or have == want:
        return wave
    if have == 1:
        return np.repeat(wave, want, axis=0)
    raise InputError(f"{what}: the model takes {want}-channel audio, found {have} channels")


def _wave_and_rate(item: Any, pre: AudioPreprocess, what: str, limits: InputLimits) -> tuple[np.ndarray, Any]:
    if isinstance(item, str | os.PathLike):
        return _read_sound(Path(item), what, limits)
    if isinstance(item, tuple) and len(item) == 2:
        item = Audio(*item)
    wave, rate = (item.wave, item.sample_rate) if isinstance(item, Audio) else (item, pre.sample_rate)
    if not isinstance(wave, np.ndarray) or wave.ndim not in (1, 2):
        found = f"array of shape {list(wave.shape)}" if isinstance(wave, np.ndarray) else type(wave).__name__
        raise InputError(
            f"{what}: expected a sound file path, Audio(wave, sample_rate), (wave, sample_rate) or a 1-D "
            f"float array at {pre.sample_rate} Hz, found {found}; a batch goes in a list"
        )
    if wave.dtype.kind != "f":
        raise InputError(
            f"{what}: waveforms must be floats in [-1, 1], found {wave.dtype}; for int16 PCM use wave / 32768"
        )
    return wave, rate


def _check_rate(rate: Any, what: str) -> None:
    if (
        isinstance(rate, bool)
        or not isinstance(rate, int | np.integer)
        or not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE
    ):
        raise InputError(
            f"{what}: wrong sample rate: expected an int number of Hz in [{MIN_SAMPLE_RATE}, {MAX_SAMPLE_RATE}], "
            f"found {rate!r} (give Hz, e.g. 16000, not kHz)"
        )


def _read_sound(path: Path, what: str, limits: InputLimits) -> tuple[np.ndarray, int]:
    try:
        import soundfile
    except ImportError as e:
        raise InputError(f"{what}: reading sound files needs soundfile: {_FILES_HINT} (or pass an array)") from e
    _check_file(path, what, "sound")
    try:
        with soundfile.SoundFile(str(path)) as f:
            limits.check_elements(what, f.frames * f.channels, f"sound file {path} of {f.frames} frames")
            data = f.read(dtype="float32", always_2d=True)
            rate = f.samplerate
    except (RuntimeError, TypeError, ValueError) as e:  # LibsndfileError is a RuntimeError
        raise InputError(f"{what}: {path} is not a readable sound file ({e})") from e
    return data.T, int(rate)
