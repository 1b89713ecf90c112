"""Latency of alternative ONNX graphs of one component, measured interleaved so drift hits all alike.

Export uses it to keep a fused transformer graph only if it is faster, and quantize to keep INT8
only where it beats FP32 on this CPU. Sessions are opened as the Pipeline opens them
(``ORT_ENABLE_ALL``, ``threads`` intra-op threads that sleep when idle, one inter-op thread), so a
graph rewritten offline is compared with what ORT's own load-time optimisations make of the
original. Each round runs every graph ``runs`` times in turn; the result is the median of all runs.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from mmedge.errors import MMEdgeError
from mmedge.sessions import SessionSettings, create_session, session_options

__all__ = ["interleaved_latency"]


def interleaved_latency(
    paths: Mapping[str, Path],
    feeds: Mapping[str, np.ndarray],
    *,
    threads: int,
    rounds: int = 10,
    runs: int = 5,
    warmup: int = 3,
    error: type[MMEdgeError] = MMEdgeError,
) -> dict[str, float]:
    """Median milliseconds per run of each graph in ``paths`` on ``feeds``; ``error`` if one cannot load."""
    sessions = {name: _open(name, Path(path), threads, error) for name, path in paths.items()}
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


def _open(name: str, path: Path, threads: int, error: type[MMEdgeError]) -> object:
    options = session_options(name, threads, SessionSettings())
    return create_session(path, options, error=error, what=f"onnxruntime cannot load {path.name}")
