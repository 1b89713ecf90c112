"""Strict checks of tensors against the manifest, before onnxruntime ever sees them.

Each check returns readable problem lines ("input 'image': expected float32 [batch, 3, 64, 64],
found uint8 [1, 64, 64, 3]; ...") so callers can collect every problem of a call and raise one
:class:`~mmedge.errors.InputError`. Nothing here casts or reshapes: a mismatch is the user's to
fix, and the message says how.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mmedge.bundle import Dim
from mmedge.errors import InputError

__all__ = ["batch_problems", "describe", "id_range_problems", "raise_problems", "tensor_problems"]


def describe(dtype: Any, shape: Sequence[Dim]) -> str:
    """``float32 [batch, 3, 8, 8]``: how dtypes and shapes appear in every message."""
    return f"{np.dtype(dtype).name} [{', '.join(str(d) for d in shape)}]"


def tensor_problems(what: str, dtype: str, shape: Sequence[Dim], value: Any) -> list[str]:
    """Every way ``value`` differs from a tensor of ``dtype`` and symbolic ``shape``."""
    expected = describe(dtype, shape)
    if not isinstance(value, np.ndarray):
        return [f"{what}: expected a numpy array {expected}, found {type(value).__name__}"]
    found = describe(value.dtype, value.shape)
    if value.dtype != np.dtype(dtype):
        return [
            f"{what}: expected {expected}, found {found}; convert with x.astype(np.{dtype}) if the values are right"
        ]
    if value.ndim != len(shape):
        return [f"{what}: expected {expected}, found {found} (rank {value.ndim}, expected rank {len(shape)})"]
    problems = [
        f"{what}: expected {expected}, found {found} (dim {axis} must be {want})"
        for axis, (want, got) in enumerate(zip(shape, value.shape, strict=True))
        if isinstance(want, int) and want != got
    ]
    if not problems and value.size == 0:
        problems.append(f"{what}: expected {expected}, found {found}, which is empty")
    if not problems and value.dtype.kind == "f":
        bad = ~np.isfinite(value)
        if bad.any():
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            problems.append(f"{what}: {int(bad.sum())} value(s) are NaN or Inf (first at index {first})")
    return problems


def batch_problems(leading: Mapping[str, int]) -> list[str]:
    """One problem if the tensors named in ``leading`` (name → batch size) disagree on batch size."""
    if len(set(leading.values())) <= 1:
        return []
    sizes = ", ".join(f"{name}: {n}" for name, n in leading.items())
    return [f"inputs have different batch sizes ({sizes}); pass the same number of items for every input"]


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
    """Raise one InputError listing every problem, if there are any."""
    if len(problems) == 1:
        raise InputError(problems[0])
    if problems:
        raise InputError(f"{len(problems)} problems with the inputs:\n  - " + "\n  - ".join(problems))
