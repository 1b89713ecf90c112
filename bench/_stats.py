"""From raw per-iteration timings (nanoseconds) to the statistics of a :class:`BatchResult`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mmedge.bench._types import Attribution, BatchResult, ComponentLatency, LatencyStats, Part

__all__ = ["CONFIDENCE", "RunTiming", "Span", "batch_result", "latency_stats", "median_ratio_interval"]

NS_PER_MS = 1e6
CONFIDENCE = 0.95  # of the speed-up intervals in a report
_RESAMPLES = 2000
_MIN_ROUNDS = 5  # fewer paired rounds give no interval
Span = tuple[str, str, int, int]  # (kind, name, start_ns, end_ns) as Pipeline's trace reports them


@dataclass(frozen=True)
class RunTiming:
    """One timed run of one variant: end to end, its attributed parts, and each component's busy time."""

    e2e_ns: int
    parts: tuple[tuple[str, str, int], ...] = ()  # (name, kind, ns) in pipeline order
    busy: Mapping[str, int] = field(default_factory=dict)  # component → ns inside it

    def to_json(self) -> dict[str, Any]:
        return {"e2e_ns": self.e2e_ns, "parts": [list(p) for p in self.parts], "busy": dict(self.busy)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunTiming:
        parts = tuple((str(n), str(k), int(ns)) for n, k, ns in data["parts"])
        return cls(int(data["e2e_ns"]), parts, {str(k): int(v) for k, v in data["busy"].items()})


def latency_stats(ns: Sequence[int]) -> LatencyStats:
    """Mean, percentiles, min/max and standard deviation in milliseconds."""
    a = np.asarray(ns, dtype=np.float64) / NS_PER_MS
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return LatencyStats(
        count=len(a),
        mean_ms=float(a.mean()),
        p50_ms=float(p50),
        p90_ms=float(p90),
        p99_ms=float(p99),
        min_ms=float(a.min()),
        max_ms=float(a.max()),
        std_ms=float(a.std()),
    )


def batch_result(batch: int, samples: Sequence[RunTiming], warm_ns: Sequence[int] = ()) -> BatchResult:
    """Statistics of ``samples`` (at least one) taken at batch size ``batch``, and of the warm runs' times."""
    latency = latency_stats([s.e2e_ns for s in samples])
    names = list(dict.fromkeys(name for s in samples for name in s.busy))
    components = tuple(
        ComponentLatency(name, latency_stats([s.busy[name] for s in samples if name in s.busy])) for name in names
    )
    throughput = batch / (latency.p50_ms / 1e3) if latency.p50_ms > 0 else 0.0
    warm = latency_stats(warm_ns) if warm_ns else None
    return BatchResult(batch, latency, throughput, components, attribution(samples), warm)


def attribution(samples: Sequence[RunTiming]) -> Attribution:
    """Mean time of each part; means add up, so parts sum to the mean end-to-end time when complete."""
    n = len(samples)
    totals: dict[tuple[str, str], int] = {}
    for s in samples:
        for name, kind, ns in s.parts:
            totals[(name, kind)] = totals.get((name, kind), 0) + ns
    e2e = sum(s.e2e_ns for s in samples) / n / NS_PER_MS
    parts = tuple(
        Part(name, kind, total / n / NS_PER_MS, (total / n / NS_PER_MS) / e2e if e2e > 0 else 0.0)
        for (name, kind), total in totals.items()
    )
    return Attribution(parts, e2e, e2e - sum(p.mean_ms for p in parts))


def median_ratio_interval(
    base_ns: Sequence[int], subject_ns: Sequence[int], confidence: float = CONFIDENCE
) -> tuple[float, float] | None:
    """A ``confidence`` interval of ``median(base) / median(subject)`` (the p50 speed-up).

    Paired bootstrap over rounds: the i-th time of each variant comes from the same interleaved
    round, so resampling rounds keeps what a busy moment did to both. Percentile interval of
    ``_RESAMPLES`` resamples, seeded (the same samples give the same interval). None with fewer
    than ``_MIN_ROUNDS`` rounds.

    Why: one run's p50 ratio moves by ±10% on a 2-core machine with any background load; a
    verdict ("faster", "slower") is only worth stating when the interval excludes 1×.
    """
    n = min(len(base_ns), len(subject_ns))
    if n < _MIN_ROUNDS:
        return None
    base = np.asarray(base_ns[:n], dtype=np.float64)
    subject = np.asarray(subject_ns[:n], dtype=np.float64)
    rounds = np.random.default_rng(0).integers(0, n, size=(_RESAMPLES, n))
    ratios = np.median(base[rounds], axis=1) / np.median(subject[rounds], axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(ratios, [tail, 100 - tail])
    return float(low), float(high)
