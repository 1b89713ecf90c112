"""The accuracy report of a quantized bundle: what was done to each component and what it cost.

Written into the output bundle as ``quantization_report.json`` (machine-readable, the same
dict as ``report.to_dict()``) and ``quantization_report.md`` (for people), both listed as
bundle assets so they are hashed with the rest. Per component: recipe and why, nodes kept FP32
and why, size before/after, and output error against FP32 with FP32 inputs (the component's
own damage). End to end: top-1 agreement with the FP32 bundle and, given labels, task accuracy
of both. Then the fallback rounds and, if the agreement target was missed, why.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "REPORT_JSON",
    "REPORT_MD",
    "BackendCheck",
    "ComponentReport",
    "ExcludedNode",
    "FallbackRound",
    "OutputReport",
    "QuantizationReport",
    "RatioTest",
    "SpeedCheck",
    "StepFailure",
    "TensorComparison",
    "json_safe",
]

REPORT_JSON = "quantization_report.json"
REPORT_MD = "quantization_report.md"


@dataclass(frozen=True)
class TensorComparison:
    """One tensor of the quantized bundle against the same tensor of the FP32 bundle."""

    tensor: str
    cosine: float  # mean over examples of the cosine similarity of the flattened tensor
    min_cosine: float  # worst example
    max_abs_error: float
    max_rel_error: float  # max abs error / max |FP32 value|
    sqnr_db: float  # signal-to-quantization-noise ratio over all examples


@dataclass(frozen=True)
class ExcludedNode:
    """A node kept in FP32, and why."""

    name: str
    reason: str


@dataclass(frozen=True)
class StepFailure:
    """A step that raised on one component, and what was done instead; the other components go on."""

    step: str  # "pre-processing", "symbolic shape inference", "calibration" or "quantization"
    error: str  # the typed error: which onnxruntime call failed and its exception
    action: str  # what was done instead: quantized without that step, or kept FP32


@dataclass(frozen=True)
class SpeedCheck:
    """One component's FP32 graph against its quantized graph, timed interleaved round after round.

    Each round times both graphs on the component's deploy-shape input (the manifest's example
    shape, batch 1); its FP32 median / quantized median is one ratio. Rounds go on until the
    ``confidence`` interval of the ratios' geometric mean lies wholly above or below
    ``threshold`` (INT8 is kept only if it is at least that much faster), or a cap is hit: then
    the interval straddles the threshold, ``conclusive`` is False and the component stays FP32.
    """

    component: str
    fp32_ms: float  # median over rounds of each round's FP32 median
    quantized_ms: float
    threads: int
    shapes: Mapping[str, tuple[int, ...]]  # the component's input shapes as timed
    rounds: int
    seconds: float  # wall time of the timed rounds
    speedup: float  # geometric mean of the per-round FP32 / quantized ratios
    low: float  # the confidence interval of ``speedup``
    high: float
    confidence: float
    threshold: float  # the speed-up INT8 must show to be kept
    decision: str  # "quantized" or "fp32"
    conclusive: bool  # False: a cap was hit before the interval cleared the threshold
    why: str  # the decision in words (for the report and the manifest)

    @property
    def kept_fp32(self) -> bool:
        return self.decision == "fp32"


@dataclass(frozen=True)
class RatioTest:
    """What the sequential test of a baseline graph against a candidate found (times in ms)."""

    base_ms: float  # median over rounds of each round's median
    candidate_ms: float
    rounds: int
    seconds: float
    speedup: float  # geometric mean of the per-round base / candidate ratios, and its interval
    low: float
    high: float
    won: bool  # the interval lies wholly at or above the threshold
    lost: bool  # wholly below it
    tiny: bool  # the baseline runs in under MIN_TIMED_MS: too fast to matter

    @classmethod
    def not_run(cls) -> RatioTest:
        """The record of a test that could not be run (NaN times, no rounds)."""
        return cls(math.nan, math.nan, 0, 0.0, math.nan, math.nan, math.nan, False, False, False)

    def interval(self, confidence: float) -> str:
        return f"{self.speedup:.2f}× ({self.low:.2f}–{self.high:.2f}× at {confidence:.0%}, {self.rounds} rounds)"


@dataclass(frozen=True)
class BackendCheck:
    """One INT8 component's file timed on onnxruntime and on OpenVINO (see :mod:`mmedge.quantize.backend`).

    ``backend`` is where a Pipeline runs it on this kind of CPU: "openvino" only if OpenVINO was
    measurably faster (the speed check's sequential test) and held-out agreement held with it.
    """

    component: str
    backend: str  # "openvino" or "onnxruntime"
    timing: RatioTest  # base: onnxruntime, candidate: OpenVINO running its file or build (NaN: could not run)
    threads: int
    confidence: float
    threshold: float
    agreement: float | None  # end-to-end held-out agreement with it on OpenVINO; None if not measured
    cpu: str  # the CPU measured on and its INT8 dot-product instructions: the choice holds for that kind
    int8_instructions: tuple[str, ...]
    why: str


@dataclass(frozen=True)
class OpenVINOBuild:
    """An INT8 component's OpenVINO build timed against its own file, both on OpenVINO
    (see :mod:`mmedge.quantize.openvino_build`).

    ``chosen``: OpenVINO runs the build instead of the component's own file (in the backend check's
    timing and the one graph); its accuracy is judged with the held-out agreement where it runs.
    The bundle carries it (asset ``openvino_build:<component>``) where the component is kept on
    OpenVINO or the one graph is chosen.
    """

    component: str
    chosen: bool
    recipe: Mapping[str, Any]  # Recipe.record() of the build
    timing: RatioTest  # base: the component's own file, candidate: the build, both on OpenVINO (NaN: not timed)
    why: str


@dataclass(frozen=True)
class WholeGraphCheck:
    """The components as one OpenVINO graph against the split plan (see :mod:`mmedge.quantize.whole_graph`).

    ``chosen``: a Pipeline on this kind of CPU runs them as one OpenVINO request, because that was
    measurably faster than running them in turn, each where the backend check put it, and
    held-out agreement with FP32 held.
    """

    components: tuple[str, ...]
    chosen: bool
    timing: RatioTest  # base: the split plan, candidate: the one graph, run in turn with each other (NaN: not run)
    back_to_back: RatioTest | None  # the same, runs back to back; None where it could not run
    threads: int
    confidence: float
    threshold: float
    shapes: str  # the deploy shapes timed
    agreement: float | None  # end-to-end held-out agreement with FP32 of the one graph; None if not measured
    bar: float  # what the agreement had to reach
    cpu: str  # the choice holds for this kind of CPU (and at least these INT8 instructions)
    int8_instructions: tuple[str, ...]
    why: str
    backend: str = "openvino"
    builds: tuple[OpenVINOBuild, ...] = ()  # the OpenVINO builds tried for its INT8 components


@dataclass(frozen=True)
class ComponentReport:
    """What quantization did to one component."""

    name: str
    precision: str  # after quantization: int8, fp16 or fp32
    recipe: Mapping[str, Any]  # Recipe.record(), or {} for a component that was copied unchanged
    reason: str  # why this recipe
    calibrated_on: str  # "raw inputs", "outputs of the quantized ...", or "" (no calibration)
    size_before: int
    size_after: int
    excluded: tuple[ExcludedNode, ...]
    op_counts: Mapping[str, int]  # quantization ops in the output graph (QuantizeLinear, MatMulInteger, ...)
    outputs: tuple[TensorComparison, ...]  # with FP32 inputs: this component's own error
    fp32_ms: float | None = None  # the speed check (auto recipes): FP32 and quantized graph, median ms
    quantized_ms: float | None = None
    failures: tuple[StepFailure, ...] = ()  # steps that raised on this component (failure isolation)
    speed: SpeedCheck | None = None  # the whole speed check: rounds, interval, decision
    backend: BackendCheck | None = None  # onnxruntime against OpenVINO for an INT8 component

    @property
    def speedup(self) -> float | None:
        """The speed check's speed-up of the quantized graph; None where it did not time this component."""
        if self.speed is not None:
            return self.speed.speedup
        return self.fp32_ms / self.quantized_ms if self.fp32_ms and self.quantized_ms else None


@dataclass(frozen=True)
class OutputReport:
    """One model output end to end: quantized bundle against FP32 bundle on held-out samples."""

    name: str
    kind: str  # the OutputSpec kind: logits, scores, token_ids, embedding, other
    metric: str  # "top1" (argmax agrees), "exact" (token ids equal) or "cosine" (no discrete prediction)
    agreement: float  # fraction of matching predictions (for "cosine": the mean cosine)
    comparison: TensorComparison
    fp32_accuracy: float | None = None  # with labels
    quantized_accuracy: float | None = None


@dataclass(frozen=True)
class FallbackRound:
    """One accuracy-aware fallback step: which tensor was kept FP32 and what it bought."""

    index: int
    component: str
    tensor: str  # the activation kept in float ("" for a node-level exclusion)
    nodes: tuple[str, ...]  # the nodes excluded from quantization for it
    agreement_before: float
    agreement_after: float
    candidates: int  # how many candidates were measured this round
    measured_on: str  # which samples chose the candidate


@dataclass(frozen=True)
class QuantizationReport:
    """The whole report; ``to_dict()`` is what ``quantization_report.json`` holds."""

    model: str
    source: str  # the FP32 bundle
    output: str  # the quantized bundle
    method: str  # calibration method
    min_agreement: float
    agreement: float  # end-to-end, the criterion of the fallback
    met: bool
    calibration_samples: int
    holdout_samples: int
    holdout_source: str  # where the held-out samples came from
    components: tuple[ComponentReport, ...]
    outputs: tuple[OutputReport, ...]
    fallback: tuple[FallbackRound, ...]
    size_before: int  # bytes of the component files (and their weights): FP32
    size_after: int  # the same, quantized
    notes: tuple[str, ...] = ()  # explanations: holdout split, fallback outcome, skipped evaluation
    # bytes on disk: what inference on the FP32 bundle reads (not its monolithic baseline graph), and
    # every file of the written bundle, this report and the manifest included
    bundle_size_before: int = 0
    bundle_size_after: int = 0
    whole_graph: WholeGraphCheck | None = None  # the components as one OpenVINO graph, where checked

    @property
    def size_ratio(self) -> float:
        return self.size_after / self.size_before if self.size_before else 1.0

    def to_dict(self) -> dict[str, Any]:
        d = json_safe(dataclasses.asdict(self))
        d["size_ratio"] = self.size_ratio
        return d

    def to_markdown(self) -> str:
        return _markdown(self)

    def write(self, directory: Path) -> tuple[str, str]:
        """Write the JSON and Markdown files into ``directory``; their file names."""
        (directory / REPORT_JSON).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        (directory / REPORT_MD).write_text(self.to_markdown(), encoding="utf-8")
        return REPORT_JSON, REPORT_MD


def json_safe(x: Any) -> Any:
    """JSON has no inf/NaN: write them as strings a reader can still parse with float()."""
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [json_safe(v) for v in x]
    return x


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


def _row(cells: list[Any]) -> str:
    return "| " + " | ".join(f"{c:.4g}" if isinstance(c, float) else str(c) for c in cells) + " |"


def _timing_cells(test: RatioTest, confidence: float) -> list[Any]:
    """Base ms, candidate ms, speed-up and interval of a test; dashes for one that was not run."""
    if not test.rounds:
        return ["-"] * 4
    return [
        test.base_ms,
        test.candidate_ms,
        f"{test.speedup:.2f}×",
        f"{test.low:.2f}–{test.high:.2f}× ({confidence:.0%})",
    ]


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    return [_row(header), "|" + "---|" * len(header), *(_row(r) for r in rows), ""]


def _markdown(r: QuantizationReport) -> str:
    verdict = "met" if r.met else "NOT met"
    lines = [
        f"# Quantization report: {r.model}",
        "",
        f"- source: `{r.source}` → `{r.output}`",
        f"- size on disk: {_mb(r.bundle_size_before)} (FP32 bundle, without a monolithic baseline graph) → "
        f"{_mb(r.bundle_size_after)} (this bundle, all files); model files {_mb(r.size_before)} → "
        f"{_mb(r.size_after)} ({r.size_ratio:.0%} of FP32)",
        f"- end-to-end agreement with FP32: **{r.agreement:.2%}** (target {r.min_agreement:.2%}: {verdict})",
        f"- calibration: {r.method}, {r.calibration_samples} samples; held out: {r.holdout_samples} samples ({r.holdout_source})",
        "",
        "## Components",
        "",
        *_table(
            ["component", "precision", "recipe", "size before", "size after", "kept FP32", "calibrated on"],
            [
                [
                    c.name,
                    c.precision,
                    c.recipe.get("mode", "unchanged"),
                    _mb(c.size_before),
                    _mb(c.size_after),
                    len(c.excluded),
                    c.calibrated_on or "-",
                ]
                for c in r.components
            ],
        ),
        "Why each recipe:",
        "",
        *(f"- **{c.name}**: {c.reason}" for c in r.components),
        "",
        "## Component outputs vs FP32 (FP32 inputs)",
        "",
        *_table(
            ["component", "tensor", "cosine", "min cosine", "max abs error", "SQNR dB"],
            [
                [c.name, t.tensor, t.cosine, t.min_cosine, t.max_abs_error, t.sqnr_db]
                for c in r.components
                for t in c.outputs
            ],
        ),
        "## End to end",
        "",
        *_table(
            ["output", "metric", "agreement", "cosine", "FP32 accuracy", "INT8 accuracy"],
            [
                [o.name, o.metric, o.agreement, o.comparison.cosine, _opt(o.fp32_accuracy), _opt(o.quantized_accuracy)]
                for o in r.outputs
            ],
        ),
    ]
    if r.fallback:
        lines += [
            "## Accuracy fallback",
            "",
            *_table(
                ["round", "component", "tensor kept FP32", "nodes", "agreement before", "after"],
                [
                    [f.index, f.component, f.tensor or "-", ", ".join(f.nodes), f.agreement_before, f.agreement_after]
                    for f in r.fallback
                ],
            ),
        ]
    timed = [(c, c.speed) for c in r.components if c.speed is not None]
    if timed:
        lines += [
            "## Speed check (this CPU, deploy shapes; quantized graphs not measurably faster stay FP32)",
            "",
            *_table(
                ["component", "input shapes", "FP32 ms", "quantized ms", "speed-up", "interval", "rounds", "kept"],
                [
                    [
                        c.name,
                        ", ".join(f"{n} {list(shape)}" for n, shape in s.shapes.items()),
                        s.fp32_ms,
                        s.quantized_ms,
                        f"{s.speedup:.2f}×",
                        f"{s.low:.2f}–{s.high:.2f}× ({s.confidence:.0%})",
                        s.rounds,
                        c.precision + ("" if s.conclusive else " (undecided: cap)"),
                    ]
                    for c, s in timed
                ],
            ),
            *(f"- **{c.name}**: {s.why}" for c, s in timed),
            "",
        ]
    backends = [(c.name, c.backend) for c in r.components if c.backend is not None]
    if backends:
        lines += [
            "## Backend check (this CPU, deploy shapes: onnxruntime against the OpenVINO runtime)",
            "",
            *_table(
                ["component", "onnxruntime ms", "OpenVINO ms", "speed-up", "interval", "agreement there", "runs on"],
                [
                    [
                        name,
                        *_timing_cells(b.timing, b.confidence),
                        "-" if b.agreement is None else b.agreement,
                        b.backend,
                    ]
                    for name, b in backends
                ],
            ),
            *(f"- **{name}**: {b.why}" for name, b in backends),
            f"- measured on {backends[0][1].cpu} (INT8 dot products: "
            f"{', '.join(backends[0][1].int8_instructions) or 'none'}); a Pipeline asked for 'auto' or 'cpu' runs "
            "a component marked openvino there when openvino is installed on a CPU with those instructions",
            "",
        ]
    if r.whole_graph is not None:
        w = r.whole_graph
        lines += [
            "## One OpenVINO graph (this CPU, deploy shapes: the split plan against its components as one request)",
            "",
            *_table(
                ["components", "runs", "split ms", "one graph ms", "speed-up", "interval", "agreement there", "chosen"],
                [
                    [
                        ", ".join(w.components),
                        regime,
                        *_timing_cells(t, w.confidence),
                        "-" if w.agreement is None else w.agreement,
                        "yes" if w.chosen else "no",
                    ]
                    for regime, t in (("in turn with the other plan", w.timing), ("back to back", w.back_to_back))
                    if t is not None
                ],
            ),
            f"- {w.why}",
            *(f"- OpenVINO build of **{b.component}**: {b.why}" for b in w.builds),
            "",
        ]
    failures = [(c.name, f) for c in r.components for f in c.failures]
    if failures:
        lines += [
            "## Steps that failed (the component was retried without the step, or kept FP32)",
            "",
            *_table(
                ["component", "step", "error", "done instead"], [[c, f.step, f.error, f.action] for c, f in failures]
            ),
        ]
    excluded = [(c.name, e) for c in r.components for e in c.excluded]
    if excluded:
        lines += [
            "## Nodes kept FP32",
            "",
            *_table(["component", "node", "why"], [[c, e.name, e.reason] for c, e in excluded]),
        ]
    if r.notes:
        lines += ["## Notes", "", *(f"- {n}" for n in r.notes), ""]
    return "\n".join(lines)


def _opt(x: float | None) -> Any:
    return "-" if x is None else x
