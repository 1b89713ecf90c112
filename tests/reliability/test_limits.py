"""Input size limits: oversized values are refused before anything is allocated, and the limits are settings.

Oversized values here are zero-copy broadcast views (or files whose headers lie), so each case
would take gigabytes only if the runtime touched the data; tracemalloc proves it did not. The
documented memory bound (at most 16 bytes per element of the largest item) is measured on
items right at a small limit. Invalid options raise ConfigError, which is also a ValueError.
"""

from __future__ import annotations

import re
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from reliability._files import png_header, wav_header
from tinybundle import tiny_inputs

from mmedge.errors import ConfigError, InputError
from mmedge.runtime import Audio, InputLimits, Pipeline

MiB = 2**20


def _view(shape: tuple[int, ...], dtype: str = "float32") -> np.ndarray:
    return np.broadcast_to(np.zeros((), dtype), shape)


def _peak_bytes(call: Callable[[], Any]) -> int:
    tracemalloc.start()
    try:
        call()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


OVERSIZED = [
    pytest.param("audio", _view((1, 2**27)), "has 134217728 elements, over the limit of 67108864", id="tensor"),
    pytest.param("image", _view((4097, 3, 8, 8)), "batch of 4097 items is over the limit of 4096", id="tensor-batch"),
    pytest.param(
        "image", _view((12_000, 12_000, 3), "uint8"), "image array of shape [12000, 12000, 3]", id="raw-image"
    ),
    pytest.param("image", [_view((8, 8, 3), "uint8")] * 4097, "batch of 4097 items", id="raw-batch"),
    pytest.param("audio", Audio(_view((2**27,)), 16000), "wave of shape [134217728]", id="raw-wave"),
    pytest.param("audio", Audio(_view((2, 2**26)), 48000), "wave of shape [2, 67108864]", id="raw-stereo"),
    pytest.param("text", "dog " * 250_001, "text of 1000004 characters is over the limit", id="text"),
    pytest.param("text", _view((1, 2**27), "int64"), "over the limit of 67108864", id="ids-tensor"),
    pytest.param(
        "image_features", _view((2**25, 4)), "encoder output 'image_encoder.image_features'", id="encoder-output"
    ),
]


@pytest.mark.parametrize(("key", "value", "message"), OVERSIZED)
def test_oversized_inputs_are_refused_before_any_allocation(
    shared_pipe: Pipeline, key: str, value: Any, message: str
) -> None:
    inputs = {**tiny_inputs(batch=1), key: value}
    if key.endswith("_features"):
        inputs.pop("image")

    def call() -> None:
        with pytest.raises(InputError, match=re.escape(message)) as info:
            shared_pipe.run(inputs)
        assert "InputLimits(" in str(info.value)  # the message says how to raise the limit

    assert _peak_bytes(call) < MiB


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(png_header(6000, 6000), "image file .* of 6000×6000 pixels has 108000000 elements", id="png"),
        pytest.param(png_header(50_000, 50_000), "too large to decode safely", id="png-bomb"),
    ],
)
def test_image_files_are_measured_by_their_header(
    shared_pipe: Pipeline, tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "huge.png"
    path.write_bytes(content)

    def call() -> None:
        with pytest.raises(InputError, match=message):
            shared_pipe.run({**tiny_inputs(batch=1), "image": path})

    assert _peak_bytes(call) < MiB


def test_a_sound_file_header_claiming_a_billion_frames_costs_nothing(shared_pipe: Pipeline, tmp_path: Path) -> None:
    path = tmp_path / "liar.wav"
    path.write_bytes(wav_header(10**9, held=1600))  # 0.1 s really held: long enough to be audio
    result: dict[str, np.ndarray] = {}
    assert _peak_bytes(lambda: result.update(shared_pipe.run({**tiny_inputs(batch=1), "audio": path}))) < MiB
    assert result["logits"].shape == (1, 3)  # libsndfile counts the frames the file really holds


SMALL = InputLimits(max_batch=2, max_elements=2**16, max_text_chars=10)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        pytest.param("text", ["dog", "cat", "sky"], "batch of 3 items is over the limit of 2", id="max-batch"),
        pytest.param("text", "bright dark dog", "text of 15 characters is over the limit of 10", id="max-text-chars"),
        pytest.param(
            "image", np.zeros((200, 200, 3), np.uint8), "120000 elements, over the limit of 65536", id="max-elements"
        ),
        pytest.param("text", [list(range(8)) * 9000], "a sequence of 72000 ids", id="max-ids"),
    ],
)
def test_limits_are_settings_of_the_pipeline(shared_bundle: Path, key: str, value: Any, message: str) -> None:
    with Pipeline(shared_bundle, "cpu", limits=SMALL) as pipe:
        with pytest.raises(InputError, match=message):
            pipe.run({**tiny_inputs(batch=1 if key != "text" or isinstance(value, str) else len(value)), key: value})
        assert pipe.run({**tiny_inputs(batch=2), "image": [np.zeros((100, 100, 3), np.uint8)] * 2})["logits"].shape == (
            2,
            3,
        )


@pytest.mark.parametrize(
    "item",
    [
        pytest.param(np.zeros((512, 682, 3), np.uint8), id="rgb-uint8"),
        pytest.param(np.zeros((1024, 1024), np.uint8), id="gray-uint8"),
        pytest.param(np.zeros((512, 682, 3), np.float64), id="rgb-float64"),
        pytest.param(Audio(np.zeros(MiB, np.float32), 44100), id="wave-float32"),
        pytest.param(Audio(np.zeros(MiB, np.float16), 22050), id="wave-float16"),
        pytest.param(Audio(np.zeros((2, MiB // 2), np.float64), 8000), id="stereo-float64"),
    ],
)
def test_preprocessing_memory_stays_within_16_bytes_per_element(shared_bundle: Path, item: Any) -> None:
    limit = InputLimits(max_elements=MiB)
    key = "audio" if isinstance(item, Audio) else "image"
    with Pipeline(shared_bundle, "cpu", limits=limit) as pipe:
        inputs = {**tiny_inputs(batch=1), key: item}
        pipe.run(inputs)  # warm: sessions and tokenizer allocate on first use
        assert _peak_bytes(lambda: pipe.run(inputs)) <= 16 * limit.max_elements + MiB


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"threads": 0}, "threads must be a positive int (at most 1024) or None, found 0", id="threads-0"),
        pytest.param(
            {"threads": 2.5}, "threads must be a positive int (at most 1024) or None, found 2.5", id="threads-float"
        ),
        pytest.param({"threads": 10**9}, "threads must be a positive int (at most 1024)", id="threads-huge"),
        pytest.param({"graph_optimization": "bogus"}, "graph_optimization must be one of", id="graph-optimization"),
        pytest.param(
            {"limits": {"max_batch": 4}}, "limits must be an InputLimits, found {'max_batch': 4}", id="limits"
        ),
        pytest.param({"trace": 5}, "trace must be a callable", id="trace"),
        pytest.param({"bundle": None}, "bundle must be a directory path or a loaded Bundle, found None", id="bundle"),
        pytest.param(
            {"optimized_model_dir": 123}, "optimized_model_dir must be a directory path or None", id="dir-type"
        ),
        pytest.param({"optimized_model_dir": "/proc/mmedge"}, "/proc/mmedge cannot be created", id="dir-unwritable"),
        pytest.param(
            {"compile_in_background": "yes"}, "compile_in_background must be True or False, found 'yes'", id="bg"
        ),
        pytest.param({"max_graph_shapes": 0}, "max_graph_shapes must be a positive int, found 0", id="shapes"),
    ],
)
def test_bad_pipeline_options_are_config_errors(shared_bundle: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)) as info:
        Pipeline(kwargs.pop("bundle", shared_bundle), "cpu", **kwargs)
    assert isinstance(info.value, ValueError)  # code written against the old ValueError keeps working


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"max_batch": 0}, id="zero"),
        pytest.param({"max_elements": -1}, id="negative"),
        pytest.param({"max_text_chars": 1.5}, id="float"),
        pytest.param({"max_batch": True}, id="bool"),
    ],
)
def test_bad_limits_are_config_errors(kwargs: dict) -> None:
    with pytest.raises(ConfigError, match=f"InputLimits values must be positive ints, found {next(iter(kwargs))}="):
        InputLimits(**kwargs)
