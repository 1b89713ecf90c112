"""How the encoders of a bundle share the CPU: intra-op threads per session, and which run at once.

Encoders of one stage (all fed by raw inputs only) run concurrently, and the costliest one sets the
pace. Splitting the budget evenly would starve the costliest encoder of cores, and running the
encoders one after another with every thread wastes the cores that small graphs cannot use. So
each other encoder gets its cost share of the budget (at least one thread) and runs beside the
costliest, which gets the rest plus one thread per other encoder: the whole budget when the others
have one thread each. Intra-op threads sleep instead of spinning (see
:func:`mmedge.sessions.session_options`), so the one-thread-per-side-encoder oversubscription costs little.

Costs are measured at load: every encoder of the stage runs on zeros of its example shape (one
warm-up, then the faster of two timed runs), which also takes the first-run allocations off the
first request. Encoders that count their items apart (a CLIP-style bundle's ``image_batch`` and
``text_batch``) are not planned: their costs' ratio changes with every call's counts, and a plan
probed at one item each starves the encoder that one photo against 20 label texts makes the
costliest, so they run in turn with the whole budget each.

The helper threads that run the other encoders are niced (Linux: per-thread priority): the
costliest encoder's threads then get the cores whenever they are ready, and the cheaper encoders
fill the gaps its parallel loops leave. The nice is mild (``HELPER_NICE``): a stronger one starves
the helpers when the costliest encoder keeps every core busy, and they then run after it.

The measurements behind these choices are in ``benchmarks/NOTES.md``. The Pipeline runs by this
plan, and so does quantize when it times a split bundle against the alternatives
(:mod:`mmedge.quantize.whole_graph`): the same plan on both sides of a comparison.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from mmedge.bundle import is_batch_symbol
from mmedge.errors import MMEdgeError
from mmedge.graph import Graph

__all__ = [
    "HELPER_NICE",
    "Schedule",
    "encoder_probe",
    "example_zeros",
    "helper_pool",
    "lower_helper_priority",
    "measure_costs",
    "plan_encoders",
    "run_stages",
    "share_threads",
]

Run = Callable[[str, Mapping[str, Any]], Any]  # (component, its feeds) → its outputs by name

log = logging.getLogger("mmedge.runtime")

_TIMED_RUNS = 2
HELPER_NICE = 5  # added to the helper threads' niceness (see above: mild, so a busy machine does not starve them)


@dataclass(frozen=True)
class Schedule:
    """The thread plan a Pipeline runs with.

    ``threads``: intra-op threads of each component's session. ``concurrent``: the components that
    run at the same time as each other when a run needs more than one of them (the costliest on the
    calling thread, the others on helper threads). ``costs_ms``: what the load-time probe measured
    per concurrent component (empty when nothing runs concurrently).
    """

    threads: Mapping[str, int]
    concurrent: frozenset[str] = frozenset()
    costs_ms: Mapping[str, float] = field(default_factory=dict)


def share_threads(costs: Mapping[str, float], budget: int) -> dict[str, int]:
    """Intra-op threads per concurrent component, from their measured costs.

    Each non-costliest component gets its cost share of ``budget`` (at least 1 thread); the costliest
    gets the rest plus one thread per other component, so the CPU is oversubscribed by at most one
    sleeping-when-idle thread per side component, and on 2 cores the costliest keeps both threads.
    """
    weights = costs if sum(costs.values()) > 0 else dict.fromkeys(costs, 1.0)  # too fast to time: alike
    primary = max(weights, key=lambda c: weights[c])
    total = sum(weights.values())
    others = {c: max(1, round(budget * w / total)) for c, w in weights.items() if c != primary}
    return {primary: max(1, budget - sum(n - 1 for n in others.values())), **others}


def encoder_probe(graph: Graph, component: str) -> dict[str, np.ndarray] | None:
    """Zeros for each input of an encoder at its example shape (batch 1); None if not sizable."""
    if component not in graph.encoders():
        return None
    zeros = example_zeros(graph, [component])
    return None if zeros is None else graph.feeds(component, zeros, {})


def example_zeros(graph: Graph, components: Iterable[str]) -> dict[str, np.ndarray] | None:
    """Zeros for each raw input of ``components`` at its example shape (batch 1); None if not sizable."""
    zeros = {}
    wanted = graph.raw_inputs(components)
    for spec in graph.manifest.inputs:
        if spec.name in wanted:
            shape = spec.sized_shape(1)
            if shape is None:
                return None
            zeros[spec.name] = np.zeros(shape, dtype=np.dtype(spec.dtype))
    return zeros


def measure_costs(runners: Mapping[str, Callable[[], Any]]) -> dict[str, float] | None:
    """Milliseconds per component (the faster of two runs after a warm-up); None if any run fails."""
    costs = {}
    for name, run in runners.items():
        try:
            run()
            times = []
            for _ in range(_TIMED_RUNS):
                start = time.perf_counter()
                run()
                times.append(time.perf_counter() - start)
        except MMEdgeError as e:  # a probe is an optimisation: on failure the encoders just run in turn
            log.debug("thread planning: %s failed on zero inputs (%s); running encoders in turn", name, e)
            return None
        costs[name] = min(times) * 1e3
    return costs


def lower_helper_priority() -> None:
    """Make the calling (helper) thread yield the CPU to the costliest encoder's threads; Linux only
    (elsewhere ``setpriority`` would address a process, not the thread)."""
    if sys.platform.startswith("linux"):
        tid = threading.get_native_id()
        with contextlib.suppress(OSError):  # a sandbox may forbid it: then the helpers just compete
            os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + HELPER_NICE)


def plan_encoders(graph: Graph, budget: int, run: Run) -> Schedule | None:
    """The first stage's concurrent plan, from each encoder's cost measured with ``run`` at ``budget``
    threads; None where they run in turn (one encoder, one thread, no example shape to probe, or
    encoders that count their items apart)."""
    stage = graph.full_plan[0] if graph.full_plan else ()
    if len(stage) < 2 or budget < 2 or _counts_apart(graph, stage):
        return None
    probes = {c: encoder_probe(graph, c) for c in stage}
    if any(p is None for p in probes.values()):
        return None
    costs = measure_costs({c: partial(run, c, probes[c]) for c in stage})
    if costs is None:
        return None
    return Schedule(share_threads(costs, budget), frozenset(stage), costs)


def _counts_apart(graph: Graph, stage: Sequence[str]) -> bool:
    """Whether the encoders of ``stage`` take their items on different batch symbols."""
    wanted = graph.raw_inputs(stage)
    symbols = {i.shape[0] for i in graph.manifest.inputs if i.name in wanted and i.shape}
    return len({s for s in symbols if is_batch_symbol(s)}) > 1


def helper_pool(schedule: Schedule) -> ThreadPoolExecutor:
    """The niced helper threads that run all but the costliest of ``schedule``'s concurrent encoders."""
    return ThreadPoolExecutor(
        max_workers=len(schedule.concurrent) - 1, thread_name_prefix="mmedge-encoder", initializer=lower_helper_priority
    )


def run_stages(
    graph: Graph,
    stages: Sequence[Sequence[str]],
    run: Run,
    raw: Mapping[str, Any],
    values: dict[str, dict[str, Any]],
    *,
    schedule: Schedule,
    pool: ThreadPoolExecutor | None,
) -> dict[str, dict[str, Any]]:
    """Run ``stages`` in order, adding each component's outputs to ``values``; returns ``values``.

    A stage of concurrent encoders runs at once: the costliest (most threads) on the calling
    thread, the others on ``pool`` meanwhile. Other stages run one component after another.
    """
    for stage in stages:
        jobs = {c: graph.feeds(c, raw, values) for c in stage}
        if len(stage) == 1 or pool is None or not schedule.concurrent.issuperset(stage):
            values.update({c: run(c, job) for c, job in jobs.items()})
            continue
        first, *others = sorted(stage, key=lambda c: -schedule.threads[c])
        futures = {c: pool.submit(run, c, jobs[c]) for c in others}
        values[first] = run(first, jobs[first])
        values.update({c: f.result() for c, f in futures.items()})
    return values
