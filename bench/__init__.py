"""Latency profiling of bundles: ``mmedge bench`` and :func:`bench`.

``bench(bundle, ...)`` times a bundle's components and whole runs (interleaved with the variants
it is compared against: another bundle, the monolithic FP32 graph, PyTorch eager in its own
process), attributes time to operators, and writes JSON/Markdown reports with the machine's
facts. It drives bundles through :class:`mmedge.runtime.Pipeline` and opens every other session
through :mod:`mmedge.sessions`, so it measures what users run.
"""

from mmedge.bench._generate import GenerationStats
from mmedge.bench._markdown import busy_warning, machine_line
from mmedge.bench._types import (
    Attribution,
    BatchResult,
    BenchProgress,
    BenchReport,
    BenchSettings,
    Comparison,
    ComponentLatency,
    Hotspots,
    LatencyStats,
    MachineInfo,
    OpTime,
    Part,
    Startup,
    VariantResult,
)
from mmedge.bench.api import bench

__all__ = [
    "Attribution",
    "BatchResult",
    "BenchProgress",
    "BenchReport",
    "BenchSettings",
    "Comparison",
    "ComponentLatency",
    "GenerationStats",
    "Hotspots",
    "LatencyStats",
    "MachineInfo",
    "OpTime",
    "Part",
    "Startup",
    "VariantResult",
    "bench",
    "busy_warning",
    "machine_line",
]
