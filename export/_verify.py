"""Numerical verification of exported graphs against PyTorch, on two differently shaped inputs.

Like optimum's validation, every output of every run is compared and *all* mismatches are
collected into rows; the caller raises once with a line per failing output.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmedge.bundle import Verification
from mmedge.errors import ExportError
from mmedge.export._types import VerificationRow
from mmedge.sessions import create_session, plain_options
from mmedge.verify import Tolerance, compare_arrays

__all__ = ["compare", "numpy_of", "record", "run_onnx", "verify_onnx"]

_RUN_NAMES = ("example input", "second input (other batch and lengths)")


def numpy_of(t: Any) -> np.ndarray:
    return t.detach().cpu().numpy()


def _session(path: Path) -> Any:
    # log_severity 3: shape-merge warnings are ours to report, not ORT's to print
    return create_session(
        path, plain_options(log_severity=3), error=ExportError, what=f"onnxruntime cannot load the exported {path.name}"
    )


def run_onnx(path: Path, feeds: Sequence[Mapping[str, np.ndarray]]) -> list[dict[str, np.ndarray] | str]:
    """Outputs by name for each feed, or the onnxruntime error message when a run fails."""
    session = _session(path)
    names = [o.name for o in session.get_outputs()]
    results: list[dict[str, np.ndarray] | str] = []
    for feed in feeds:
        try:
            results.append(dict(zip(names, session.run(names, dict(feed)), strict=True)))
        except Exception as e:  # noqa: BLE001 - a failing run is a verification finding, reported in the row
            results.append(" ".join(str(e).split())[:300])
    return results


def compare(
    component: str, output: str, refs: Sequence[np.ndarray], gots: Sequence[dict[str, np.ndarray] | str], tol: Tolerance
) -> VerificationRow:
    """One output compared on every run: the worst errors and what went wrong, if anything."""
    max_abs = max_rel = 0.0
    problems = []
    shapes_ok = True
    for run, (ref, got) in enumerate(zip(refs, gots, strict=True)):
        label = _RUN_NAMES[run] if run < len(_RUN_NAMES) else f"run {run + 1}"
        if isinstance(got, str):
            shapes_ok = False
            problems.append(f"onnxruntime failed on the {label} (a dimension is probably fixed): {got}")
            continue
        value = got[output]
        if value.shape != ref.shape:
            shapes_ok = False
            problems.append(
                f"shape {list(value.shape)} on the {label}, PyTorch gives {list(ref.shape)} (a dynamic dimension was fixed)"
            )
            continue
        abs_err, rel_err, ok = compare_arrays(ref, value, tol.atol, tol.rtol)
        max_abs, max_rel = max(max_abs, abs_err), max(max_rel, rel_err)
        if not ok:
            problems.append(
                f"max abs error {abs_err:.3g} on the {label} exceeds atol={tol.atol:g} + rtol={tol.rtol:g}·|ref|"
            )
    return VerificationRow(
        component=component,
        output=output,
        max_abs_error=max_abs,
        max_rel_error=max_rel,
        passed=not problems,
        shapes=tuple(tuple(int(d) for d in r.shape) for r in refs),
        dynamic_dims_ok=shapes_ok,
        detail="; ".join(problems),
    )


def verify_onnx(
    component: str,
    path: Path,
    feeds: Sequence[Mapping[str, np.ndarray]],
    refs: Sequence[Mapping[str, np.ndarray]],
    tol: Tolerance,
) -> tuple[VerificationRow, ...]:
    """Run the graph on each feed and compare every output with its PyTorch reference."""
    gots = run_onnx(path, feeds)
    return tuple(compare(component, name, [r[name] for r in refs], gots, tol) for name in refs[0])


def record(
    rows: Sequence[VerificationRow],
    feeds: Sequence[Mapping[str, np.ndarray]],
    tol: Tolerance,
    reference: str,
    detail: str = "",
) -> Verification:
    """The manifest's record of a component's verification (worst error over outputs and runs)."""
    return Verification(
        stage="export",
        reference=reference,
        passed=all(r.passed for r in rows),
        max_abs_error=max((r.max_abs_error for r in rows), default=0.0),
        max_rel_error=max((r.max_rel_error for r in rows), default=0.0),
        atol=tol.atol,
        rtol=tol.rtol,
        shapes=tuple(tuple(tuple(int(d) for d in a.shape) for a in feed.values()) for feed in feeds),
        dynamic_dims_ok=all(r.dynamic_dims_ok for r in rows),
        detail=detail or "; ".join(f"{r.output}: {r.detail}" for r in rows if r.detail),
    )
