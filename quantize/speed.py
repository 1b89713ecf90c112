"""Keep a component FP32 where its quantized graph does not run faster on this CPU.

INT8 gains depend on the CPU and the graph. A static INT8 audio CNN whose spectral front-end must
stay FP32 pays Q/DQ at the border and can run no faster than FP32, and a static INT8 fusion head
of one Gemm can spend more time quantizing its input than the Gemm takes in FP32 (measurements:
``benchmarks/NOTES.md``). There, quantization costs accuracy and buys nothing, so
for every component whose recipe was chosen automatically, ``quantize_bundle`` times the FP32
and the quantized graph interleaved (:func:`mmedge.timing.interleaved_latency`, sessions
opened as the Pipeline opens them) on a calibration input, and keeps FP32 unless the quantized
graph is at least ``MIN_SPEEDUP`` faster. Components whose FP32 graph runs in under
``MIN_TIMED_MS`` keep their recipe: at that size the timing is mostly noise and the time at stake
is less than one Python call costs. The report records both times. The choice is this machine's:
quantize on the kind of CPU you deploy to, or pass ``speed_check=False``.
"""

from __future__ import annotations

from dataclasses import dataclass

from mmedge.errors import QuantizationError
from mmedge.quantize._chain import Chain
from mmedge.quantize.recipes import Recipe
from mmedge.timing import interleaved_latency

__all__ = ["MIN_SPEEDUP", "MIN_TIMED_MS", "SpeedCheck", "check_speed"]

MIN_SPEEDUP = 1.05  # below this, timing noise could be all the gain
MIN_TIMED_MS = 0.1


@dataclass(frozen=True)
class SpeedCheck:
    """One component's FP32 and quantized latency on a calibration input (median ms)."""

    component: str
    fp32_ms: float
    quantized_ms: float
    threads: int

    @property
    def speedup(self) -> float:
        return self.fp32_ms / self.quantized_ms if self.quantized_ms else float("inf")

    @property
    def kept_fp32(self) -> bool:
        return self.fp32_ms >= MIN_TIMED_MS and self.speedup < MIN_SPEEDUP


def check_speed(chain: Chain, components: list[str], threads: int) -> dict[str, SpeedCheck]:
    """Time each quantized component against FP32; the ones that do not gain go back to FP32.

    Reverted components get an fp32 recipe that says why, and they and everything downstream
    are re-quantized (downstream calibration then sees their FP32 outputs).
    """
    checks = {}
    for name in components:
        if not chain.quantizes(name) or not chain.graph.fed_by_wiring(name):
            continue
        if chain.versions[name] == chain.fp32[name]:
            continue  # the recipe supports no op of this graph: it is FP32 already
        feeds = chain.calibration.feeds(chain.versions, name)[0]
        paths = {"fp32": chain.fp32[name], "quantized": chain.versions[name]}
        timed = interleaved_latency(paths, feeds, threads=threads, error=QuantizationError)
        checks[name] = SpeedCheck(name, timed["fp32"], timed["quantized"], threads)
    slower = [name for name, check in checks.items() if check.kept_fp32]
    for name in slower:
        check, recipe = checks[name], chain.recipes[name]
        chain.recipes[name] = Recipe.for_mode(
            "fp32",
            f"{recipe.mode} INT8 was not faster than FP32 on this CPU ({check.quantized_ms:.3f} vs "
            f"{check.fp32_ms:.3f} ms at {threads} threads, {check.speedup:.2f}× < {MIN_SPEEDUP}×): kept FP32. "
            f"Auto recipe was: {recipe.reason}. Pass speed_check=False (--no-speed-check) to quantize it anyway",
        )
    if slower:
        chain.rebuild()  # downstream calibration must see the FP32 outputs now
    return checks
