"""Keep a component FP32 where its quantized graph is not measurably faster on this CPU.

INT8 gains depend on the CPU and the graph. A static INT8 audio CNN whose spectral front-end must
stay FP32 pays Q/DQ at the border and can run no faster than FP32, and a static INT8 fusion head
of one Gemm can spend more time quantizing its input than the Gemm takes in FP32 (measurements:
``benchmarks/NOTES.md``). There, quantization costs accuracy and buys nothing, so for every
component whose recipe was chosen automatically, ``quantize_bundle`` times the FP32 and the
quantized graph interleaved (:func:`mmedge.timing.interleaved_rounds`, sessions opened as the
Pipeline opens them) on the input the component gets at its deploy shape: the manifest's example
shape of every raw input with batch 1, fed through the upstream components, not the calibration
batch.

One timing is a coin flip where the two graphs are close, so the check is a sequential test. Each
round gives one ratio (FP32 median / quantized median); after ``min_rounds`` rounds, and after
every round from then on, the ``confidence`` interval of the ratios' geometric mean (Student t
over their logarithms) is compared with ``min_speedup``: wholly above, INT8 is kept; wholly below,
the component goes back to FP32. Where the interval still straddles the threshold when
``max_rounds`` or ``max_seconds`` is reached, the gain is not measurable on this CPU and the
component stays FP32, which the report and the manifest say (``conclusive: false``). Components
whose FP32 graph runs in under ``MIN_TIMED_MS`` keep their recipe after ``min_rounds``: the time
at stake is less than one Python call costs. The choice is this machine's: quantize on the kind
of CPU you deploy to, or pass ``speed_check=False``.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from mmedge.bundle import InputSpec
from mmedge.errors import QuantizationError
from mmedge.quantize._chain import Chain
from mmedge.quantize._samples import SampleExecutor
from mmedge.quantize.recipes import Recipe
from mmedge.quantize.report import RatioTest, SpeedCheck
from mmedge.timing import interleaved_rounds

__all__ = [
    "MIN_SPEEDUP",
    "MIN_TIMED_MS",
    "RatioTest",
    "SpeedCheck",
    "SpeedPolicy",
    "check_speed",
    "decide",
    "deploy_sample",
    "ratio_interval",
    "sequential_ratio",
    "shapes_text",
    "t_quantile",
]

MIN_SPEEDUP = 1.05  # INT8 must be at least this much faster, with confidence, to be kept
MIN_TIMED_MS = 0.1


@dataclass(frozen=True)
class SpeedPolicy:
    """How long the speed check may time one component, and what it must show."""

    min_speedup: float = MIN_SPEEDUP  # the speed-up INT8 must clear to be kept
    # of the interval that must clear (or miss) it; looking after every round makes the error rate
    # somewhat higher than 1 - confidence, acceptable where a wrong call costs a few percent of speed
    confidence: float = 0.95
    min_rounds: int = 6  # rounds before the first decision (>= 4: the t quantile is exact enough from 3 df)
    max_rounds: int = 200  # then the check stops undecided: FP32
    max_seconds: float = 20.0  # per component, the same
    runs: int = 5  # runs of each graph per round; the round's time is their median

    def problems(self) -> list[str]:
        found = []
        if not self.min_speedup > 0:
            found.append(f"min_speedup must be > 0, found {self.min_speedup}")
        if not 0 < self.confidence < 1:
            found.append(f"confidence must be in (0, 1), found {self.confidence}")
        if not 4 <= self.min_rounds <= self.max_rounds:
            found.append(f"need 4 <= min_rounds <= max_rounds, found {self.min_rounds} and {self.max_rounds}")
        if not self.max_seconds >= 0:
            found.append(f"max_seconds must be >= 0, found {self.max_seconds}")
        if self.runs < 1:
            found.append(f"runs must be >= 1, found {self.runs}")
        return found


def check_speed(
    chain: Chain, components: list[str], threads: int, policy: SpeedPolicy | None = None
) -> dict[str, SpeedCheck]:
    """Time each quantized component against FP32; the ones not measurably faster go back to FP32.

    Reverted components get an fp32 recipe that says why, and they and everything downstream
    are re-quantized (downstream calibration then sees their FP32 outputs).
    """
    policy = policy or SpeedPolicy()
    problems = policy.problems()
    if problems:
        raise QuantizationError("speed check policy: " + "; ".join(problems))
    deploy = SampleExecutor(chain.graph, [deploy_sample(chain.calibration.samples[0], chain.manifest.inputs)])
    checks = {}
    for name in components:
        if not chain.quantizes(name) or not chain.graph.fed_by_wiring(name):
            continue
        if chain.versions[name] == chain.fp32[name]:
            continue  # the recipe supports no op of this graph: it is FP32 already
        feeds = deploy.feeds(chain.versions, name)[0]
        paths = {"fp32": chain.fp32[name], "quantized": chain.versions[name]}
        rounds = interleaved_rounds(paths, feeds, threads=threads, runs=policy.runs, error=QuantizationError)
        shapes = {k: tuple(int(d) for d in np.shape(v)) for k, v in feeds.items()}
        try:
            checks[name] = decide(name, rounds, policy, threads=threads, shapes=shapes)
        finally:
            rounds.close()  # its sessions go now, not whenever the generator is collected
    slower = [name for name, check in checks.items() if check.kept_fp32]
    for name in slower:
        check, recipe = checks[name], chain.recipes[name]
        chain.recipes[name] = Recipe.for_mode(
            "fp32",
            f"{recipe.mode} INT8 was not measurably faster than FP32 on this CPU: {check.why}. "
            f"Auto recipe was: {recipe.reason}. Pass speed_check=False (--no-speed-check) to quantize it anyway",
        )
    if slower:
        chain.rebuild()  # downstream calibration must see the FP32 outputs now
    return checks


def sequential_ratio(
    component: str, rounds: Iterator[Mapping[str, float]], policy: SpeedPolicy, base: str, candidate: str
) -> RatioTest:
    """Take rounds (``{base: ms, candidate: ms}``) until the interval clears ``policy.min_speedup`` or a cap."""
    base_times: list[float] = []
    candidate_times: list[float] = []
    start = time.monotonic()
    for timed in rounds:
        base_times.append(float(timed[base]))
        candidate_times.append(float(timed[candidate]))
        if len(base_times) < policy.min_rounds:
            continue
        _, low, high = ratio_interval(base_times, candidate_times, policy.confidence)
        capped = len(base_times) >= policy.max_rounds or time.monotonic() - start >= policy.max_seconds
        decided = low >= policy.min_speedup or high < policy.min_speedup
        if statistics.median(base_times) < MIN_TIMED_MS or decided or capped:
            break
    if not base_times:
        raise QuantizationError(f"speed check of {component!r}: the timer gave no round")
    speedup, low, high = ratio_interval(base_times, candidate_times, policy.confidence)
    base_ms = statistics.median(base_times)
    return RatioTest(
        base_ms=base_ms,
        candidate_ms=statistics.median(candidate_times),
        rounds=len(base_times),
        seconds=time.monotonic() - start,
        speedup=speedup,
        low=low,
        high=high,
        won=low >= policy.min_speedup,
        lost=high < policy.min_speedup,
        tiny=base_ms < MIN_TIMED_MS,
    )


def decide(
    component: str,
    rounds: Iterator[Mapping[str, float]],
    policy: SpeedPolicy,
    *,
    threads: int,
    shapes: Mapping[str, tuple[int, ...]],
) -> SpeedCheck:
    """Take rounds (``{"fp32": ms, "quantized": ms}``) until the interval clears the threshold or a cap."""
    test = sequential_ratio(component, rounds, policy, "fp32", "quantized")
    interval = test.interval(policy.confidence)
    times = f"{test.candidate_ms:.3f} vs {test.base_ms:.3f} ms at {threads} threads, input {shapes_text(shapes)}"
    if test.tiny and not test.won:
        decision, why = (
            "quantized",
            f"FP32 runs in {test.base_ms:.3f} ms < {MIN_TIMED_MS} ms: too fast to matter; recipe kept",
        )
    elif test.won:
        decision, why = "quantized", f"speed-up {interval} clears {policy.min_speedup}× ({times})"
    elif test.lost:
        decision, why = "fp32", f"speed-up {interval} is below {policy.min_speedup}× ({times})"
    else:
        decision = "fp32"
        why = (
            f"undecided after {test.rounds} rounds / {test.seconds:.1f} s (the cap): speed-up {interval} straddles "
            f"{policy.min_speedup}×, so kept FP32 to be safe ({times})"
        )
    return SpeedCheck(
        component=component,
        fp32_ms=test.base_ms,
        quantized_ms=test.candidate_ms,
        threads=threads,
        shapes=dict(shapes),
        rounds=test.rounds,
        seconds=test.seconds,
        speedup=test.speedup,
        low=test.low,
        high=test.high,
        confidence=policy.confidence,
        threshold=policy.min_speedup,
        decision=decision,
        conclusive=bool(test.won or test.lost or test.tiny),
        why=why,
    )


def ratio_interval(fp32: Sequence[float], quantized: Sequence[float], confidence: float) -> tuple[float, float, float]:
    """Geometric mean of the per-round ratios fp32/quantized and its Student-t ``confidence`` interval."""
    logs = [math.log(f / q) for f, q in zip(fp32, quantized, strict=True) if f > 0 and q > 0]
    if len(logs) < 2:
        return (math.exp(logs[0]) if logs else 1.0), 0.0, math.inf
    mean, spread = statistics.fmean(logs), statistics.stdev(logs)
    half = t_quantile((1 + confidence) / 2, len(logs) - 1) * spread / math.sqrt(len(logs))
    return math.exp(mean), math.exp(mean - half), math.exp(mean + half)


def t_quantile(p: float, df: int) -> float:
    """Student t quantile (Hill 1970's expansion of the normal one; within 1% of exact for df >= 3, p <= 0.995)."""
    z = statistics.NormalDist().inv_cdf(p)
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    return z + g1 / df + g2 / df**2 + g3 / df**3 + g4 / df**4


def deploy_sample(sample: Mapping[str, np.ndarray], inputs: Sequence[InputSpec]) -> dict[str, np.ndarray]:
    """``sample`` cut (or tiled) to each input's deploy shape: batch 1, other dims as the manifest's example.

    A calibration sample may be a batch of 8 or a longer sequence than the model is deployed
    with; timing that measures another workload. An input without an example size keeps the
    sample's size on that axis.
    """
    specs = {i.name: i for i in inputs}
    out = {}
    for name, value in sample.items():
        array = np.asarray(value)
        spec = specs.get(name)
        target = spec.sized_shape(1) if spec is not None else None
        if target is None or len(target) != array.ndim:
            target = (1, *array.shape[1:]) if array.ndim else ()
        out[name] = _fit(array, target)
    return out


def _fit(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``array`` cropped where longer than ``shape`` and repeated (wrapped) where shorter."""
    if array.shape == shape or 0 in array.shape:
        return array if array.shape == shape else np.zeros(shape, array.dtype)
    cropped = array[tuple(slice(0, n) for n in shape)]
    pad = [(0, max(0, n - m)) for n, m in zip(shape, cropped.shape, strict=True)]
    return np.ascontiguousarray(np.pad(cropped, pad, mode="wrap") if any(p for _, p in pad) else cropped)


def shapes_text(shapes: Mapping[str, tuple[int, ...]]) -> str:
    """Input shapes as the report writes them: ``name [1, 3, 224, 224], ...``."""
    return ", ".join(f"{n} {list(s)}" for n, s in shapes.items())
