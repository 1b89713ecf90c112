"""Latency of alternative ONNX graphs of one component, measured interleaved so drift hits all alike.

Export uses it to keep a fused transformer graph only if it is faster, and quantize to keep INT8
only where it beats FP32 on this CPU. Sessions are opened as the Pipeline opens them
(``ORT_ENABLE_ALL``, ``threads`` intra-op threads that sleep when idle, one inter-op thread), so a
graph rewritten offline is compared with what ORT's own load-time optimisations make of the
original. Each round runs every graph ``runs`` times in turn, the order reversed every other round
(A B, B A, ...) so that a drift within a round favours no graph. :func:`interleaved_latency` is
the median of all runs; :func:`interleaved_rounds` yields each round's medians, for a caller that
keeps timing until a comparison is decided (the quantize speed check). ``backends`` names the
graphs to run with another backend than onnxruntime (``"openvino"``: :mod:`mmedge.openvino_backend`),
which is how quantize times one file on both. ``idle_s`` sleeps before every timed run, so each one
starts with its runtime's threads asleep, as a request reaching an idle process does: runtimes
differ in what that costs (OpenVINO's pool more than onnxruntime's, ``benchmarks/NOTES.md``), and
back-to-back runs would hide it.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from mmedge.errors import MMEdgeError, translated
from mmedge.providers import OPENVINO
from mmedge.sessions import SessionSettings, create_session, session_options

__all__ = ["Runnable", "interleaved_latency", "interleaved_rounds", "open_for_timing", "run_times"]


class Runnable(Protocol):
    """What is timed: an onnxruntime session, or anything run the same way."""

    def run(self, output_names: Any, feeds: Mapping[str, np.ndarray]) -> Any: ...


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
    times: dict[str, list[float]] = {name: [] for name in paths}
    timed = _round_times(paths, feeds, threads=threads, runs=runs, warmup=warmup, error=error)
    for _, per_graph in zip(range(rounds), timed, strict=False):
        for name, values in per_graph.items():
            times[name].extend(values)
    return {name: statistics.median(values) for name, values in times.items()}


def interleaved_rounds(
    paths: Mapping[str, Path],
    feeds: Mapping[str, np.ndarray],
    *,
    threads: int,
    runs: int = 5,
    warmup: int = 3,
    error: type[MMEdgeError] = MMEdgeError,
    backends: Mapping[str, str] | None = None,
    idle_s: float = 0.0,
    evict_bytes: int = 0,
    opened: Mapping[str, Runnable] | None = None,
) -> Iterator[dict[str, float]]:
    """Each round's median milliseconds per graph, round after round, for as long as the caller asks.

    The sessions are opened and warmed up once, before the first round; ``error`` if one cannot load.
    ``backends``: graph name → ``"openvino"`` for graphs to run on OpenVINO instead of onnxruntime;
    ``idle_s``: seconds of sleep before each timed run; ``evict_bytes``: a buffer of that size written
    before each timed run (after the sleep), so each run meets caches that other work has filled, as
    a request reaching a process that does other things does; ``opened``: more contenders by name, already
    open (anything with a session's ``run(None, feeds)``: several components run in turn, say).
    """
    timed = _round_times(
        paths,
        feeds,
        threads=threads,
        runs=runs,
        warmup=warmup,
        error=error,
        backends=backends,
        idle_s=idle_s,
        evict_bytes=evict_bytes,
        opened=opened,
    )
    for per_graph in timed:
        yield {name: statistics.median(values) for name, values in per_graph.items()}


def _round_times(
    paths: Mapping[str, Path],
    feeds: Mapping[str, np.ndarray],
    *,
    threads: int,
    runs: int,
    warmup: int,
    error: type[MMEdgeError],
    backends: Mapping[str, str] | None = None,
    idle_s: float = 0.0,
    evict_bytes: int = 0,
    opened: Mapping[str, Runnable] | None = None,
) -> Iterator[dict[str, list[float]]]:
    """Milliseconds of every run of every graph, one round at a time, without end."""
    backends = backends or {}
    sessions = {
        name: open_for_timing(name, Path(path), threads, error, backends.get(name)) for name, path in paths.items()
    }
    sessions.update(opened or {})
    scratch = np.zeros(evict_bytes // 8, dtype=np.int64) if evict_bytes else None
    for session in sessions.values():
        for _ in range(warmup):
            session.run(None, dict(feeds))
    order = list(sessions)
    while True:
        times: dict[str, list[float]] = {name: [] for name in sessions}
        for name in order:
            session = sessions[name]
            for _ in range(runs):
                if idle_s:
                    time.sleep(idle_s)
                if scratch is not None:
                    scratch += 1  # read and written: every cache level ends up holding it
                times[name] += run_times(session, feeds, 1)
        yield times
        order.reverse()


def run_times(runnable: Runnable, feeds: Mapping[str, np.ndarray], runs: int) -> list[float]:
    """Milliseconds of each of ``runs`` runs of ``runnable`` on (a fresh copy of the dict of) ``feeds``."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        runnable.run(None, dict(feeds))
        times.append((time.perf_counter() - start) * 1e3)
    return times


def open_for_timing(name: str, path: Path, threads: int, error: type[MMEdgeError], backend: str | None = None) -> Any:
    """A session of ``path`` opened as the Pipeline opens it (``backend`` "openvino": on OpenVINO); ``error`` if it cannot load."""
    if backend == OPENVINO:
        from mmedge.openvino_backend import OpenVINOSession

        with translated(error, f"OpenVINO cannot compile {path.name}"):
            return OpenVINOSession(path, threads)
    options = session_options(name, threads, SessionSettings())
    return create_session(path, options, error=error, what=f"onnxruntime cannot load {path.name}")
