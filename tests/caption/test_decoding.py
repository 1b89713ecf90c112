"""The numpy search of ``mmedge.decoding`` on hand-made decoders: exact answers, no model needed.

Tokens: 0 <pad>, 1 <bos>, 2 <eos>, 3 "a", 4 "b". A decoder here is a Markov chain: the next
token's log-probabilities depend on the previous token only, read either from the token input
or from a state tensor the loop carries (which checks that state rows follow their hypothesis).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from caption.beam_reference import reference_search

from mmedge.bundle import Component, GenerationSpec, TensorSpec
from mmedge.decoding import decode_text, generate
from mmedge.errors import InputError

VOCAB = ("<pad>", "<bos>", "<eos>", "a", "b")
PAD, BOS, EOS, A, B = range(5)
NEVER = -1e9  # log-probability of a transition that cannot happen

# From <bos> "a" is likelier (greedy takes it), but everything after "a" is uncertain while
# "b" is almost surely followed by <eos>: the best whole sequence is "b <eos>".
CHAIN = np.full((5, 5), NEVER)
CHAIN[BOS, [A, B]] = np.log([0.6, 0.4])
CHAIN[A, [A, B, EOS]] = np.log([0.34, 0.33, 0.33])
CHAIN[B, [A, EOS]] = np.log([0.1, 0.9])
CHAIN[[PAD, EOS], PAD] = 0.0

SPEC = GenerationSpec(
    decoder="step", token_input="tokens", logits_output="logits", state=(), bos_id=BOS, eos_id=EOS, max_length=4
)


def _decoder(*inputs: TensorSpec) -> Component:
    outputs = (TensorSpec("logits", "float32", ("batch", 5)),)
    return Component("step", "step.onnx", "decoder", (TensorSpec("tokens", "int64", ("batch", 1)), *inputs), outputs)


def token_chain(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Next-token logits from the token input; ``memory`` [batch, 5] is added when given."""
    logits = CHAIN[feeds["tokens"][:, 0]] + feeds.get("memory", 0.0)
    return {"logits": logits.astype(np.float32)}


# For the state tests: after <bos> "a" leads "b" but "b a" overtakes every "a x", so the
# hypotheses swap places at step 2, and then only carried state knows which token came before.
SWAP = np.full((5, 5), NEVER)
SWAP[BOS, [A, B]] = np.log([0.55, 0.45])
SWAP[A, [A, B, EOS]] = np.log(1 / 3)
SWAP[B, [A, EOS]] = np.log([0.95, 0.05])
SWAP[[PAD, EOS], PAD] = 0.0
ECHO = 1.2  # bonus for repeating the token fed two steps back


def state_chain(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A second-order chain: the token fed one step earlier, kept in a state [1, batch, 1], adds
    ``ECHO`` to its own logit, so a hypothesis given another's state continues differently."""
    tokens, before = feeds["tokens"][:, 0], feeds["before"][0, :, 0].astype(np.int64)
    logits = SWAP[tokens] + ECHO * (np.arange(5) == before[:, None])
    return {"logits": logits.astype(np.float32), "before_out": tokens[None, :, None].astype(np.float32)}


def state_chain_from_history(history: tuple[int, ...]) -> np.ndarray:
    """What ``state_chain`` computes, from the whole history instead of carried state."""
    fed = (BOS, *history)
    before = fed[-2] if len(fed) > 1 else BOS  # the state starts at <bos>
    return (SWAP[fed[-1]] + ECHO * (np.arange(5) == before)).astype(np.float32)


STATE_SPEC = GenerationSpec(**{**SPEC.__dict__, "state": (("before", "before_out"),)})
STATE_DECODER = _decoder(TensorSpec("before", "float32", (1, "batch", 1)))
MEMORY_DECODER = _decoder(TensorSpec("memory", "float32", ("batch", 5)))


def _run(step, initial, decoder=MEMORY_DECODER, spec=SPEC, **options):
    return generate(step, initial, spec=spec, decoder=decoder, vocab=VOCAB, **options)


def _memory(batch: int) -> dict[str, np.ndarray]:
    return {"memory": np.zeros((batch, 5), np.float32)}


def _best_sequence(max_len: int) -> tuple[tuple[int, ...], float]:
    """Exhaustive search: every sequence up to its <eos> or max_len tokens, scored like the beam."""
    best: tuple[tuple[int, ...], float] = ((), -np.inf)
    for seq in itertools.product(range(5), repeat=max_len):
        ended = seq[: seq.index(EOS) + 1] if EOS in seq else seq
        previous = (BOS, *ended[:-1])
        score = float(sum(CHAIN[p, t] for p, t in zip(previous, ended, strict=True)))
        best = max(best, (ended, score), key=lambda x: x[1])
    return best


def test_greedy_takes_the_likeliest_token_each_step() -> None:
    result = _run(token_chain, _memory(1), strategy="greedy")
    assert result.token_ids == ((A, A, A, A),)  # "a" then always "a" (0.34): never ends within max_length
    assert result.text == ("a a a a",)
    assert result.scores[0] == pytest.approx(np.log(0.6) + 3 * np.log(0.34))
    assert (result.strategy, result.beam_size, result.steps) == ("greedy", 1, 4)


@pytest.mark.parametrize("beam_size", [pytest.param(2, id="beam-2"), pytest.param(5, id="beam-5")])
def test_beam_finds_the_best_whole_sequence(beam_size: int) -> None:
    result = _run(token_chain, _memory(1), strategy="beam", beam_size=beam_size)
    ids, score = _best_sequence(SPEC.max_length)
    assert ids == (B, EOS)
    assert result.token_ids == (ids,)
    assert result.scores[0] == pytest.approx(score)
    assert result.text == ("b",)


def test_beam_of_one_is_greedy() -> None:
    greedy = _run(token_chain, _memory(3), strategy="greedy")
    beam = _run(token_chain, _memory(3), strategy="beam", beam_size=1)
    assert beam.token_ids == greedy.token_ids
    np.testing.assert_allclose(beam.scores, greedy.scores, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "beam_size", [pytest.param(1, id="greedy"), pytest.param(2, id="beam-2"), pytest.param(4, id="beam-4")]
)
def test_state_follows_its_hypothesis(beam_size: int) -> None:
    """Carried state (batch on axis 1) gives what the stateless reference gets from whole histories."""
    initial = {"before": np.full((1, 2, 1), BOS, np.float32)}
    strategy = "greedy" if beam_size == 1 else "beam"
    result = _run(state_chain, initial, STATE_DECODER, STATE_SPEC, strategy=strategy, beam_size=beam_size)
    ids, score = reference_search(state_chain_from_history, beam_size=beam_size, max_len=4, eos=EOS)
    assert result.token_ids == (ids, ids)
    assert ids == ((A, EOS) if beam_size == 1 else (B, A, B, A))
    np.testing.assert_allclose(result.scores, [score, score], rtol=0, atol=1e-9)


@pytest.mark.parametrize("strategy", [pytest.param("greedy", id="greedy"), pytest.param("beam", id="beam")])
def test_items_of_a_batch_do_not_affect_each_other(strategy: str) -> None:
    """Per-item memory makes every item end differently; batched = one at a time, in order."""
    memory = np.zeros((4, 5), np.float32)
    memory[1, EOS] = 5.0  # ends as soon as it can, after "a"
    memory[2, B] = 2.0  # prefers "b"
    memory[3, A] = 3.0  # never ends
    batched = _run(token_chain, {"memory": memory}, strategy=strategy, beam_size=3)
    alone = [_run(token_chain, {"memory": memory[i : i + 1]}, strategy=strategy, beam_size=3) for i in range(4)]
    assert batched.token_ids == tuple(a.token_ids[0] for a in alone)
    np.testing.assert_allclose(batched.scores, [a.scores[0] for a in alone], rtol=0, atol=1e-9)
    assert batched.token_ids[1:] == ((A, EOS), (B, EOS), (A, A, A, A))  # rows end at different steps
    assert batched.text[1:] == ("a", "b", "a a a a")


@pytest.mark.parametrize("strategy", [pytest.param("greedy", id="greedy"), pytest.param("beam", id="beam")])
def test_max_len_cuts_sequences_without_eos(strategy: str) -> None:
    result = _run(token_chain, _memory(2), strategy=strategy, beam_size=2, max_len=1)
    assert result.token_ids == ((A,), (A,))  # the first token only; beam keeps the likelier of a/b
    assert result.steps == 1


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param({"strategy": "sample"}, "strategy must be one of ('greedy', 'beam')", id="strategy"),
        pytest.param({"beam_size": 0}, "beam_size must be a positive int", id="beam-size"),
        pytest.param({"max_len": 0}, "max_len must be a positive int", id="max-len"),
        pytest.param({"strategy": "beam", "beam_size": 6}, "larger than the vocabulary (5 tokens)", id="beam>vocab"),
    ],
)
def test_bad_options_are_input_errors(options: dict, message: str) -> None:
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _run(token_chain, _memory(1), **options)


def test_decode_text_drops_specials_and_stops_at_eos() -> None:
    assert decode_text([BOS, A, PAD, B, EOS, A], VOCAB, SPEC) == "a b"
    assert decode_text([A, 9], VOCAB, SPEC) == "a <9>"


def test_wired_inputs_must_agree_on_the_batch_size() -> None:
    initial = {"before": np.full((1, 2, 1), BOS, np.float32), "memory": np.zeros((3, 5), np.float32)}
    decoder = _decoder(TensorSpec("before", "float32", (1, "batch", 1)), TensorSpec("memory", "float32", ("batch", 5)))
    with pytest.raises(InputError, match=r"one batch size on their 'batch' axes, found \[2, 3\]"):
        _run(state_chain, initial, decoder, STATE_SPEC)
