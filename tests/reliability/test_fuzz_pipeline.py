"""Fuzzing ``Pipeline.run`` and ``Pipeline.encode``: anything in, a valid result or a typed error out.

Each property feeds the tiny bundle's Pipeline values "from the wild" (see ``_strategies``) and
accepts exactly two outcomes: a valid result (the declared outputs, float32, finite, with the
call's batch size) or an :class:`~mmedge.errors.MMEdgeError` whose message names the input it is
about. Any other exception — a raw numpy, onnxruntime, Pillow or soundfile error, a crash —
fails the property; a hang fails the test run.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from reliability._strategies import FUZZ, OBJECTS, any_array, junk, text_any, wild_value
from tinybundle import tiny_inputs

from mmedge.errors import InputError, MMEdgeError
from mmedge.runtime import Pipeline

KEYS = ("text", "image", "audio")
RANKS = {"text": 2, "image": 4, "audio": 2}  # of the model tensors; other arrays are raw items
ENCODERS = {"text": "text_encoder", "image": "image_encoder", "audio": "audio_encoder"}
FEATURES = tuple(f"{m}_features" for m in KEYS)
QUALIFIED = tuple(f"{ENCODERS[m]}.{m}_features" for m in KEYS)
NEAR_MISSES = ("Image", "images", "img", "video", "text ", "", "logits", "fusion_head", "inputs", "audio_encoder")


def outcome(call: Callable[[], dict[str, np.ndarray]], named: str) -> dict[str, np.ndarray] | None:
    """The result of ``call``, or None if it raised an MMEdgeError whose message names ``named``.

    A name appears as itself or, when it has odd characters or is long, as the start of its repr.
    """
    try:
        return call()
    except MMEdgeError as e:
        message = str(e)
        as_word = re.search(rf"(?<!\w){re.escape(named)}(?!\w)", message)
        assert as_word or repr(named)[:30] in message, f"{named!r} not named in: {message}"
        assert len(message) < 20_000, "error messages stay readable"
        return None


def assert_valid(result: dict[str, np.ndarray], names: set[str], batch: int | None, width: int) -> None:
    """The declared outputs, float32 and finite, of shape (batch, width); batch None: any one batch size."""
    assert set(result) == names
    batches = {v.shape[0] for v in result.values()}
    for value in result.values():
        assert value.dtype == np.float32
        assert value.shape == (batch or min(batches), width)
        assert np.isfinite(value).all()
    assert len(batches) == 1
    assert min(batches) >= 1


@FUZZ
@given(data=st.data())
def test_run_with_a_wild_value_for_one_input(shared_pipe: Pipeline, data: st.DataObject) -> None:
    key = data.draw(st.sampled_from(KEYS), label="key")
    batch = data.draw(st.integers(1, 3), label="batch")
    inputs: dict[str, Any] = tiny_inputs(batch=batch)
    inputs[key] = data.draw(wild_value(key, batch), label="value")
    result = outcome(lambda: shared_pipe.run(inputs), key)
    if result is not None:
        assert_valid(result, {"logits"}, batch, 3)


def _value_for(key: object, batch: int) -> st.SearchStrategy[object]:
    valid = tiny_inputs(batch=batch)
    if key in valid:
        return st.just(valid[key]) | wild_value(str(key), batch)
    if key in FEATURES or key in QUALIFIED:
        return st.just(np.zeros((batch, 4), np.float32)) | any_array()
    return junk() | any_array()


@FUZZ
@given(data=st.data())
def test_run_with_wild_keys(shared_pipe: Pipeline, data: st.DataObject) -> None:
    looked_up = OBJECTS.filter(lambda k: not (isinstance(k, float) and math.isnan(k)))  # NaN never finds itself
    key_strategy = st.sampled_from(KEYS + FEATURES + QUALIFIED + NEAR_MISSES) | text_any | looked_up
    keys = data.draw(st.lists(key_strategy, max_size=6, unique_by=lambda k: (type(k), k)), label="keys")
    batch = data.draw(st.integers(1, 2), label="batch")
    inputs = {k: data.draw(_value_for(k, batch), label=repr(k)) for k in keys}
    try:
        result = shared_pipe.run(inputs)
    except InputError as e:
        message = str(e)
        unknown = [k for k in keys if k not in KEYS + FEATURES + QUALIFIED]
        if unknown:
            assert "unknown input" in message
        elif not keys:
            assert "missing input" in message
        return
    assert_valid(result, {"logits"}, batch, 3)
    assert all(k in KEYS + FEATURES + QUALIFIED for k in keys)


@FUZZ
@given(data=st.data())
def test_encode_with_wild_names_and_values(shared_pipe: Pipeline, data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(KEYS + tuple(ENCODERS.values()) + NEAR_MISSES) | text_any, label="name")
    batch = data.draw(st.integers(1, 3), label="batch")
    key = name if name in KEYS else next((m for m, c in ENCODERS.items() if c == name), "image")
    value = data.draw(st.just(tiny_inputs(batch=batch)[key]) | wild_value(key, batch), label="value")
    named = key if name in KEYS or name in ENCODERS.values() else name
    result = outcome(lambda: shared_pipe.encode(name, value), named)
    if result is not None:
        tensor = isinstance(value, np.ndarray) and value.ndim == RANKS[key]  # else raw items: a batch of any size
        assert_valid(result, {f"{key}_features"}, value.shape[0] if tensor else None, 4)
