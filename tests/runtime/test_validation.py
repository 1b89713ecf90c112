"""Every way a call can be wrong gives one InputError naming the input, expected vs found."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tinybundle import tiny_inputs

from mmedge.errors import InputError
from mmedge.runtime import Audio, InputLimits, Pipeline

Inputs = dict[str, Any]


def _with(**changes: Any) -> Callable[[Inputs], Inputs]:
    return lambda x: {**x, **changes}


def _without(*names: str) -> Callable[[Inputs], Inputs]:
    return lambda x: {k: v for k, v in x.items() if k not in names}


def _nan_at(name: str, index: tuple[int, ...], value: float) -> Callable[[Inputs], Inputs]:
    def edit(x: Inputs) -> Inputs:
        bad = x[name].copy()
        bad[index] = value
        return {**x, name: bad}

    return edit


WAVE = np.zeros(160, np.float32)

CASES = [
    pytest.param(
        _with(text=np.zeros((1, 6), np.int32)),
        "input 'text': expected int64 [batch, seq], found int32 [1, 6]; convert with x.astype(np.int64)",
        id="dtype",
    ),
    pytest.param(
        _with(image=np.zeros((1, 8, 8, 3), np.uint8)),
        "input 'image': expected float32 [batch, 3, 8, 8], found uint8 [1, 8, 8, 3]",
        id="nhwc-uint8-tensor",
    ),
    pytest.param(
        _with(image=np.zeros((1, 3, 4, 4), np.float32)),
        "input 'image': expected float32 [batch, 3, 8, 8], found float32 [1, 3, 4, 4] (dim 2 must be 8, dim 3 must be 8)",
        id="fixed-dim",
    ),
    pytest.param(
        _with(image=np.zeros((1, 1, 3, 8, 8), np.float32)),
        "input 'image' item 0: expected an image file path, a PIL image or an (H, W, C) array, found array of shape [1, 1, 3, 8, 8]",
        id="rank",
    ),
    pytest.param(
        _nan_at("audio", (0, 7), np.nan), "input 'audio': 1 value(s) are NaN or Inf (first at index (0, 7))", id="nan"
    ),
    pytest.param(
        _nan_at("image", (0, 1, 2, 3), np.inf),
        "input 'image': 1 value(s) are NaN or Inf (first at index (0, 1, 2, 3))",
        id="inf",
    ),
    pytest.param(
        _with(audio=np.zeros((1, 0), np.float32)),
        "input 'audio': expected float32 [batch, samples], found float32 [1, 0], which is empty",
        id="empty-tensor",
    ),
    pytest.param(_with(text=""), "input 'text': item 0 is empty text", id="empty-text"),
    pytest.param(_with(text=["dog", "   "]), "input 'text': item 1 is empty text", id="blank-text-in-batch"),
    pytest.param(_with(text=[]), "input 'text': got an empty list", id="empty-batch"),
    pytest.param(_with(text=[[]]), "input 'text': item 0 has no token ids", id="empty-ids"),
    pytest.param(
        _with(text=np.array([[1, 99]])),
        "input 'text': token ids must be [0, 8), found values from 1 to 99",
        id="id-too-big",
    ),
    pytest.param(
        _with(text=[2, -1]), "input 'text': token ids must be [0, 8), found values from -1 to 2", id="id-negative"
    ),
    pytest.param(
        _with(text=[1.5, 2.0]),
        "input 'text': item 0 must be a string or a 1-D sequence of int token ids",
        id="float-ids",
    ),
    pytest.param(
        _with(audio=Audio(WAVE, 16)),
        "input 'audio' item 0: wrong sample rate: expected an int number of Hz in [1000, 768000], found 16",
        id="sample-rate-khz",
    ),
    pytest.param(
        _with(audio=(WAVE, 16000.0)), "wrong sample rate: expected an int number of Hz", id="sample-rate-float"
    ),
    pytest.param(
        _with(audio=WAVE.astype(np.int16)),
        "waveforms must be floats in [-1, 1], found int16; for int16 PCM use wave / 32768",
        id="pcm-int16",
    ),
    pytest.param(
        _with(audio=Audio(np.zeros((300, 2), np.float32), 16000)),
        "which looks like (samples, channels); transpose it",
        id="samples-channels",
    ),
    pytest.param(
        _with(audio=np.zeros(0, np.float32)), "input 'audio' item 0: the waveform has no samples", id="empty-wave"
    ),
    pytest.param(
        _with(image=np.full((8, 8, 3), 255.0, np.float32)),
        "float images must be in [0, 1], found values from 255 to 255; pass uint8 pixels, or divide by 255",
        id="float-image-range",
    ),
    pytest.param(
        _with(image=np.zeros((8, 8, 2), np.uint8)), "the model takes 3-channel images, found 2 channels", id="channels"
    ),
    pytest.param(
        _with(image="no/such/cat.png"),
        "input 'image' item 0: image file no/such/cat.png does not exist",
        id="missing-image-file",
    ),
    pytest.param(
        _with(audio="no/such.wav"),
        "input 'audio' item 0: sound file no/such.wav does not exist",
        id="missing-sound-file",
    ),
    pytest.param(
        _with(extra=1),
        "unknown input 'extra'; this bundle takes: text, image, audio; or precomputed encoder outputs: text_features, image_features, audio_features",
        id="unknown-key",
    ),
    pytest.param(
        _without("audio"),
        "missing input 'audio' (audio, float32 ['batch', 'samples']); pass it, or the precomputed audio_encoder outputs",
        id="missing-modality",
    ),
    pytest.param(
        _with(image=np.zeros((3, 3, 8, 8), np.float32)),
        "inputs have different batch sizes (text: 2, image: 3, audio: 2)",
        id="batch-mismatch",
    ),
    pytest.param(
        _with(
            image_features=np.ones((2, 4), np.float32), **{"image_encoder.image_features": np.ones((2, 4), np.float32)}
        ),
        "input 'image_encoder.image_features' is given twice",
        id="cached-twice",
    ),
    pytest.param(
        _with(image_features=np.zeros((2, 5), np.float32)),
        "encoder output 'image_encoder.image_features': expected float32 [batch, 4], found float32 [2, 5] (dim 1 must be 4)",
        id="cached-shape",
    ),
    pytest.param(
        _with(image_features=np.zeros((2, 4), np.float32)),
        "input 'image' is not used: the outputs of every encoder it feeds were passed",
        id="cached-and-raw",
    ),
    pytest.param(
        _with(audio=np.zeros((2, 3), np.float32)),
        "input 'audio': audio of 3 samples (0.0001875 s at 16000 Hz) is too short: at least 33 samples",
        id="short-audio-before-ort",
    ),
]


@pytest.mark.parametrize(("edit", "message"), CASES)
def test_each_bad_input_is_one_clear_input_error(
    pipe: Pipeline, edit: Callable[[Inputs], Inputs], message: str
) -> None:
    with pytest.raises(InputError, match=re.escape(message)):
        pipe.run(edit(tiny_inputs(batch=2)))


def test_all_problems_of_a_call_are_reported_together(pipe: Pipeline) -> None:
    x = {**tiny_inputs(batch=1), "text": np.zeros((1, 6), np.int32), "image": "missing.png", "foo": 1}
    with pytest.raises(InputError) as info:
        pipe.run(x)
    message = str(info.value)
    assert message.startswith("3 problems with the inputs:")
    for fragment in ("unknown input 'foo'", "input 'text': expected int64", "image file missing.png does not exist"):
        assert fragment in message


def test_inputs_must_be_a_dict(pipe: Pipeline) -> None:
    with pytest.raises(InputError, match=r"inputs must be a dict of input name → value, found list"):
        pipe.run([np.zeros(3)])


def test_unknown_words_without_unk_id_are_named(edited_bundle: Callable[..., Path]) -> None:
    from mmedge.bundle import TextPreprocess

    pre = TextPreprocess(max_length=8, pad_id=0, unk_id=None, vocab_file="vocab.txt")
    with Pipeline(edited_bundle("text", preprocess=pre), "cpu") as p, pytest.raises(InputError, match=r"\['zebra'\]"):
        p.run({**tiny_inputs(batch=1), "text": "bright zebra"})


def test_raw_forms_need_a_preprocessing_recipe(edited_bundle: Callable[..., Path]) -> None:
    with Pipeline(edited_bundle("image", preprocess=None), "cpu") as p:
        with pytest.raises(InputError, match=r"the bundle has no image preprocessing.*pass a float32 tensor of shape"):
            p.run({**tiny_inputs(batch=1), "image": np.zeros((8, 8, 3), np.uint8)})
        assert p.run(tiny_inputs(batch=1))["logits"].shape == (1, 3)


def test_ready_tensors_take_the_short_path_to_the_same_feeds(pipe: Pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    """Model tensors by input name skip the general routing (a per-call cost on every served request)
    and give exactly the feeds the general path gives; anything else goes the general way."""
    from mmedge.runtime._inputs import InputRouter

    router, targets = pipe._router, pipe._graph.outputs
    x = tiny_inputs(batch=2)
    short = router.resolve(x, targets)
    taken = []
    monkeypatch.setattr(InputRouter, "_ready_tensors", lambda *a: taken.append(1))  # force the general path
    general = router.resolve(x, targets)
    assert taken
    assert general.provided == short.provided == {}
    assert list(short.raw) == list(general.raw) == ["text", "image", "audio"]
    assert all(short.raw[k] is general.raw[k] is x[k] for k in x)  # no copies either way
    monkeypatch.undo()
    assert router._ready_tensors({**x, "text": ["a dog"]}, targets) is None  # raw text: tokenized by the general path
    assert router._ready_tensors({"text": x["text"], "image": x["image"]}, targets) is None  # audio missing
    assert router._ready_tensors(x, targets) is not None


LARGE = 2**20 + 8  # samples: past all_finite's exact check, on its sum


@pytest.mark.parametrize(
    ("edit", "limits", "samples"),
    [
        pytest.param(_with(text=np.full((2, 6), -1, np.int64)), None, 160, id="negative-id-tensor"),
        pytest.param(_with(text=np.full((2, 6), 8, np.int64)), None, 160, id="id-at-vocab-size"),
        pytest.param(_with(audio=np.zeros((2, 3), np.float32)), None, 160, id="audio-under-the-encoders-minimum"),
        pytest.param(_nan_at("audio", (1, LARGE - 1), np.inf), None, LARGE, id="inf-in-a-large-array"),
        pytest.param(_nan_at("audio", (1, 0), -np.inf), None, 160, id="inf-in-a-small-array"),
        pytest.param(_with(), InputLimits(max_batch=1), 160, id="over-max-batch"),
        pytest.param(_with(), InputLimits(max_elements=300), 160, id="over-max-elements"),
        pytest.param(_with(text=np.zeros((3, 6), np.int64)), None, 160, id="batch-mismatch-text"),
    ],
)
def test_the_ready_tensor_checks_in_one_pass_refuse_what_the_checks_refuse(
    tiny_bundle: Path, edit: Callable[[Inputs], Inputs], limits: InputLimits | None, samples: int
) -> None:
    """``_all_pass`` (every check in one function, for the per-call cost) accepts exactly what the
    per-input checks accept: each of these fails both, and the Pipeline names the problem."""
    x = tiny_inputs(batch=2, samples=samples)
    with Pipeline(tiny_bundle, "cpu", threads=1, limits=limits or InputLimits(), lazy=True) as p:
        router, targets = p._router, p._graph.outputs
        assert router._all_pass(x) is (limits is None)
        bad = edit(x)
        assert not router._all_pass(bad)
        assert router._ready_tensors(bad, targets) is None
        with pytest.raises(InputError):
            p.run(bad)


@pytest.mark.parametrize(("edit", "message"), CASES)
def test_the_short_path_refuses_every_bad_input(pipe: Pipeline, edit: Callable[[Inputs], Inputs], message: str) -> None:
    """Whatever the general path rejects, the short path hands to it (which then names the problem)."""
    assert pipe._router._ready_tensors(edit(tiny_inputs(batch=2)), pipe._graph.outputs) is None


def test_batch_sizes_are_checked_per_batch_symbol() -> None:
    from mmedge.runtime.validate import batch_problems

    assert batch_problems({"text": ("text_batch", 20), "mask": ("text_batch", 20), "image": ("image_batch", 1)}) == []
    assert batch_problems({"text": ("text_batch", 20), "mask": ("text_batch", 19), "image": ("image_batch", 1)}) == [
        "inputs counted by 'text_batch' have different batch sizes (text: 20, mask: 19); pass the same number of "
        "items for each"
    ]
