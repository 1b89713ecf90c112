"""Token-by-token generation with a bundle's decoder: greedy and beam search in numpy.

The search needs only ``step``: a function that runs the decoder component on one feed dict
(input name -> array) and returns its outputs by name. The runtime gives it an onnxruntime
session (``Pipeline.generate``), quantize its own sessions (caption agreement of an INT8
bundle) and export a PyTorch module (the reference the exported graphs are checked against),
so all three run exactly the same search and differ only in the numbers ``step`` returns.

The loop follows the bundle's :class:`~mmedge.bundle.GenerationSpec`: the first token is
``bos_id``, each step's logits pick the next token, state outputs replace their inputs, and a
sequence ends with ``eos_id`` or after ``max_len`` tokens.

* Greedy: the most probable token at every step (the first one on exact ties, like
  ``argmax``). Rows that reached ``<eos>`` leave the batch, so the decoder only runs on
  unfinished rows.
* Beam: ``beam_size`` hypotheses per item, ranked by total log-probability (natural log, in
  float64). Each step extends every live hypothesis by every token and keeps the best
  ``beam_size`` (ties go to the lower hypothesis, then the lower token id). A hypothesis that
  emitted ``<eos>`` stays in the beam with its score frozen (its only continuation is
  ``<pad>`` at log-probability 0), so it competes with longer ones on equal terms: a longer
  caption wins only if its total log-probability is higher. There is no length normalisation,
  which slightly favours short sequences, as any sum of log-probabilities does. Search stops
  when every hypothesis has ended or after ``max_len`` tokens; the answer is the highest
  scoring hypothesis, finished or not. ``beam_size=1`` gives the greedy result.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmedge.bundle import Component, GenerationSpec
from mmedge.errors import BundleError, InputError

__all__ = ["STRATEGIES", "Generation", "Step", "decode_text", "generate", "load_vocab"]

STRATEGIES = ("greedy", "beam")
Step = Callable[[dict[str, np.ndarray]], Mapping[str, np.ndarray]]


@dataclass(frozen=True)
class Generation:
    """Generated sequences, one per input item."""

    token_ids: tuple[tuple[int, ...], ...]  # tokens after <bos>, up to and including <eos> when it was reached
    text: tuple[str, ...]  # token_ids decoded with the bundle's vocabulary (specials dropped)
    scores: tuple[float, ...]  # total natural-log probability of each item's token_ids
    strategy: str  # "greedy" or "beam"
    beam_size: int  # 1 for greedy
    steps: int  # decoder calls made (the longest sequence's length)

    def items(self) -> list[dict[str, Any]]:
        """One ``{"text", "token_ids", "score"}`` dict per item: what the CLI and the HTTP API return."""
        return [
            {"text": text, "token_ids": list(ids), "score": score}
            for text, ids, score in zip(self.text, self.token_ids, self.scores, strict=True)
        ]


def load_vocab(path: Path) -> tuple[str, ...]:
    """The vocabulary asset: one token per line, line index = id."""
    try:
        return tuple(line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    except (OSError, UnicodeDecodeError) as e:
        raise BundleError(f"vocabulary {path} cannot be read ({e}); re-export the bundle") from e


def decode_text(ids: Sequence[int], vocab: Sequence[str], spec: GenerationSpec) -> str:
    """The words of ``ids``: stops at ``<eos>``, drops ``<bos>`` and ``<pad>``."""
    words = []
    for i in ids:
        if i == spec.eos_id:
            break
        if i not in (spec.bos_id, spec.pad_id):
            words.append(vocab[i] if 0 <= i < len(vocab) else f"<{i}>")
    return " ".join(words)


def generate(
    step: Step,
    initial: Mapping[str, np.ndarray],
    *,
    spec: GenerationSpec,
    decoder: Component,
    vocab: Sequence[str],
    max_len: int | None = None,
    strategy: str = "greedy",
    beam_size: int = 4,
) -> Generation:
    """Generate one sequence per item from ``initial``: every decoder input except the token input.

    ``initial`` holds the wired values (the first state, any per-sequence memory), each with the
    same number of items on its "batch" axis. ``max_len`` defaults to ``spec.max_length``.
    """
    max_len = spec.max_length if max_len is None else max_len
    _check_options(max_len, strategy, beam_size)
    loop = _Loop(step, spec, decoder, initial)
    if strategy == "greedy":
        ids, scores, steps = _greedy(loop, dict(initial), max_len)
        beam_size = 1
    else:
        ids, scores, steps = _beam(loop, dict(initial), max_len, beam_size)
    return Generation(
        token_ids=tuple(tuple(t) for t in ids),
        text=tuple(decode_text(t, vocab, spec) for t in ids),
        scores=tuple(float(s) for s in scores),
        strategy=strategy,
        beam_size=beam_size,
        steps=steps,
    )


def _check_options(max_len: int, strategy: str, beam_size: int) -> None:
    problems = []
    if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1:
        problems.append(f"max_len must be a positive int, found {max_len!r}")
    if strategy not in STRATEGIES:
        problems.append(f"strategy must be one of {STRATEGIES}, found {strategy!r}")
    if isinstance(beam_size, bool) or not isinstance(beam_size, int) or beam_size < 1:
        problems.append(f"beam_size must be a positive int, found {beam_size!r}")
    if problems:
        raise InputError("; ".join(problems))


class _Loop:
    """The decoder's feeds between steps: which inputs are state, where their batch axis is."""

    def __init__(self, step: Step, spec: GenerationSpec, decoder: Component, initial: Mapping[str, np.ndarray]):
        self.step = step
        self.spec = spec
        self.token_dtype = next(t.dtype for t in decoder.inputs if t.name == spec.token_input)
        self.axes = {t.name: t.shape.index("batch") for t in decoder.inputs if "batch" in t.shape}
        sizes = {int(np.shape(v)[self.axes[n]]) for n, v in initial.items() if n in self.axes}
        if len(sizes) != 1:
            raise InputError(
                f"the decoder's wired inputs must give one batch size on their 'batch' axes, found {sorted(sizes)}"
            )
        self.batch = sizes.pop()

    def call(self, feeds: Mapping[str, np.ndarray], tokens: np.ndarray) -> tuple[np.ndarray, Mapping[str, np.ndarray]]:
        """(log-probabilities float64 [rows, vocab], all outputs) of one step."""
        out = self.step({**feeds, self.spec.token_input: tokens.astype(self.token_dtype).reshape(-1, 1)})
        logits = np.asarray(out[self.spec.logits_output], dtype=np.float64)
        shifted = logits - logits.max(axis=-1, keepdims=True)
        return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True)), out

    def carry(self, feeds: Mapping[str, np.ndarray], out: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The next step's feeds: state outputs replace their inputs, the rest stays."""
        return {**feeds, **{i: np.asarray(out[o]) for i, o in self.spec.state}}

    def take(self, feeds: Mapping[str, np.ndarray], rows: np.ndarray) -> dict[str, np.ndarray]:
        """Feeds with only ``rows`` (in that order) along each input's batch axis."""
        return {n: np.take(v, rows, axis=self.axes[n]) if n in self.axes else v for n, v in feeds.items()}


def _greedy(loop: _Loop, feeds: dict[str, np.ndarray], max_len: int) -> tuple[list[list[int]], np.ndarray, int]:
    spec = loop.spec
    ids: list[list[int]] = [[] for _ in range(loop.batch)]
    scores = np.zeros(loop.batch)
    active = np.arange(loop.batch)
    tokens = np.full(loop.batch, spec.bos_id)
    steps = 0
    while steps < max_len and active.size:
        logp, out = loop.call(feeds, tokens)
        steps += 1
        tokens = logp.argmax(axis=-1)
        scores[active] += logp[np.arange(active.size), tokens]
        for row, token in zip(active, tokens, strict=True):
            ids[row].append(int(token))
        keep = tokens != spec.eos_id  # rows that emitted <eos> leave the batch
        feeds = loop.carry(feeds, out)
        if not keep.all():
            feeds = loop.take(feeds, np.flatnonzero(keep))
        active, tokens = active[keep], tokens[keep]
    return ids, scores, steps


def _beam(loop: _Loop, feeds: dict[str, np.ndarray], max_len: int, k: int) -> tuple[list[list[int]], np.ndarray, int]:
    spec, batch = loop.spec, loop.batch
    feeds = loop.take(feeds, np.repeat(np.arange(batch), k))
    score = np.full((batch, k), -np.inf)
    score[:, 0] = 0.0  # the k copies of <bos> are one hypothesis until the first step spreads them
    done = np.zeros((batch, k), dtype=bool)
    history = np.zeros((batch, k, 0), dtype=np.int64)
    tokens = np.full(batch * k, spec.bos_id)
    steps = 0
    while steps < max_len and not done.all():
        logp, out = loop.call(feeds, tokens)
        steps += 1
        vocab = logp.shape[-1]
        if vocab < k:
            raise InputError(f"beam_size {k} is larger than the vocabulary ({vocab} tokens); use at most {vocab}")
        logp = logp.reshape(batch, k, vocab)
        logp[done] = -np.inf
        logp[done, spec.pad_id] = 0.0  # an ended hypothesis keeps its score
        candidates = (score[..., None] + logp).reshape(batch, k * vocab)
        best = np.argsort(-candidates, axis=1, kind="stable")[:, :k]
        origin, chosen = best // vocab, best % vocab
        score = np.take_along_axis(candidates, best, axis=1)
        done = np.take_along_axis(done, origin, axis=1) | (chosen == spec.eos_id)
        history = np.concatenate([np.take_along_axis(history, origin[..., None], axis=1), chosen[..., None]], axis=2)
        feeds = loop.take(loop.carry(feeds, out), (np.arange(batch)[:, None] * k + origin).reshape(-1))
        tokens = chosen.reshape(-1)
    pick = score.argmax(axis=1)
    ids = [_until_eos(history[b, pick[b]].tolist(), spec.eos_id) for b in range(batch)]
    return ids, score[np.arange(batch), pick], steps


def _until_eos(tokens: list[int], eos: int) -> list[int]:
    return tokens[: tokens.index(eos) + 1] if eos in tokens else tokens
