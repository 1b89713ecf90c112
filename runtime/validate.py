"""Strict checks of tensors against the manifest, before onnxruntime ever sees them.

Each check returns readable problem lines ("input 'image': expected float32 [batch, 3, 64, 64],
found uint8 [1, 64, 64, 3]; ...") so callers can collect every problem of a call and raise one
:class:`~mmedge.errors.InputError`. Nothing here casts or reshapes: a mismatch is the user's to
fix, and the message says how.
"""

from __future__ import annotations

import reprlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mmedge.bundle import Dim
from mmedge.errors import InputError

__all__ = [
    "all_finite",
    "batch_problems",
    "describe",
    "id_range_problems",
    "nonfinite_problems",
    "raise_problems",
    "short_repr",
    "tensor_problems",
]

_LISTED = 20  # problems listed in one error; the count says how many more
_SMALL = 2**20  # elements up to which all_finite checks each value instead of the sum
_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 80


def describe(dtype: Any, shape: Sequence[Dim]) -> str:
    """``float32 [batch, 3, 8, 8]``: how dtypes and shapes appear in every message."""
    dtype = np.dtype(dtype)
    order = {"<": "little-endian ", ">": "big-endian "}.get(dtype.byteorder, "") if not dtype.isnative else ""
    return f"{order}{dtype.name} [{', '.join(str(d) for d in shape)}]"


def short_repr(value: Any) -> str:
    """``repr(value)`` cut to about 80 characters, for user-given keys and values in messages."""
    return _REPR.repr(value)


def tensor_problems(what: str, dtype: str, shape: Sequence[Dim], value: Any) -> list[str]:
    """Every way ``value`` differs from a tensor of ``dtype`` and symbolic ``shape``."""
    if not isinstance(value, np.ndarray):
        return [f"{what}: expected a numpy array {describe(dtype, shape)}, found {type(value).__name__}"]

    def mismatch(detail: str) -> list[str]:
        return [f"{what}: expected {describe(dtype, shape)}, found {describe(value.dtype, value.shape)}{detail}"]

    if value.dtype != np.dtype(dtype):
        return mismatch(f"; convert with x.astype(np.{dtype}) if the values are right")
    if value.ndim != len(shape):
        return mismatch(f" (rank {value.ndim}, expected rank {len(shape)})")
    wrong = [
        (axis, want)
        for axis, (want, got) in enumerate(zip(shape, value.shape, strict=True))
        if isinstance(want, int) and want != got
    ]
    if wrong:
        return mismatch(" (" + ", ".join(f"dim {axis} must be {want}" for axis, want in wrong) + ")")
    if value.size == 0:
        return mismatch(", which is empty")
    return nonfinite_problems(what, value)


def all_finite(value: np.ndarray) -> bool:
    """Whether a float array holds no NaN or Inf (any other dtype: True).

    Up to ``_SMALL`` elements (logits, a 224² image) each value is checked: faster here, warm and
    from cold caches, than the sum with the error-state context it needs (``benchmarks/NOTES.md``).
    For larger arrays the sum is finite unless a value is NaN or Inf (or the sum overflows, which
    the exact check then clears): one pass with no temporary array the size of the input.
    """
    if value.dtype.kind != "f":
        return True
    if value.size <= _SMALL:
        return bool(np.isfinite(value).all())
    with np.errstate(over="ignore", invalid="ignore"):  # inf - inf, or an overflowing sum, is the exact check's case
        total = np.add.reduce(value, axis=None)
    return bool(np.isfinite(total) or np.isfinite(value).all())


def nonfinite_problems(what: str, value: np.ndarray) -> list[str]:
    """One problem if a float array holds NaN or Inf, saying how many and where the first is."""
    if all_finite(value):
        return []
    bad = ~np.isfinite(value)
    first = tuple(int(i) for i in np.argwhere(bad)[0])
    return [f"{what}: {int(bad.sum())} value(s) are NaN or Inf (first at index {first})"]


def batch_problems(leading: Mapping[str, tuple[str, int]]) -> list[str]:
    """A problem per batch symbol whose tensors disagree on its size; ``leading``: tensor name → (the batch
    symbol of its first axis, its size). Inputs of a model scoring every item of one modality against
    every item of another count their items by their own symbol (``text_batch``, ``image_batch``)."""
    groups: dict[str, dict[str, int]] = {}
    for name, (symbol, size) in leading.items():
        groups.setdefault(symbol, {})[name] = size
    problems = []
    for symbol, sizes in groups.items():
        if len(set(sizes.values())) > 1:
            listed = ", ".join(f"{name}: {n}" for name, n in sizes.items())
            which = "inputs" if len(groups) == 1 else f"inputs counted by {symbol!r}"
            problems.append(f"{which} have different batch sizes ({listed}); pass the same number of items for each")
    return problems


def id_range_problems(what: str, ids: np.ndarray, vocab_size: int | None) -> list[str]:
    """Token ids must index the vocabulary: ``0 <= id < vocab_size`` (upper bound when known)."""
    if ids.dtype.kind not in "iu" or ids.size == 0:
        return []
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or (vocab_size is not None and high >= vocab_size):
        bound = f"[0, {vocab_size})" if vocab_size is not None else "non-negative"
        return [f"{what}: token ids must be {bound}, found values from {low} to {high}"]
    return []


def raise_problems(problems: Sequence[str]) -> None:
    """Raise one InputError listing every problem (the first 20 of many), if there are any."""
    if len(problems) == 1:
        raise InputError(problems[0])
    if problems:
        more = [f"... and {len(problems) - _LISTED} more"] if len(problems) > _LISTED else []
        listed = "\n  - ".join([*problems[:_LISTED], *more])
        raise InputError(f"{len(problems)} problems with the inputs:\n  - {listed}")
