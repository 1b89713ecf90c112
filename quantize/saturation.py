"""Catch INT8 kernels that saturate on this CPU, and re-quantize those components with 7-bit weights.

On x86 CPUs without VNNI, onnxruntime's U8S8 kernels multiply with VPMADDUBSW, which adds two
u8 x s8 products into a saturating int16: large activations against two large weights of the same
sign clip (onnxruntime's quantization guide: try ``reduce_range`` or U8U8 when accuracy drops).
On such CPUs whole components can drift far from their own quantized arithmetic, and a small
dynamic LSTM encoder far from FP32, while 7-bit weights bring them back (cosines measured on the
reference models: ``benchmarks/NOTES.md``).

Static components need no FP32 reference: the QDQ graph run without graph optimisation computes
the quantized arithmetic exactly in float; with full optimisation it runs the fused INT8 kernels.
A static component whose two runs disagree (cosine below ``KERNEL_MIN_COSINE``) on calibration
samples is re-quantized with ``reduce_range`` (7-bit weights: 2 x 255 x 64 < 32768, nothing can
clip), with everything downstream of it. Dynamic components (MatMulInteger, DynamicQuantizeLSTM)
run the same kernels at every optimisation level, so on a CPU whose kernels can saturate they are
quantized both ways and the one whose model outputs are closer to FP32 (higher SQNR on the
calibration samples, the rest of the bundle FP32) is kept: 8-bit weights where nothing clips, as
they are finer. On a CPU with VNNI nothing changes.
The manifest records what the check saw (``kernels_checked_on``); a Pipeline that loads a bundle
checked on such a CPU onto one without VNNI raises a :class:`~mmedge.errors.SaturationWarning`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from mmedge.cpu import int8_kernels_saturate
from mmedge.errors import QuantizationError, translated
from mmedge.quantize._chain import Chain
from mmedge.quantize._metrics import compare
from mmedge.sessions import create_session, plain_options

__all__ = ["KERNEL_MIN_COSINE", "KERNEL_SAMPLES", "fix_saturation", "kernel_agreement"]

KERNEL_MIN_COSINE = 0.99  # fused kernels vs the exact QDQ arithmetic; rounding alone stays well above it
KERNEL_SAMPLES = 8  # calibration samples run both ways


def kernel_agreement(path: Path, feeds: Sequence[dict[str, np.ndarray]]) -> float:
    """Lowest cosine, over outputs and samples, between ``path``'s fused INT8 kernels and its exact QDQ arithmetic."""
    runs = []
    for level in ("disable", "all"):
        with translated(QuantizationError, f"checking the INT8 kernels of {path.name}"):
            session = create_session(path, plain_options(optimization=level, log_severity=3))
            runs.append([session.run(None, feed) for feed in feeds])
    exact, fused = runs
    if not feeds:
        return 1.0
    outputs = range(len(exact[0]))
    return min(compare(str(i), [r[i] for r in exact], [r[i] for r in fused]).min_cosine for i in outputs)


def fix_saturation(chain: Chain, say: Callable[[str], None]) -> list[str]:
    """Re-quantize, with ``reduce_range``, every INT8 component whose kernels saturate here; notes for the report."""
    notes = []
    for component in chain.graph.order():
        recipe = chain.recipes.get(component)
        if recipe is None or recipe.reduce_range or chain.versions[component] == chain.fp32[component]:
            continue  # nothing was quantized, or with 7-bit weights already
        if recipe.mode == "static":
            note = _static(chain, component, say)
        elif recipe.mode == "dynamic" and int8_kernels_saturate():
            note = _dynamic(chain, component, say)
        else:
            continue
        if note:
            notes.append(note)
    return notes


def _static(chain: Chain, component: str, say: Callable[[str], None]) -> str | None:
    """Compare the fused kernels with the exact QDQ arithmetic; 7-bit weights where they disagree."""
    feeds = chain.calibration.feeds(chain.versions, component)[:KERNEL_SAMPLES]
    cosine = kernel_agreement(chain.versions[component], feeds)
    if cosine >= KERNEL_MIN_COSINE:
        return None
    say(f"{component}: INT8 kernels saturate on this CPU (cosine {cosine:.3f}); re-quantizing with 7-bit weights")
    _use_reduced_range(
        chain,
        component,
        f"this CPU's INT8 kernels saturated with 8-bit weights (cosine {cosine:.3f} with the exact quantized "
        "arithmetic): 7-bit weights (reduce_range)",
    )
    after = kernel_agreement(chain.versions[component], feeds)  # its inputs come from upstream: unchanged
    return (
        f"{component}: INT8 kernels saturated on this CPU (cosine {cosine:.3f} with the exact quantized arithmetic); "
        f"re-quantized with 7-bit weights (reduce_range): cosine {after:.3f}"
    )


def _dynamic(chain: Chain, component: str, say: Callable[[str], None]) -> str | None:
    """Quantize with 7-bit weights too; keep them if the bundle's outputs come closer to FP32."""
    recipe = chain.recipes[component]
    chain.recipes[component] = dataclasses.replace(recipe, reduce_range=True)
    reduced, _ = chain.build(component)
    chain.recipes[component] = recipe
    full_db, reduced_db = (_sqnr_db(chain, component, path) for path in (chain.versions[component], reduced))
    chain.discard(reduced)
    if reduced_db <= full_db:
        return None
    say(f"{component}: INT8 kernels saturate on this CPU; 7-bit weights are closer to FP32, re-quantizing")
    _use_reduced_range(
        chain,
        component,
        f"this CPU's INT8 kernels can saturate (no VNNI) and 7-bit weights (reduce_range) brought the outputs "
        f"closer to FP32 than 8-bit ones (SQNR {full_db:.1f} → {reduced_db:.1f} dB)",
    )
    return (
        f"{component}: INT8 kernels saturated on this CPU with 8-bit weights; 7-bit weights (reduce_range) "
        f"raised the outputs' SQNR against FP32 from {full_db:.1f} to {reduced_db:.1f} dB"
    )


def _sqnr_db(chain: Chain, component: str, path: Path) -> float:
    """Lowest SQNR of the model outputs on calibration samples, ``component`` from ``path``, the rest FP32."""
    results = chain.end_to_end(chain.only(component, path), chain.calibration)
    return min((r.comparison.sqnr_db for r in results), default=math.inf)


def _use_reduced_range(chain: Chain, component: str, why: str) -> None:
    """Give ``component`` 7-bit weights, saying why, and re-quantize it and everything downstream."""
    recipe = chain.recipes[component]
    chain.recipes[component] = dataclasses.replace(recipe, reduce_range=True, reason=f"{recipe.reason}; {why}")
    chain.rebuild(component)
