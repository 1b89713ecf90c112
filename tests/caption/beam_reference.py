"""A plain-Python beam search over whole histories: the independent reference for ``mmedge.decoding``.

It carries no decoder state: ``logits(history)`` recomputes the next token's logits from the
whole token history, so a search that gives one hypothesis another's state disagrees with it.
The rules are those ``mmedge.decoding`` documents: hypotheses ranked by total log-probability
(float64), ties to the lower hypothesis then the lower token, an ended hypothesis kept with its
score frozen, no length normalisation, the best hypothesis (ended or not) returned.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Logits = Callable[[tuple[int, ...]], np.ndarray]  # history (tokens after <bos>) -> logits [vocab]


def log_softmax(logits: np.ndarray) -> np.ndarray:
    x = np.asarray(logits, dtype=np.float64)
    shifted = x - x.max()
    return shifted - np.log(np.exp(shifted).sum())


def reference_search(logits: Logits, *, beam_size: int, max_len: int, eos: int) -> tuple[tuple[int, ...], float]:
    """The best sequence (up to and including <eos>) and its total log-probability."""
    beams: list[tuple[tuple[int, ...], float]] = [((), 0.0)]
    for _ in range(max_len):
        if all(eos in tokens for tokens, _ in beams):
            break
        candidates = []  # (score, beam index, token, tokens)
        for index, (tokens, score) in enumerate(beams):
            if eos in tokens:
                candidates.append((score, index, 0, tokens))
                continue
            for token, lp in enumerate(log_softmax(logits(tokens))):
                candidates.append((score + lp, index, token, (*tokens, token)))
        candidates.sort(key=lambda c: (-c[0], c[1], c[2]))
        beams = [(tokens, score) for score, _, _, tokens in candidates[:beam_size]]
    return max(beams, key=lambda b: b[1])
