"""Catch INT8 kernels that saturate on this CPU, and re-quantize those components with 7-bit weights.

On x86 CPUs without VNNI, onnxruntime's U8S8 kernels multiply with VPMADDUBSW, which adds two
u8 x s8 products into a saturating int16: large activations against two large weights of the same
sign clip (onnxruntime's quantization guide: try ``reduce_range`` or U8U8 when accuracy drops).
Measured here (AVX2): TriModalNet's INT8 audio encoder agreed with its own quantized arithmetic
at cosine 0.75, a fusion head at 0.96, ResNet-18 at 0.998.

The check needs no FP32 reference: the QDQ graph run without graph optimisation computes the
quantized arithmetic exactly in float; with full optimisation it runs the fused INT8 kernels. A
static component whose two runs disagree (cosine below ``KERNEL_MIN_COSINE``) on calibration
samples is re-quantized with ``reduce_range`` (7-bit weights: 2 x 255 x 64 < 32768, nothing can
clip), with everything downstream of it. On a CPU with VNNI the two runs agree and nothing changes.
The manifest records what the check saw (``kernels_checked_on``); a Pipeline that loads a bundle
checked on such a CPU onto one without VNNI raises a :class:`~mmedge.errors.SaturationWarning`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from mmedge.quantize._chain import Chain
from mmedge.quantize._graph import topological
from mmedge.quantize._metrics import compare

from mmedge.errors import QuantizationError, translated

__all__ = ["KERNEL_MIN_COSINE", "KERNEL_SAMPLES", "fix_saturation", "kernel_agreement"]

KERNEL_MIN_COSINE = 0.99  # fused kernels vs the exact QDQ arithmetic; rounding alone stays above 0.998
KERNEL_SAMPLES = 8  # calibration samples run both ways


def kernel_agreement(path: Path, feeds: Sequence[dict[str, np.ndarray]]) -> float:
    """Lowest cosine, over outputs and samples, between ``path``'s fused INT8 kernels and its exact QDQ arithmetic."""
    import onnxruntime as ort

    runs = []
    for level in (ort.GraphOptimizationLevel.ORT_DISABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
        options = ort.SessionOptions()
        options.graph_optimization_level = level
        options.log_severity_level = 3
        with translated(QuantizationError, f"checking the INT8 kernels of {path.name}"):
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            runs.append([session.run(None, feed) for feed in feeds])
    exact, fused = runs
    if not feeds:
        return 1.0
    outputs = range(len(exact[0]))
    return min(compare(str(i), [r[i] for r in exact], [r[i] for r in fused]).min_cosine for i in outputs)


def fix_saturation(chain: Chain, say: Callable[[str], None]) -> list[str]:
    """Re-quantize, with ``reduce_range``, every static component whose INT8 kernels saturate here; notes for the report."""
    notes = []
    for component in (c.name for c in topological(chain.manifest)):
        recipe = chain.recipes.get(component)
        if recipe is None or recipe.mode != "static" or recipe.reduce_range:
            continue
        if chain.versions[component] == chain.fp32[component]:
            continue  # nothing was quantized
        feeds = chain.calibration.feeds(chain.versions, component)[:KERNEL_SAMPLES]
        cosine = kernel_agreement(chain.versions[component], feeds)
        if cosine >= KERNEL_MIN_COSINE:
            continue
        say(f"{component}: INT8 kernels saturate on this CPU (cosine {cosine:.3f}); re-quantizing with 7-bit weights")
        why = (
            f"; this CPU's INT8 kernels saturated with 8-bit weights (cosine {cosine:.3f} with the exact quantized "
            "arithmetic): 7-bit weights (reduce_range)"
        )
        chain.recipes[component] = dataclasses.replace(recipe, reduce_range=True, reason=recipe.reason + why)
        chain.rebuild(component)
        after = kernel_agreement(chain.versions[component], feeds)  # its inputs come from upstream: unchanged
        notes.append(
            f"{component}: INT8 kernels saturated on this CPU (cosine {cosine:.3f} with the exact quantized arithmetic); "
            f"re-quantized with 7-bit weights (reduce_range): cosine {after:.3f}"
        )
    return notes
