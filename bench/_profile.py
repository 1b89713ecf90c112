"""Per-operator hot spots: onnxruntime's JSON profiling trace, aggregated by op type.

ORT writes one ``Node`` event per kernel execution (``args.op_name``, ``dur`` in µs) and one
``model_run`` event per ``run``; summing durations by op type and dividing by the number of
runs gives each op type's time per inference. PyTorch's profiler feeds the same builder.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mmedge.bench._types import Hotspots, OpTime
from mmedge.errors import MMEdgeError

__all__ = ["TOP_OPS", "hotspots", "hotspots_from_json", "hotspots_to_json", "ort_op_totals"]

TOP_OPS = 10


def ort_op_totals(trace: Path) -> tuple[dict[str, tuple[float, int]], int]:
    """op type → (total µs, calls) over the trace, and the number of runs it covers."""
    try:
        events = json.loads(trace.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise MMEdgeError(f"cannot read onnxruntime's profiling trace {trace} ({e})") from e
    totals: dict[str, tuple[float, int]] = {}
    runs = 0
    for event in events:
        if event.get("cat") == "Session" and event.get("name") == "model_run":
            runs += 1
        op = event.get("args", {}).get("op_name") if event.get("cat") == "Node" else None
        if op is not None:
            us, calls = totals.get(op, (0.0, 0))
            totals[op] = (us + float(event.get("dur", 0)), calls + 1)
    return totals, runs


def hotspots(component: str, totals: Mapping[str, tuple[float, int]], runs: int, top: int = TOP_OPS) -> Hotspots:
    """The ``top`` op types by time; ``totals`` maps op type → (total µs, calls) over ``runs`` runs."""
    runs = max(runs, 1)
    kernel_us = sum(us for us, _ in totals.values())
    ranked = sorted(totals.items(), key=lambda item: -item[1][0])[:top]
    ops = tuple(
        OpTime(op, us / runs / 1e3, calls / runs, us / kernel_us if kernel_us > 0 else 0.0)
        for op, (us, calls) in ranked
    )
    return Hotspots(component, ops, kernel_us / runs / 1e3, runs)


def hotspots_to_json(h: Hotspots) -> dict[str, Any]:
    return {
        "component": h.component,
        "ops": [[o.op, o.ms_per_run, o.calls_per_run, o.share] for o in h.ops],
        "kernel_ms_per_run": h.kernel_ms_per_run,
        "runs": h.runs,
    }


def hotspots_from_json(data: Mapping[str, Any]) -> Hotspots:
    ops = tuple(OpTime(str(op), float(ms), float(calls), float(share)) for op, ms, calls, share in data["ops"])
    return Hotspots(str(data["component"]), ops, float(data["kernel_ms_per_run"]), int(data["runs"]))
