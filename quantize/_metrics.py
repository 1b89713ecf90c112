"""How far quantized outputs are from FP32 ones: cosine, errors, SQNR, top-1 agreement, accuracy.

Every function takes lists of arrays, one per sample, whose first axis is the batch (each
sample may hold several examples). Per-example numbers (cosine, argmax) are computed row by
row so that one bad example is not averaged away by a large batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from mmedge.bundle import RANKED_KINDS
from mmedge.errors import QuantizationError
from mmedge.quantize.report import TensorComparison
from mmedge.verify import top1_matches

__all__ = ["AGREEMENT_KINDS", "accuracy", "agreement", "compare", "noise_ratio"]

AGREEMENT_KINDS = {**dict.fromkeys(RANKED_KINDS, "top1"), "token_ids": "exact"}


def _rows(array: np.ndarray) -> np.ndarray:
    """One float64 row per example of one sample: [examples, features]."""
    return np.asarray(array, np.float64).reshape(max(array.shape[0], 1) if array.ndim else 1, -1)


def compare(tensor: str, ref: Sequence[np.ndarray], test: Sequence[np.ndarray]) -> TensorComparison:
    """Error statistics of ``test`` against the reference ``ref`` (lists of per-sample arrays; samples
    may differ in shape, as audio clips kept at their own lengths do)."""
    cosines, max_abs, scale, signal, noise = [], 0.0, 0.0, 0.0, 0.0
    for r, t in zip(ref, test, strict=True):
        a, b = _rows(r), _rows(t)
        na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
        safe = np.where(na * nb > 0, na * nb, 1.0)
        # Two all-zero rows agree perfectly; one all-zero row against a non-zero one not at all.
        cosines.append(np.where(na * nb > 0, np.sum(a * b, axis=1) / safe, ((na == 0) & (nb == 0)).astype(np.float64)))
        if a.size:
            max_abs, scale = max(max_abs, float(np.abs(a - b).max())), max(scale, float(np.abs(a).max()))
        signal, noise = signal + float(np.sum(a * a)), noise + float(np.sum((a - b) ** 2))
    cos = np.concatenate(cosines) if cosines else np.zeros(0)
    signal, noise = math.sqrt(signal), math.sqrt(noise)
    return TensorComparison(
        tensor=tensor,
        cosine=float(np.mean(cos)) if cos.size else 1.0,
        min_cosine=float(np.min(cos)) if cos.size else 1.0,
        max_abs_error=max_abs,
        max_rel_error=max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else math.inf),
        sqnr_db=20 * math.log10(signal / noise)
        if noise > 0 and signal > 0
        else (math.inf if noise == 0 else -math.inf),
    )


def agreement(kind: str, ref: Sequence[np.ndarray], test: Sequence[np.ndarray]) -> float:
    """Fraction of predictions that match: the top-1 over the last axis for logits/scores (any of the
    reference's exactly tied top classes), exact equality for token ids."""
    if AGREEMENT_KINDS[kind] == "top1":
        same = [top1_matches(np.asarray(r), np.asarray(t)) for r, t in zip(ref, test, strict=True)]
    else:
        same = [np.asarray(r) == np.asarray(t) for r, t in zip(ref, test, strict=True)]
    flat = np.concatenate([s.reshape(-1) for s in same]) if same else np.zeros(0, bool)
    return float(flat.mean()) if flat.size else 1.0


def accuracy(logits: Sequence[np.ndarray], labels: np.ndarray) -> float:
    """Top-1 accuracy of ``logits`` against one integer label per prediction."""
    predicted = np.concatenate([np.argmax(x, axis=-1).reshape(-1) for x in logits])
    labels = np.asarray(labels).reshape(-1)
    if predicted.shape != labels.shape:
        raise QuantizationError(
            f"labels has {labels.size} entries but the held-out samples give {predicted.size} predictions; "
            "pass one label per held-out example, in order"
        )
    return float(np.mean(predicted == labels))


def noise_ratio(pre: Sequence[np.ndarray], post: Sequence[np.ndarray]) -> float:
    """Rounding noise of a quantized tensor relative to its *typical* magnitude.

    ``pre`` is the tensor before its QuantizeLinear, ``post`` after its DequantizeLinear. Values
    are first clipped to the range ``post`` reaches, which removes intentional saturation (a
    Relu folded into the quantization, a percentile range). Then: mean |error| divided by the
    median non-zero |value|. Unlike SQNR, which one outlier channel dominates (it sets the
    scale, so the small values that carry the information round to zero while the norm barely
    moves), this is near 1 when typical values are destroyed and ~0.01 when they are not.
    """
    b = np.concatenate([np.asarray(x, np.float64).reshape(-1) for x in post])
    a = np.clip(
        np.concatenate([np.asarray(x, np.float64).reshape(-1) for x in pre]), b.min(initial=0.0), b.max(initial=0.0)
    )
    magnitude = np.abs(a[a != 0])
    if magnitude.size == 0:
        return 0.0 if np.all(b == 0) else math.inf
    return float(np.mean(np.abs(a - b)) / np.median(magnitude))
