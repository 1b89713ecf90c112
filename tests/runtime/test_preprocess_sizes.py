"""Preprocessing at the sizes users send: multi-megapixel photos and a minute of audio.

The runtime's resize and resample apply banded filters as blocked matrix products in float32;
these tests hold them to float64 references (the dense einsum resize and the gathered-taps
resampler they replaced), to Pillow's float resize, and to tones, at real sizes. Correctness
only: timings are in ``benchmarks/preprocess.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile
from PIL import Image

from mmedge.bundle import AudioPreprocess, ImagePreprocess, InputSpec
from mmedge.runtime._signal import _resample_chunked, resample, resize
from mmedge.runtime.preprocess import decode_reduced, prepare

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def _no_tokenizer() -> None:
    raise AssertionError("no strings here")


def _image_spec(size: tuple[int, int]) -> InputSpec:
    return InputSpec("image", "image", "float32", ("batch", 3, *size), preprocess=ImagePreprocess(size=size))


def _photo(height: int, width: int) -> np.ndarray:
    """A smooth synthetic photo with a fine stripe pattern (which aliases unless the resize averages)."""
    y, x = np.ogrid[0:height, 0:width]
    u, v = x / width, y / height
    r = 120 + 90 * np.sin(7 * u + 3 * v) + 20 * np.sin(0.9 * x)
    g = 120 + 80 * np.cos(9 * v - 2 * u) + 20 * np.sin(1.3 * y)
    b = 250 * (u + v) / 2 + 0 * y
    return np.clip(np.stack(np.broadcast_arrays(r, g, b), axis=-1), 0, 255).astype(np.uint8)


def _reference_resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The float64 implementation the runtime replaced: dense triangle weights, one einsum (here
    contracted pairwise, ``optimize=True``, which it lacked: its cost grew with input × output size)."""

    def weights(n_in: int, n_out: int) -> np.ndarray:
        scale = n_in / n_out
        support = max(scale, 1.0)
        centers = (np.arange(n_out) + 0.5) * scale
        distance = np.abs(np.arange(n_in)[None, :] + 0.5 - centers[:, None])
        w = np.clip(1.0 - distance / support, 0.0, None)
        return w / w.sum(axis=1, keepdims=True)

    rows, cols = weights(image.shape[0], size[0]), weights(image.shape[1], size[1])
    return np.einsum("oh,hwc,pw->opc", rows, image.astype(np.float64), cols, optimize=True)


def _pillow_float_resize(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """Pillow's BILINEAR on each band in mode "F" (float, no rounding to uint8 between passes)."""
    bands = [band.convert("F").resize(size[::-1], Image.BILINEAR) for band in image.split()]
    return np.stack([np.asarray(b) for b in bands], axis=-1)


# -- resize: new vs the float64 implementation it replaced -----------------------------------


@pytest.mark.parametrize(
    ("shape", "size"),
    [
        pytest.param((37, 53, 3), (8, 8), id="shrink"),
        pytest.param((480, 640, 3), (64, 64), id="photo-to-64"),
        pytest.param((300, 200, 4), (224, 224), id="rgba-mixed"),
        pytest.param((12, 9, 1), (224, 224), id="gray-grow"),
        pytest.param((400, 3, 3), (4, 300), id="wide-grow-tall-shrink"),
        pytest.param((3, 400, 2), (300, 4), id="tall-grow-wide-shrink"),
        pytest.param((50, 700, 3), (50, 9), id="only-width"),
        pytest.param((700, 50, 3), (1, 50), id="only-height-to-one"),
    ],
)
@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.float64], ids=lambda d: np.dtype(d).name)
def test_resize_matches_the_float64_reference(shape: tuple[int, ...], size: tuple[int, int], dtype: type) -> None:
    rng = np.random.default_rng(sum(shape))
    unit = rng.random(shape)
    image = (unit * 255).astype(np.uint8) if dtype is np.uint8 else unit.astype(dtype)
    out = resize(image, size)
    assert out.dtype == np.float32
    assert out.shape == (*size, shape[2])
    scale = 255.0 if dtype is np.uint8 else 1.0
    np.testing.assert_allclose(out / scale, _reference_resize(image, size) / scale, rtol=0, atol=1e-6)


# -- photos at real sizes ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("width", "height", "suffix", "size"),
    [
        pytest.param(4000, 3000, "jpg", (224, 224), id="12MP-jpeg-to-224"),
        pytest.param(1920, 1080, "png", (224, 224), id="1080p-png-to-224"),
        pytest.param(1920, 1080, "png", (64, 64), id="1080p-png-to-64"),
    ],
)
def test_photo_files_at_real_sizes_match_pillow(
    tmp_path: Path, width: int, height: int, suffix: str, size: tuple[int, int]
) -> None:
    """The file's pixels as decoded (a JPEG at its reduced scale) resized as Pillow's float resize does."""
    path = tmp_path / f"photo.{suffix}"
    Image.fromarray(_photo(height, width)).save(path, quality=90)
    spec = _image_spec(size)
    out = prepare(spec, str(path), _no_tokenizer)
    assert out.shape == (1, 3, *size)
    with Image.open(path) as image:
        decode_reduced(image, spec.preprocess)
        image.load()
        expected = _pillow_float_resize(image, size) / 255.0
        decoded = np.asarray(image)
    got = out[0].transpose(1, 2, 0) * STD + MEAN
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    # an array of the same pixels goes through the same filter: the same tensor, bit for bit
    np.testing.assert_array_equal(prepare(spec, decoded, _no_tokenizer), out)


@pytest.mark.parametrize(
    ("width", "height", "size", "decoded"),
    [
        pytest.param(4000, 3000, (224, 224), (2000, 1500), id="12MP-to-224"),
        pytest.param(4000, 3000, (64, 64), (500, 375), id="12MP-to-64"),
        pytest.param(1920, 1080, (64, 64), (480, 270), id="1080p-to-64"),
        pytest.param(1920, 1080, (224, 224), (1920, 1080), id="1080p-to-224-full"),
    ],
)
def test_a_jpeg_decodes_at_a_reduced_scale_within_two_levels_of_the_full_decode(
    tmp_path: Path, width: int, height: int, size: tuple[int, int], decoded: tuple[int, int]
) -> None:
    """JPEG's DCT scaling (1/2, 1/4, 1/8) keeps DECODE_GAP times the model's side, so the tensor
    stays within 2 of 255 levels of the full decode's (0.2 on average), at a fraction of the cost."""
    path = tmp_path / "photo.jpg"
    Image.fromarray(_photo(height, width)).save(path, quality=90)
    spec = _image_spec(size)
    with Image.open(path) as image:
        decode_reduced(image, spec.preprocess)
        image.load()
        assert image.size == decoded
    with Image.open(path) as image:
        image.load()
        full = prepare(spec, image, _no_tokenizer)  # a caller's own PIL image is never drafted
    levels = np.abs(prepare(spec, str(path), _no_tokenizer) - full)[0] * STD[:, None, None] * 255
    assert levels.max() <= 2.0
    assert levels.mean() <= 0.2


def test_gray_photo_is_resized_as_one_channel_and_repeated(tmp_path: Path) -> None:
    path = tmp_path / "gray.png"
    gray = _photo(1080, 1920)[:, :, 0]
    Image.fromarray(gray, mode="L").save(path)
    out = prepare(_image_spec((224, 224)), path, _no_tokenizer)[0].transpose(1, 2, 0) * STD + MEAN
    with Image.open(path) as image:
        expected = np.asarray(image.convert("F").resize((224, 224), Image.BILINEAR)) / 255.0
    for channel in range(3):
        np.testing.assert_allclose(out[:, :, channel], expected, rtol=0, atol=1e-5)


# -- a minute of audio -------------------------------------------------------------------------


def _direct_resample(wave: np.ndarray, rate_in: int, rate_out: int, outputs: np.ndarray) -> np.ndarray:
    """The documented filter evaluated directly in float64 at chosen output samples: a Kaiser
    (beta 8.6) windowed sinc with 16 zero crossings, cutoff at 95% of the lower Nyquist frequency."""
    cutoff = 0.95 * min(1.0, rate_out / rate_in)
    half_width = 16 / cutoff
    out = []
    for j in outputs:
        t = j * rate_in / rate_out
        n = np.arange(max(0, int(np.ceil(t - half_width))), min(len(wave), int(np.floor(t + half_width)) + 1))
        d = t - n
        window = np.i0(8.6 * np.sqrt(np.clip(1 - (d / half_width) ** 2, 0, None))) / np.i0(8.6)
        out.append(np.sum(wave[n] * cutoff * np.sinc(cutoff * d) * window))
    return np.array(out)


def test_a_minute_of_stereo_wav_matches_the_direct_filter_and_keeps_tones(tmp_path: Path) -> None:
    rate, seconds = 44100, 60
    t = np.arange(rate * seconds) / rate
    left = 0.4 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 10_000 * t)  # 10 kHz: above 8 kHz
    right = 0.4 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 3_000 * t)
    soundfile.write(tmp_path / "minute.wav", np.stack([left, right], axis=1).astype(np.float32), rate, subtype="FLOAT")
    pre = AudioPreprocess(sample_rate=16000, max_seconds=seconds)
    spec = InputSpec("audio", "audio", "float32", ("batch", 16000 * seconds), preprocess=pre)
    out = prepare(spec, tmp_path / "minute.wav", _no_tokenizer)[0]
    assert out.shape == (16000 * seconds,)
    mono = (left.astype(np.float32).astype(np.float64) + right.astype(np.float32)) / 2
    samples = np.random.default_rng(0).integers(0, len(out), 200)
    np.testing.assert_allclose(out[samples], _direct_resample(mono, rate, 16000, samples), rtol=0, atol=2e-6)
    tones = 0.4 * np.sin(2 * np.pi * 440 * np.arange(len(out)) / 16000)
    tones += 0.05 * np.sin(2 * np.pi * 3_000 * np.arange(len(out)) / 16000)
    np.testing.assert_allclose(out[200:-200], tones[200:-200], rtol=0, atol=1e-4)  # the 10 kHz tone is gone


@pytest.mark.parametrize(
    ("rate_in", "rate_out"), [(44100, 16000), (48000, 16000), (22050, 16000), (8000, 16000), (16000, 44100)]
)
def test_polyphase_resampling_matches_the_gathered_taps_it_replaced(rate_in: int, rate_out: int) -> None:
    wave = np.random.default_rng(rate_in).uniform(-1, 1, (2, rate_in * 10))  # 10 s of stereo noise
    up, down = rate_out // np.gcd(rate_in, rate_out), rate_in // np.gcd(rate_in, rate_out)
    out = resample(wave, rate_in, rate_out)
    np.testing.assert_allclose(out, _resample_chunked(wave, up, down, n_out=out.shape[-1]), rtol=0, atol=2e-6)
    np.testing.assert_array_equal(resample(wave, rate_in, rate_out, max_samples=12345), out[:, :12345])
