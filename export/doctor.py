"""Pre-flight: the patterns in a model that break export or mobile EPs, found before exporting.

The model runs once on its example inputs, as export's split does, while every torch call is
recorded with the submodule that made it (``_doctor_trace``). Each call known to break an
exporter or a mobile execution provider becomes a :class:`Finding` for the component it will end
up in, with what breaks and the fix (``_doctor_rules``): STFT and complex tensors, packed
sequences, Python branches on tensor values, in-place writes into inputs, float64/bfloat16, and
dtypes the bundle cannot declare. ``export_model`` runs the same pre-flight on its own split pass
(no extra forward); ``mmedge doctor`` and :func:`diagnose` run it alone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from mmedge.errors import ExportError
from mmedge.export._doctor_rules import HEAD, MODEL, findings
from mmedge.export._doctor_trace import Recording
from mmedge.export._doctor_trace import recording as preflight
from mmedge.export._doctor_types import SEVERITIES, DoctorReport, Finding
from mmedge.export._split import Split

__all__ = [
    "SEVERITIES",
    "DoctorReport",
    "Finding",
    "diagnose",
    "preflight",
    "raise_errors",
    "report_for",
    "split_lines",
]


def report_for(
    model: Any, rec: Recording, split: Split | None, inputs: Mapping[str, Any], audio_frontend: str = "auto"
) -> DoctorReport:
    """The report of a recorded pass; ``split`` is None when no split could be made (all is "model")."""
    components = (*(e.name for e in split.encoders), HEAD) if split is not None else (MODEL,)
    return DoctorReport(
        model=type(model).__name__,
        components=components,
        findings=findings(rec, split, inputs, audio_frontend),
        split=split_lines(split) if split is not None else (),
        reasons=split.notes if split is not None else (),
    )


def split_lines(split: Split) -> tuple[str, ...]:
    """One line per encoder: the submodule, the raw inputs it takes, and the glue folded into it."""
    lines = []
    for e in split.encoders:
        folds = f", folding {', '.join(e.folded)}" if e.folded else ""
        lines.append(f"{e.name} = {e.path} on {', '.join(map(repr, e.inputs))} ({e.modality}{folds})")
    return (*lines, f"{HEAD} = the rest of forward")


def raise_errors(report: DoctorReport) -> None:
    """An ExportError listing every error finding, raised before any exporter runs; nothing if none."""
    if report.errors:
        raise ExportError(
            f"pre-flight: {report.model} has patterns no exporter can export (nothing was written):\n  - "
            + "\n  - ".join(f.line() for f in report.errors)
            + "\nRun `mmedge doctor --model ...` for the full report."
        )


def diagnose(
    model: Any,
    example_inputs: Mapping[str, Any],
    encoders: Mapping[str, str] | None = None,
    *,
    preprocess: Mapping[str, Any] | None = None,
    modalities: Mapping[str, str] | None = None,
    audio_frontend: str = "auto",
) -> DoctorReport:
    """Trace ``model`` once on ``example_inputs`` and report, per component, what would break.

    Arguments mean what they mean for :func:`mmedge.export.export_model`; the split is found the
    same way. When no split can be made, that is an error finding and everything else is reported
    for the component "model". The model itself is not modified (a copy runs).
    """
    from mmedge.export import _manifest as mf

    # The same argument checks and working copy as export_model, so doctor and export agree.
    from mmedge.export._arguments import check_modalities, model_and_inputs
    from mmedge.export._capture import capture
    from mmedge.export._split import plan_split

    work, inputs, _ = model_and_inputs(model, example_inputs)
    pre = mf.resolve_preprocess(preprocess, model, inputs, getattr(model, "vocab", None))
    given = check_modalities(modalities, inputs)
    failure: ExportError | None = None
    with preflight(work, inputs) as rec:
        try:
            split = plan_split(work, inputs, encoders, pre, given)
        except ExportError as e:
            split, failure = None, e
            if not rec.forwards:  # the split was refused before running the model: trace it anyway
                with contextlib.suppress(ExportError):
                    capture(work, inputs, [])
    report = report_for(model, rec, split, inputs, audio_frontend)
    if failure is None:
        return report
    found = Finding(
        MODEL, "split", "error", ("<forward>",), str(failure), "see the message; pass encoders= to name them"
    )
    return DoctorReport(report.model, report.components, (found, *report.findings))
