"""Drive one worker process per variant and interleave their runs so drift hits all equally.

Workers are started one after another (so each cold start runs alone), then every round runs
each variant once: a slow minute of the machine, a thermal dip or a noisy neighbour lands on
every variant alike. The order is shuffled each round (seeded) so that each variant follows each
other about equally often: a run leaves the CPU to the next one with its caches filled with its own
data and, for PyTorch, OpenMP threads still spinning. A fixed rotation would make one variant
always pay for the one before it (see ``benchmarks/NOTES.md``).
Only one worker computes at a time; the others wait on their pipe. Ctrl-C (KeyboardInterrupt) stops the rounds and keeps
what was measured; the report is then marked partial.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmedge.bench._stats import RunTiming
from mmedge.bench._types import BenchProgress
from mmedge.errors import MMEdgeError
from mmedge.worker_process import WorkerProcess

__all__ = ["Measurement", "Plan", "VariantSpec", "Worker", "measure"]

ProgressCallback = Callable[[BenchProgress], None]


@dataclass(frozen=True)
class VariantSpec:
    """What a worker loads: ``spec`` is sent to it as JSON; ``module`` is the worker's ``-m`` module.

    ``python`` is the interpreter to start it with (None: this one); a peer framework that needs
    another torch (ExecuTorch) runs under its own. ``argv`` follows the module name.
    """

    name: str
    kind: str
    source: str
    module: str
    spec: Mapping[str, Any]
    python: str | None = None
    argv: tuple[str, ...] = ()


@dataclass(frozen=True)
class Plan:
    """The schedule: rounds per batch size (or a time budget), warm-up and profiling."""

    batch_sizes: tuple[int, ...]
    iterations: int
    warmup: int
    time_budget_s: float | None
    profile_runs: int  # 0: no profiling
    warm_runs: int = 0  # back-to-back runs after each timed one, kept apart as the warm latency
    processes: int = 1  # processes per variant, taken in turn by the rounds


@dataclass
class Measurement:
    """What the rounds produced so far; filled in place so an interruption loses nothing."""

    ready: dict[str, dict[str, Any]] = field(default_factory=dict)
    samples: dict[str, dict[int, list[RunTiming]]] = field(default_factory=dict)
    warm: dict[str, dict[int, list[int]]] = field(default_factory=dict)  # end-to-end ns of the warm runs
    peak_rss: dict[str, int] = field(default_factory=dict)
    hotspots: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)
    agreement: dict[str, tuple[Any, ...]] = field(default_factory=dict)  # variant → Agreement per output
    partial: bool = False


class Worker:
    """One variant's process and the line protocol to it (see ``_bench_worker``)."""

    def __init__(self, variant: VariantSpec, inputs: Mapping[int, Path], scratch: Path) -> None:
        self.name = variant.name
        config = {
            "spec": dict(variant.spec),
            "inputs": {str(b): str(p) for b, p in inputs.items()},
            "t_spawn": time.monotonic_ns(),
        }
        self._process = WorkerProcess(
            variant.module,
            config,
            what=f"variant {variant.name!r}",
            python=variant.python,
            argv=variant.argv,
            scratch=scratch,
        )
        self.ready = self._process.ready

    def request(self, command: Mapping[str, Any]) -> dict[str, Any]:
        return self._process.request(command)

    def close(self) -> None:
        self._process.close()


def measure(
    replicas: Mapping[str, Sequence[Worker]], plan: Plan, into: Measurement, progress: ProgressCallback
) -> None:
    """Warm-up and timed rounds per batch size, then memory and hot spots; fills ``into``.

    ``replicas``: each variant's processes (``plan.processes`` of them); round ``r`` runs process
    ``r mod n`` of every variant, so its samples mix what each process's placement gives.
    """
    for name in replicas:
        into.samples[name] = {}
        into.warm[name] = {}
    try:
        for batch in plan.batch_sizes:
            _rounds(replicas, batch, count=plan.warmup, budget_s=None, into=None, progress=progress, phase="warmup")
            for name in replicas:
                into.samples[name][batch] = []
                into.warm[name][batch] = []
            _rounds(
                replicas,
                batch,
                count=plan.iterations,
                budget_s=plan.time_budget_s,
                into=into,
                progress=progress,
                phase="measure",
                warm_runs=plan.warm_runs,
            )
    except KeyboardInterrupt:
        into.partial = True
    _collect_memory(replicas, into)
    if plan.profile_runs and not into.partial:
        try:
            for i, (name, processes) in enumerate(replicas.items()):
                progress(BenchProgress("profile", plan.batch_sizes[0], i, len(replicas), i / len(replicas), name))
                reply = processes[0].request(
                    {"cmd": "profile", "batch": plan.batch_sizes[0], "runs": plan.profile_runs}
                )
                into.hotspots[name] = reply["hotspots"]
        except KeyboardInterrupt:
            into.partial = True


def _rounds(
    replicas: Mapping[str, Sequence[Worker]],
    batch: int,
    *,
    count: int,
    budget_s: float | None,
    into: Measurement | None,
    progress: ProgressCallback,
    phase: str,
    warm_runs: int = 0,
) -> None:
    """Run every variant once per round, in a shuffled order; ``budget_s`` replaces ``count`` when set.

    The timed run of a round meets the machine as the other variants left it (caches, idle
    threads): the latency of a request after other work. ``warm_runs`` more runs follow it back to
    back and are kept apart: the steady-state latency of a busy server. Round ``r`` runs each
    variant's process ``r mod n``, with a warm-up that covers each (``count`` at least ``n``).
    """
    start = time.monotonic()
    done = 0
    rng = random.Random(f"{phase}-{batch}")
    names = list(replicas)
    if into is None:  # warm-up: every process of every variant at least once
        count = max([count, *(len(p) for p in replicas.values())]) if count else 0
    while (done < count) if budget_s is None else (done == 0 or time.monotonic() - start < budget_s):
        for name in rng.sample(names, len(names)):
            w = replicas[name][done % len(replicas[name])]
            reply = w.request({"cmd": "run", "batch": batch})
            if into is not None:
                into.samples[name][batch].append(RunTiming.from_json(reply))
                for _ in range(warm_runs):
                    into.warm[name][batch].append(int(w.request({"cmd": "run", "batch": batch})["e2e_ns"]))
        done += 1
        fraction = done / count if budget_s is None else min(1.0, (time.monotonic() - start) / budget_s)
        progress(BenchProgress(phase, batch, done, count if budget_s is None else None, fraction))


def _collect_memory(replicas: Mapping[str, Sequence[Worker]], into: Measurement) -> None:
    """Peak RSS of each variant's largest process (before profiling); a worker interrupted mid-reply may not answer."""
    for name, processes in replicas.items():
        try:
            into.peak_rss[name] = max(int(w.request({"cmd": "memory"})["peak_rss_bytes"]) for w in processes)
        except (MMEdgeError, ValueError, KeyboardInterrupt):
            into.notes.setdefault(name, []).append("peak RSS not measured (interrupted)")
