"""Probe inputs for a bundle, and the tolerance a mobile component is verified with (``mmedge.verify``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from mmedge.bundle import Bundle, InputSpec
from mmedge.bundle.vocab import vocab_size

__all__ = ["ATOL", "RTOL", "max_abs_difference", "probe_inputs", "random_tensor"]

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
    return vocab_size(bundle, spec) or 2


def probe_inputs(bundle: Bundle, shapes: Mapping[str, tuple[int, ...]], seed: int = 0) -> dict[str, np.ndarray]:
    """One random batch of raw inputs at ``shapes`` (by input name), deterministic for ``seed``."""
    rng = np.random.default_rng(seed)
    out = {}
    for spec in bundle.manifest.inputs:
        high = _id_bound(bundle, spec) if spec.modality == "text" else 2
        out[spec.name] = random_tensor(spec.dtype, shapes[spec.name], rng, high=high, modality=spec.modality)
    return out


def max_abs_difference(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> float:
    """The largest absolute difference over the outputs both runs have."""
    return max(
        (float(np.abs(a[k].astype(np.float64) - b[k].astype(np.float64)).max(initial=0.0)) for k in a if k in b),
        default=0.0,
    )
