"""The export stage's record in the manifest, made by the shared verifier (``mmedge.verify``).

Export already compares every output with PyTorch on the example input and on a second input
with every symbol resized (that decides between the exporters). Before the bundle is written,
each component file in the staging folder is checked once more with the same function the later
stages use, so the manifest's ``verification`` entry of every stage means the same thing: IO as
declared, every symbolic dim still dynamic, outputs within tolerance of the reference (PyTorch).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mmedge.errors import ExportError
from mmedge.export._context import Ctx, ExportedPart, model_prefix
from mmedge.export._tree import flatten
from mmedge.export._verify import numpy_of
from mmedge.verify import raise_failures, verify_component

__all__ = ["verify_export"]


def _numpy(tensors: Mapping[str, Any]) -> dict[str, Any]:
    return {n: numpy_of(t) for n, t in tensors.items()}


def _head_runs(ctx: Ctx, parts: Sequence[ExportedPart], head: ExportedPart) -> tuple[list[dict], list[dict]]:
    """(feeds, PyTorch outputs) of the head for both runs: encoder outputs and raw inputs it takes."""
    names = [t.name for t in head.component.inputs]
    feeds = []
    for run in (0, 1):
        values = {**{k: v for p in parts for k, v in p.features[run].items()}, **ctx.runs.inputs[run]}
        feeds.append({n: numpy_of(values[n]) for n in names})
    outputs = [_numpy(dict(flatten(o, model_prefix(o), "model.forward")[0])) for o in ctx.runs.outputs]
    return feeds, outputs


def verify_export(
    ctx: Ctx, parts: Sequence[ExportedPart], head: ExportedPart
) -> tuple[list[ExportedPart], ExportedPart]:
    """``parts`` and ``head`` with the shared verifier's record; raises ExportError naming failures."""
    runs: dict[str, tuple[list[dict], list[dict]]] = {
        p.component.name: (
            [ctx.runs.numpy(r, [t.name for t in p.component.inputs]) for r in (0, 1)],
            [_numpy(p.features[r]) for r in (0, 1)],
        )
        for p in parts
    }
    runs[head.component.name] = _head_runs(ctx, parts, head)
    checks = {}
    for part in (*parts, head):
        c = part.component
        feeds, refs = runs[c.name]
        checks[c.name] = verify_component(
            ctx.stage / c.file, refs, c, feeds, stage="export", reference_name="pytorch", tolerance=ctx.tol
        )
    raise_failures(
        "export",
        checks,
        ExportError,
        fix="Nothing was written. Export with dynamic=False (--static) if the model cannot take other sizes.",
    )
    ctx.report("verify", "verified (shared check: every component, both shapes)")
    return [p.with_record(checks[p.component.name]) for p in parts], head.with_record(checks[head.component.name])
