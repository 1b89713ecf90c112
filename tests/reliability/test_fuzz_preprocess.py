"""Fuzzing the preprocessing directly: ``prepare`` for every kind of input spec, and its numeric kernels.

``prepare`` must return a tensor of the spec's dtype and rank (for raw images, waves and text
with the fixed dims filled in) or raise an InputError naming the input, for any value. The kernels keep their invariants on any finite
input: ``resize`` is a convex combination of pixels (output within the input's range),
``resample`` is finite and stopping it early (``max_samples``) only crops it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from reliability._strategies import FUZZ, text_any, wild_value
from reliability.test_fuzz_pipeline import outcome

from mmedge.bundle import AudioPreprocess, ImagePreprocess, InputSpec, TextPreprocess, load_bundle
from mmedge.runtime._signal import resample, resize
from mmedge.runtime.preprocess import prepare
from mmedge.runtime.text import Tokenizer, load_tokenizer


@pytest.fixture(scope="module")
def specs(shared_bundle: Path) -> dict[str, InputSpec]:
    """The tiny bundle's inputs, plus variants: NHWC, grayscale, stereo, fixed text length, no recipe, "other"."""
    base = {i.name: i for i in load_bundle(shared_bundle).manifest.inputs}
    image, audio, text = base["image"], base["audio"], base["text"]
    variants = {
        "image_nhwc": dataclasses.replace(
            image, shape=("batch", 8, 8, 3), preprocess=ImagePreprocess(size=(8, 8), layout="NHWC")
        ),
        "image_gray": dataclasses.replace(
            image, shape=("batch", 1, 5, 7), preprocess=ImagePreprocess(size=(5, 7), mean=(0.5,), std=(0.25,))
        ),
        "image_bare": dataclasses.replace(image, preprocess=None),
        "audio_stereo": dataclasses.replace(
            audio, shape=("batch", 2, 100), preprocess=AudioPreprocess(sample_rate=8000, max_seconds=1.0, mono=False)
        ),
        "text_fixed": dataclasses.replace(text, dtype="int32", shape=("batch", 5)),
        "text_bare": dataclasses.replace(text, preprocess=TextPreprocess(max_length=4)),
        "other": InputSpec("other", "other", "float32", ("batch", 2, 3)),
    }
    return {**base, **{k: dataclasses.replace(v, name=k) for k, v in variants.items()}}


@pytest.fixture(scope="module")
def tokenizer(shared_bundle: Path) -> Tokenizer:
    bundle = load_bundle(shared_bundle)
    found = load_tokenizer(bundle, bundle.manifest.input("text"))
    assert found is not None
    return found


@FUZZ
@given(data=st.data())
def test_prepare_gives_the_spec_tensor_or_an_input_error(
    specs: dict[str, InputSpec], tokenizer: Tokenizer, data: st.DataObject
) -> None:
    spec = specs[data.draw(st.sampled_from(sorted(specs)), label="spec")]
    value = data.draw(wild_value(spec.modality, data.draw(st.integers(1, 3))), label="value")
    tensor = outcome(lambda: prepare(spec, value, lambda: tokenizer), spec.name)
    if tensor is None or tensor is value:  # a ready tensor passes through, to be validated by the Pipeline
        return
    assert isinstance(tensor, np.ndarray)
    assert tensor.ndim == len(spec.shape)
    assert tensor.shape[0] >= 1
    if spec.modality == "other":  # items are only stacked; the Pipeline validates dtype and dims
        return
    assert tensor.dtype == np.dtype(spec.dtype)
    for want, got in zip(spec.shape, tensor.shape, strict=True):
        assert not isinstance(want, int) or want == got


@st.composite
def finite_image(draw: st.DrawFn) -> np.ndarray:
    shape = (draw(st.integers(1, 16)), draw(st.integers(1, 16)), draw(st.integers(1, 4)))
    return draw(hnp.arrays(np.float32, shape, elements=st.floats(-1e6, 1e6, width=32)))


@FUZZ
@given(image=finite_image(), height=st.integers(1, 30), width=st.integers(1, 30))
def test_resize_stays_within_the_input_range(image: np.ndarray, height: int, width: int) -> None:
    out = resize(image, (height, width))
    assert out.shape == (height, width, image.shape[2])
    assert np.isfinite(out).all()
    slack = 1e-4 * max(1.0, float(np.abs(image).max()))
    assert out.min() >= image.min() - slack
    assert out.max() <= image.max() + slack


RATES = st.sampled_from([1000, 8000, 11025, 16000, 22050, 44100, 48000, 96000]) | st.integers(1000, 100_000)
WAVE_SHAPES = st.tuples(st.integers(0, 120)) | st.tuples(st.integers(1, 3), st.integers(0, 60))


@FUZZ
@given(
    wave=hnp.arrays(np.float64, WAVE_SHAPES, elements=st.floats(-1, 1)),
    rate_in=RATES,
    rate_out=RATES,
    keep=st.integers(1, 400),
)
def test_resample_is_finite_and_stopping_early_only_crops(
    wave: np.ndarray, rate_in: int, rate_out: int, keep: int
) -> None:
    full = resample(wave, rate_in, rate_out)
    assert full.shape[:-1] == wave.shape[:-1]
    assert abs(full.shape[-1] - wave.shape[-1] * rate_out / rate_in) <= 1
    assert np.isfinite(full).all()
    assert np.abs(full).max(initial=0.0) <= 2.0  # a windowed sinc overshoots a bounded signal only a little
    np.testing.assert_array_equal(resample(wave, rate_in, rate_out, max_samples=keep), full[..., :keep])


@FUZZ
@given(text=text_any)
def test_vocabulary_tokenizes_any_unicode(tokenizer: Tokenizer, text: str) -> None:
    ids = tokenizer.encode(text)
    assert all(isinstance(i, int) and 0 <= i < tokenizer.vocab_size for i in ids)
    assert len(ids) == len(text.lower().split())
