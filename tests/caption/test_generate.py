"""``Pipeline.generate`` on the exported captioner against the PyTorch model it came from."""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch
from caption.beam_reference import reference_search

from mmedge.data import BOS_ID, EOS_ID, decode_ids
from mmedge.errors import InputError
from mmedge.runtime import Pipeline


def _trim(row: list[int]) -> tuple[int, ...]:
    """A row of ``generate_greedy`` (ids, <eos>, then <pad>) as generate returns it: up to <eos>."""
    return tuple(row[: row.index(EOS_ID) + 1] if EOS_ID in row else row)


@pytest.fixture(scope="module")
def pipe(trained) -> Iterator[Pipeline]:
    with Pipeline(trained.bundle, "cpu", threads=2) as p:
        yield p


@pytest.mark.slow
def test_greedy_captions_equal_pytorch_on_every_held_out_image(trained, pipe: Pipeline) -> None:
    images = trained.held_out.inputs["image"]
    got = pipe.generate(images)
    want = [_trim(r) for r in trained.model.generate_greedy(torch.from_numpy(images), max_len=7).tolist()]
    assert got.token_ids == tuple(want)
    assert got.text == tuple(decode_ids(w) for w in want)
    exact = np.mean([t == c for t, c in zip(got.text, trained.held_out.captions, strict=True)])
    assert exact >= 0.9, f"the trained captioner gets only {exact:.0%} of held-out captions right"


@pytest.mark.slow
def test_raw_images_one_or_many_give_the_same_captions(trained, pipe: Pipeline) -> None:
    raw = trained.held_out.raw_images[:6]
    batched = pipe.generate(trained.held_out.inputs["image"][:6])
    from_raw = pipe.generate(list(raw))
    assert from_raw.token_ids == batched.token_ids
    np.testing.assert_allclose(from_raw.scores, batched.scores, rtol=0, atol=1e-5)
    single = pipe.generate(raw[4])  # one (H, W, C) image: a batch of one
    assert single.token_ids == batched.token_ids[4:5]
    np.testing.assert_allclose(single.scores, batched.scores[4:5], rtol=0, atol=1e-5)


@pytest.mark.slow
def test_beam_of_one_equals_greedy(trained, pipe: Pipeline) -> None:
    images = trained.held_out.inputs["image"][:20]
    greedy, beam = pipe.generate(images), pipe.generate(images, strategy="beam", beam_size=1)
    assert beam.token_ids == greedy.token_ids
    np.testing.assert_allclose(beam.scores, greedy.scores, rtol=0, atol=1e-5)
    assert (beam.strategy, beam.beam_size) == ("beam", 1)


@pytest.mark.slow
def test_beam_of_three_equals_a_pytorch_beam_search(trained, pipe: Pipeline) -> None:
    images = trained.held_out.inputs["image"][:40]
    got = pipe.generate(images, strategy="beam", beam_size=3)
    model = trained.model
    with torch.no_grad():
        states = model.decoder.init_state(model.image_encoder(torch.from_numpy(images)))
    for i, (ids, score) in enumerate(zip(got.token_ids, got.scores, strict=True)):
        logits = _history_logits(model, states[0][:, i : i + 1], states[1][:, i : i + 1])
        want_ids, want_score = reference_search(logits, beam_size=3, max_len=7, eos=EOS_ID)
        assert ids == want_ids, f"image {i}"
        assert score == pytest.approx(want_score, abs=1e-4)


def _history_logits(model, h, c):
    """PyTorch next-token logits from the whole history (teacher forcing from <bos>), no carried state."""

    @cache
    def logits(history: tuple[int, ...]) -> np.ndarray:
        tokens = torch.tensor([[BOS_ID, *history]])
        with torch.no_grad():
            out, _, _ = model.decoder(tokens, h, c)
        return out[0, -1].numpy()

    return logits


@pytest.mark.slow
def test_max_len_and_run_on_a_generative_bundle(trained, pipe: Pipeline) -> None:
    short = pipe.generate(trained.held_out.raw_images[0], max_len=2)
    assert len(short.token_ids[0]) == 2
    assert short.steps == 2
    with pytest.raises(InputError, match=r"call Pipeline\.generate\(inputs\)"):
        pipe.run({"image": trained.held_out.raw_images[0]})


def test_a_bundle_without_decoder_cannot_generate(tiny_bundle: Path) -> None:
    with Pipeline(tiny_bundle, "cpu") as p, pytest.raises(InputError, match=r"no decoder \(role: decoder\)"):
        p.generate({"image": np.zeros((8, 8, 3), np.uint8), "text": "dog", "audio": np.zeros(100, np.float32)})
