"""Latency of contenders each in its own process, interleaved round by round.

Why: contenders timed in one process share its caches, allocator and runtime thread pools (a split
plan's OpenVINO component and a one-graph plan use one OpenVINO CPU plugin), so whichever runs
second finds the first one's threads and pages warm, while a deployed process holds one of them.
Processes of their own remove that bias; they do not make a crowded machine (``benchmarks/NOTES.md``).

Each contender is loaded in a fresh ``python -m module`` (:mod:`mmedge.worker_process`) whose
``__main__`` calls :func:`serve_contender` with a loader; the inputs travel once as an ``.npz``.
:func:`process_rounds` runs every contender in turn, in a fixed order (A B A B ...: reversing it
would run one twice in a row); the worker times its own runs, so the pipe's cost is not measured.
One run per turn meets the machine as the other contender left it (an occasional request on a
shared machine); more runs per turn with the first ones not counted are back-to-back runs (a busy
server).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mmedge.errors import MMEdgeError
from mmedge.timing import Runnable, run_times
from mmedge.worker_process import WorkerProcess, serve_lines

__all__ = ["close_all", "process_rounds", "serve_contender", "start_contenders"]

WARMUP = 3  # runs of each contender before it reports ready


def start_contenders(
    module: str, configs: Mapping[str, Mapping[str, Any]], feeds: Mapping[str, np.ndarray], scratch: Path
) -> dict[str, WorkerProcess]:
    """One worker per contender (``python -m module``, given its config and the inputs), started one
    after another so each compiles alone; all are closed again if one fails."""
    inputs = scratch / "contender_inputs.npz"
    np.savez(inputs, **{k: np.asarray(v) for k, v in feeds.items()})
    workers: dict[str, WorkerProcess] = {}
    try:
        for name, config in configs.items():
            what = f"the timing process of {name!r}"
            workers[name] = WorkerProcess(module, {**config, "inputs": str(inputs)}, what=what, scratch=scratch)
    except BaseException:
        close_all(workers)
        raise
    return workers


def close_all(workers: Mapping[str, WorkerProcess]) -> None:
    """Close every worker (see :meth:`WorkerProcess.close`)."""
    for worker in workers.values():
        worker.close()


def process_rounds(
    workers: Mapping[str, WorkerProcess],
    *,
    turns: int = 1,
    runs: int = 1,
    skip: int = 0,
) -> Iterator[dict[str, float]]:
    """Each round's median milliseconds per contender, for as long as the caller asks.

    A round gives every contender ``turns`` turns, always in the same order (A B A B ...), so that
    no contender runs twice in a row; in its turn a contender runs ``runs`` times, and the first
    ``skip`` of them are not counted.
    """
    command = {"cmd": "time", "runs": runs}
    while True:
        times: dict[str, list[float]] = {name: [] for name in workers}
        for _ in range(turns):
            for name, worker in workers.items():
                times[name] += worker.request(command)["ms"][skip:]
        yield {name: statistics.median(values) for name, values in times.items()}


def serve_contender(load: Callable[[Mapping[str, Any]], Runnable]) -> int:
    """A worker's main: ``load(config)`` builds the contender, which is warmed up on the inputs, then
    times ``{"cmd": "time", "runs": k}`` → ``{"ms": [...]}``; returns the process exit code."""
    return serve_lines(_start(load), _dispatch)


def _start(
    load: Callable[[Mapping[str, Any]], Runnable],
) -> Callable[[Mapping[str, Any]], tuple[tuple[Runnable, dict[str, np.ndarray]], dict[str, Any]]]:
    def start(config: Mapping[str, Any]) -> tuple[tuple[Runnable, dict[str, np.ndarray]], dict[str, Any]]:
        with np.load(config["inputs"], allow_pickle=False) as data:
            feeds = {k: data[k] for k in data.files}
        contender = load(config)
        for _ in range(WARMUP):
            contender.run(None, dict(feeds))
        return (contender, feeds), {"ready": True}

    return start


def _dispatch(state: tuple[Runnable, Mapping[str, np.ndarray]], command: Mapping[str, Any]) -> dict[str, Any]:
    contender, feeds = state
    if command.get("cmd") != "time":
        raise MMEdgeError(f"unknown timing worker command {command.get('cmd')!r}")
    return {"ms": run_times(contender, feeds, int(command["runs"]))}
