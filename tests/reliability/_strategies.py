"""Hypothesis strategies for values "from the wild": anything a user, a file or a network may hand the runtime.

Arrays of every dtype numpy has a name for (bool, ints, uint64, float16, complex, datetime,
strings, bytes, objects, big-endian), shapes from 0-d to 5-d with zero-size dims, NaN/Inf and
extreme values, zero-copy views far over the size limits, tensors shaped like the tiny
bundle's inputs but with wild values, raw images (arrays in any range, PIL images of every
mode), waves with any sample rate, strings of any unicode, id lists of any integers, nested
and mixed lists, and plain Python junk.

``FUZZ`` runs a property on 2,000 examples (about 1 ms per Pipeline call on the tiny bundle),
derandomized so CI is reproducible; set ``MMEDGE_FUZZ_RANDOM=1`` to explore new seeds.
"""

from __future__ import annotations

import os

import hypothesis.extra.numpy as hnp
import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from PIL import Image

from mmedge.runtime import Audio

FUZZ_EXAMPLES = 2000
FUZZ = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    derandomize=os.environ.get("MMEDGE_FUZZ_RANDOM") != "1",
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
DTYPES = [
    np.dtype(d)
    for d in (
        "bool",
        "int8",
        "uint8",
        "int16",
        "uint16",
        "int32",
        "uint32",
        "int64",
        "uint64",
        "float16",
        "float32",
        "float64",
        "complex64",
        "complex128",
        "datetime64[s]",
        "timedelta64[ms]",
        "U3",
        "S2",
        ">f4",
        ">i8",
    )
]
SHAPES = hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=5)
OBJECTS = st.one_of(st.none(), st.integers(), st.floats(), st.text(max_size=3), st.binary(max_size=3))
# Far over the default limit of 2**26 elements, yet free: broadcast views of one scalar.
HUGE_SHAPES = [(2**27,), (1, 2**27), (12_000, 12_000, 3), (4097, 3, 8, 8), (2, 3, 6000, 6000), (5000, 2**15)]

PIL_MODES = ["L", "RGB", "RGBA", "P", "1", "I", "F", "CMYK", "LA", "I;16", "YCbCr", "HSV", "LAB"]

text_any = st.text(alphabet=st.characters(exclude_categories=()), max_size=40)


@st.composite
def any_array(draw: st.DrawFn, shape: st.SearchStrategy = SHAPES) -> np.ndarray:
    dtype = draw(st.sampled_from([*DTYPES, np.dtype(object)]))
    if dtype.kind == "O":
        return draw(hnp.arrays(dtype, shape, elements=OBJECTS))
    return draw(hnp.arrays(dtype, shape))


@st.composite
def huge_view(draw: st.DrawFn) -> np.ndarray:
    dtype = draw(st.sampled_from([np.dtype(d) for d in ("uint8", "float32", "float64", "int64")]))
    return np.broadcast_to(np.zeros((), dtype), draw(st.sampled_from(HUGE_SHAPES)))


def floats_wild(dtype: str = "float32") -> st.SearchStrategy[float]:
    """Any float of ``dtype``, NaN and ±Inf included, often its extremes."""
    info = np.finfo(dtype)
    extremes = [0.0, 1.0, -1.0, float(info.max), float(info.min), float(info.tiny), float(info.smallest_subnormal)]
    return st.floats(width=info.bits, allow_nan=True, allow_infinity=True) | st.sampled_from(extremes)


@st.composite
def model_tensor(draw: st.DrawFn, key: str, batch: int) -> np.ndarray:
    """A tensor with (nearly) the tiny bundle's dtype and shape for ``key``, holding wild values."""
    if key == "text":
        seq = draw(st.integers(0, 12))
        ids = st.integers(-(2**63), 2**63 - 1) | st.integers(-2, 10)
        return draw(hnp.arrays(np.int64, (batch, seq), elements=ids))
    if key == "image":
        side = draw(st.sampled_from([8, 8, 8, 4, 1]))
        return draw(hnp.arrays(np.float32, (batch, 3, side, 8), elements=floats_wild()))
    samples = draw(st.integers(0, 400))
    elements = floats_wild() | st.floats(-1, 1, width=32)
    return draw(hnp.arrays(np.float32, (batch, samples), elements=elements))


@st.composite
def raw_image(draw: st.DrawFn) -> object:
    """One raw image: an (H, W[, C]) array of any dtype and range, or a PIL image of any mode."""
    h, w = draw(st.integers(0, 40)), draw(st.integers(0, 40))
    channels = draw(st.sampled_from([(), (1,), (2,), (3,), (4,), (5,)]))
    dtype = draw(st.sampled_from(["uint8", "uint8", "float32", "float64", "float16", "int16", "bool"]))
    elements = st.floats(0, 1, width=np.dtype(dtype).itemsize * 8) if dtype.startswith("float") else None
    if dtype.startswith("float") and draw(st.booleans()):
        elements = floats_wild(dtype)
    pixels = draw(hnp.arrays(np.dtype(dtype), (h, w, *channels), elements=elements))
    if draw(st.integers(0, 3)) == 0 and dtype == "uint8" and h and w and channels in ((), (3,), (4,)):
        return Image.fromarray(pixels).convert(draw(st.sampled_from(PIL_MODES)))
    return pixels


@st.composite
def raw_wave(draw: st.DrawFn) -> object:
    """One raw waveform: a 1-D/2-D array of any dtype, optionally with a sample rate of any kind."""
    shape = draw(st.sampled_from([(0,), (1,), (7,), (160,), (333,), (2, 100), (3, 2), (1, 0), (2, 2, 2)]))
    dtype = draw(st.sampled_from(["float32", "float32", "float64", "float16", "int16", "complex64"]))
    elements = floats_wild(dtype) if dtype.startswith("float") else None
    if dtype.startswith("float") and draw(st.booleans()):
        elements = st.floats(-1, 1, width=np.dtype(dtype).itemsize * 8)
    wave = draw(hnp.arrays(np.dtype(dtype), shape, elements=elements))
    rate = st.integers(-10, 10**7) | st.sampled_from([8000, 16000, 44100, 48000, 22050, 1000, 768_000]) | OBJECTS
    form = draw(st.integers(0, 2))
    if form == 0:
        return wave
    return (wave, draw(rate)) if form == 1 else Audio(wave, draw(rate))


def raw_text() -> st.SearchStrategy[object]:
    """A string of any unicode, or a list of ids of any integers, or an id array."""
    ids = st.lists(st.integers(-(2**70), 2**70) | st.integers(0, 7), max_size=20)
    return text_any | ids | hnp.arrays(st.sampled_from(DTYPES), st.integers(0, 12))


def junk() -> st.SearchStrategy[object]:
    """Python values that are no kind of input."""
    return OBJECTS | st.dictionaries(text_any, OBJECTS, max_size=3) | st.tuples(OBJECTS, OBJECTS, OBJECTS)


def wild_value(key: str, batch: int) -> st.SearchStrategy[object]:
    """Anything at all for input ``key``: raw forms of every modality, tensors, arrays, junk, lists of them."""
    item = st.one_of(raw_image(), raw_wave(), raw_text(), any_array(), junk())
    lists = st.recursive(item, lambda inner: st.lists(inner, max_size=4), max_leaves=6)
    return st.one_of(
        model_tensor(key, batch),
        any_array(),
        huge_view(),
        item,
        lists,
        st.lists(huge_view(), min_size=1, max_size=2),
        st.lists(st.just(0), min_size=4097, max_size=4097),  # one item over the default batch limit
    )
