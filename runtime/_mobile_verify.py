"""Probe inputs for a bundle and the numerical comparison of a mobile component with its source."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mmedge.bundle import Bundle, Dim, InputSpec, Verification

__all__ = ["ATOL", "RTOL", "compare", "max_abs_difference", "probe_inputs", "random_tensor"]

# The reference runs the source graph with the conversion's own session settings, so the only
# differences left are those of fixing shapes and of the ORT format: float32 rounding at most.
ATOL, RTOL = 1e-4, 1e-3


def random_tensor(
    dtype: str, shape: Sequence[int], rng: np.random.Generator, *, high: int = 2, modality: str = "other"
) -> np.ndarray:
    """Plausible values of ``dtype``: token ids below ``high``, waveforms in [-0.5, 0.5), normal floats else."""
    kind = np.dtype(dtype).kind
    if kind == "b":
        return rng.integers(0, 2, shape).astype(bool)
    if kind in "iu":
        return rng.integers(0, high, shape).astype(dtype)
    if modality == "audio":
        return rng.uniform(-0.5, 0.5, shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def _id_bound(bundle: Bundle, spec: InputSpec) -> int:
    """Token ids must index the vocabulary; without one, ids 0 and 1 are valid for any embedding."""
    from mmedge.runtime.text import load_tokenizer

    tokenizer = load_tokenizer(bundle, spec)
    return tokenizer.vocab_size if tokenizer is not None else 2


def probe_inputs(bundle: Bundle, shapes: Mapping[str, tuple[int, ...]], seed: int = 0) -> dict[str, np.ndarray]:
    """One random batch of raw inputs at ``shapes`` (by input name), deterministic for ``seed``."""
    rng = np.random.default_rng(seed)
    out = {}
    for spec in bundle.manifest.inputs:
        high = _id_bound(bundle, spec) if spec.modality == "text" else 2
        out[spec.name] = random_tensor(spec.dtype, shapes[spec.name], rng, high=high, modality=spec.modality)
    return out


def compare(
    reference: Mapping[str, np.ndarray],
    actual: Mapping[str, np.ndarray],
    feeds: Mapping[str, Any],
    *,
    detail: str,
) -> Verification:
    """Every output of ``actual`` against ``reference`` within ATOL/RTOL, as a Verification.

    ``max_rel_error`` is relative to the largest reference magnitude of each output, so outputs
    near zero do not make it meaningless.
    """
    max_abs = max_rel = 0.0
    problems = []
    for name, want in reference.items():
        have = actual[name]
        if have.shape != want.shape:
            problems.append(f"{name}: shape {list(have.shape)}, source {list(want.shape)}")
            continue
        a, b = have.astype(np.float64), want.astype(np.float64)
        both_nan = np.isnan(a) & np.isnan(b)
        diff = np.where(both_nan, 0.0, np.abs(a - b))
        worst = float("inf") if np.isnan(diff).any() else float(diff.max(initial=0.0))  # NaN on one side only
        max_abs = max(max_abs, worst)
        max_rel = max(max_rel, worst / max(float(np.nanmax(np.abs(b), initial=0.0)), 1e-12))
        bad = ~np.isclose(a, b, atol=ATOL, rtol=RTOL, equal_nan=True)
        if bad.any():
            problems.append(f"{name}: {int(bad.sum())}/{bad.size} values differ, max abs error {worst:.3g}")
    shapes: tuple[tuple[Dim, ...], ...] = tuple(tuple(np.shape(v)) for v in feeds.values())
    return Verification(
        stage="mobile",
        reference="source-bundle",
        passed=not problems,
        max_abs_error=max_abs,
        max_rel_error=max_rel,
        atol=ATOL,
        rtol=RTOL,
        shapes=(shapes,),
        detail="; ".join([detail, *problems]),
    )


def max_abs_difference(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> float:
    """The largest absolute difference over the outputs both runs have."""
    return max(
        (float(np.abs(a[k].astype(np.float64) - b[k].astype(np.float64)).max(initial=0.0)) for k in a if k in b),
        default=0.0,
    )
