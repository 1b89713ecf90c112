"""Latency of alternative ONNX graphs of one component, measured interleaved so drift hits all alike.

Sessions are opened as the runtime opens them (ORT_ENABLE_ALL, ``threads`` intra-op threads, one
inter-op thread), so a graph fused offline is compared with what ORT's own load-time
optimisations make of the unfused one. Each round runs every graph ``runs`` times in turn; the
result is the median of all runs.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from mmedge.errors import ExportError, translated

__all__ = ["interleaved_latency", "open_session"]


def open_session(path: Path, threads: int) -> object:
    """An ORT CPU session configured like the runtime's."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    with translated(ExportError, f"onnxruntime cannot load {path.name}"):
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def interleaved_latency(
    paths: Mapping[str, Path],
    feeds: Mapping[str, np.ndarray],
    *,
    threads: int,
    rounds: int = 10,
    runs: int = 5,
    warmup: int = 3,
) -> dict[str, float]:
    """Median milliseconds per run of each graph in ``paths`` on ``feeds``."""
    sessions = {name: open_session(path, threads) for name, path in paths.items()}
    for session in sessions.values():
        for _ in range(warmup):
            session.run(None, dict(feeds))
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(rounds):
        for name, session in sessions.items():
            for _ in range(runs):
                start = time.perf_counter()
                session.run(None, dict(feeds))
                times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(values) for name, values in times.items()}
