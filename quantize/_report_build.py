"""Turn a finished :class:`~mmedge.quantize._chain.Chain` into the report and the output bundle."""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import onnx

from mmedge import __version__
from mmedge.bundle import (
    Asset,
    Bundle,
    Component,
    Verification,
    deploy_assets,
    deploy_bytes,
    openvino_build_asset,
    staged_bundle,
    write_manifest,
    write_sized,
)
from mmedge.cpu import cpu_model_and_flags, int8_kernels_saturate
from mmedge.errors import QuantizationError
from mmedge.quantize._chain import Chain
from mmedge.quantize._generation import CAPTION, caption_spec
from mmedge.quantize._metrics import accuracy, compare
from mmedge.quantize.recipes import QUANTIZED_OPS
from mmedge.quantize.report import (
    REPORT_JSON,
    REPORT_MD,
    BackendCheck,
    ComponentReport,
    ExcludedNode,
    FallbackRound,
    OutputReport,
    QuantizationReport,
    SpeedCheck,
    TensorComparison,
    WholeGraphCheck,
    json_safe,
)
from mmedge.verify import Tolerance, raise_failures, verify_component

__all__ = ["build_report", "write_bundle"]

# A component's Verification passes when each output's mean cosine with FP32 (FP32 inputs) is at
# least this; the end-to-end criterion is min_agreement.
COMPONENT_MIN_COSINE = 0.98


def build_report(
    chain: Chain,
    src: Bundle,
    out: str | os.PathLike[str],
    *,
    unchanged: Mapping[str, str],
    labels: Any,
    min_agreement: float,
    rounds: Sequence[FallbackRound],
    holdout_source: str,
    notes: Sequence[str],
    speed: Mapping[str, SpeedCheck],
    backends: Mapping[str, BackendCheck],
    whole_graph: WholeGraphCheck | None = None,
) -> QuantizationReport:
    """Measure the current versions against FP32 on the held-out samples and say what was done."""
    m = src.manifest
    components = tuple(
        _component_report(chain, c, unchanged.get(c.name), speed.get(c.name), backends.get(c.name))
        for c in m.components
    )
    outputs = tuple(_output_report(r, labels) for r in chain.end_to_end(chain.versions))
    score = chain.score(chain.versions)
    skipped = [c.name for c in m.components if not chain.graph.fed_by_wiring(c.name)]
    extra = []
    if skipped and caption_spec(m) is not None:
        extra = [
            f"{', '.join(skipped)}: no per-component error (inputs come from the generation loop); the "
            f"{CAPTION!r} output measures it end to end: greedy captions equal to FP32's, token for token"
        ]
    elif skipped:
        extra = [f"not evaluated (inputs come from a generation loop, not the wiring): {', '.join(skipped)}"]
    return QuantizationReport(
        model=m.model.name,
        source=str(src.path),
        output=str(out),
        method=chain.method,
        min_agreement=min_agreement,
        agreement=score,
        met=bool(score >= min_agreement),
        calibration_samples=len(chain.calibration.samples),
        holdout_samples=len(chain.holdout.samples),
        holdout_source=holdout_source,
        components=components,
        outputs=outputs,
        fallback=tuple(rounds),
        size_before=sum(c.size_bytes for c in m.components),
        size_after=sum(c.size_after for c in components),
        notes=(*notes, *extra),
        bundle_size_before=deploy_bytes(src),
        whole_graph=whole_graph,
    )


def _component_report(
    chain: Chain, c: Component, unchanged: str | None, speed: SpeedCheck | None, backend: BackendCheck | None
) -> ComponentReport:
    path = chain.versions[c.name]
    recipe = chain.recipes.get(c.name)
    comparisons: tuple[TensorComparison, ...] = ()
    if chain.quantizes(c.name) and chain.graph.fed_by_wiring(c.name):
        ref = chain.holdout.outputs(chain.fp32, c.name)
        test = chain.holdout.outputs(chain.only(c.name), c.name)
        comparisons = tuple(compare(t.name, [o[t.name] for o in ref], [o[t.name] for o in test]) for t in c.outputs)
    ops = Counter(n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node)
    quant_ops = {op: k for op, k in sorted(ops.items()) if op in QUANTIZED_OPS}
    precision, reason = (recipe.precision, recipe.reason) if recipe else (c.precision, unchanged or "")
    if precision == "int8" and not quant_ops:
        precision, reason = "fp32", f"{reason}; but no op of this graph is supported by that mode, so it stays FP32"
    for f in chain.failures.get(c.name, ()):
        if f.action not in reason:  # a retried recipe says it already
            reason = f"{reason}; {f.step} failed, so {f.action}"
    return ComponentReport(
        name=c.name,
        precision=precision,
        recipe=recipe.record() if recipe else {},
        reason=reason,
        calibrated_on=chain.calibrated_on(c.name),
        size_before=c.size_bytes,
        size_after=path.stat().st_size,
        excluded=tuple(ExcludedNode(n, why) for n, why in chain.excluded.get(c.name, {}).items()),
        op_counts=quant_ops,
        outputs=comparisons,
        fp32_ms=speed.fp32_ms if speed else None,
        quantized_ms=speed.quantized_ms if speed else None,
        failures=tuple(chain.failures.get(c.name, ())),
        speed=speed,
        backend=backend,
    )


def _output_report(result: Any, labels: Any) -> OutputReport:
    fp32_acc = quant_acc = None
    if labels is not None and result.spec.kind == "logits":
        fp32_acc, quant_acc = accuracy(result.fp32, labels), accuracy(result.quantized, labels)
    return OutputReport(
        name=result.spec.name,
        kind=result.spec.kind,
        metric=result.metric,
        agreement=result.agreement,
        comparison=result.comparison,
        fp32_accuracy=fp32_acc,
        quantized_accuracy=quant_acc,
    )


def write_bundle(
    chain: Chain, src: Bundle, out: str | os.PathLike[str], report: QuantizationReport, *, force: bool = False
) -> QuantizationReport:
    """Write the quantized bundle (components, assets, report, manifest) atomically to ``out``.

    Only what inference needs: not the source's monolithic baseline graph (``mmedge bench`` finds
    it in the FP32 bundle given to ``--compare``). Returns the report with the written bundle's
    size on disk. ``force``: replace ``out`` even if it is not an mmedge bundle (see ``staged_bundle``).
    """
    import onnxruntime

    m = src.manifest
    by_name = {r.name: r for r in report.components}
    written = report
    with staged_bundle(out, force=force) as stage:
        for c in m.components:
            _copy(chain.versions[c.name], stage / c.file)
        rebuilt = {openvino_build_asset(c) for c in chain.recipes}  # their builds, if any, are made anew
        kept = tuple(
            a
            for a in deploy_assets(src, {c.file: chain.versions[c.name] for c in m.components})
            if a.name not in rebuilt
        )
        for a in kept:
            _copy(src.path / a.file, stage / a.file)
        builds = tuple(_openvino_build(chain, m.component(c), stage) for c in sorted(chain.openvino))
        components = tuple(_component_entry(chain, c, by_name[c.name], report) for c in m.components)
        raise_failures(
            "quantize",
            {
                c.name: c.verification[-1]
                for c, old in zip(components, m.components, strict=True)
                if c.verification != old.verification
            },
            QuantizationError,
            dims_only=True,
            fix="Nothing was written. Keep that component FP32 (recipe={name: 'fp32'}) and report the bundle.",
        )
        assets = (
            *kept,
            *builds,
            Asset(name="quantization_report", file=REPORT_JSON),
            Asset(name="quantization_report_md", file=REPORT_MD),
        )
        created_by = {**m.created_by, "mmedge.quantize": __version__, "onnxruntime": onnxruntime.__version__}
        whole = json_safe(dataclasses.asdict(report.whole_graph)) if report.whole_graph is not None else None
        manifest = dataclasses.replace(
            m, components=components, assets=assets, created_by=created_by, whole_graph=whole
        )

        def write(size: int) -> None:
            nonlocal written
            written = dataclasses.replace(report, bundle_size_after=size)
            written.write(stage)
            write_manifest(stage, manifest)

        write_sized(stage, write)
    return written


def _openvino_build(chain: Chain, component: Component, stage: Path) -> Asset:
    """Copy ``component``'s OpenVINO build into the bundle beside its file; its asset entry."""
    rel = Path(component.file).with_suffix(".openvino.onnx").as_posix()
    _copy(chain.openvino[component.name], stage / rel)
    return Asset(name=openvino_build_asset(component.name), file=rel)


def _copy(source: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, dest)


def _component_entry(chain: Chain, c: Component, r: ComponentReport, report: QuantizationReport) -> Component:
    """The manifest entry of ``c`` after quantization: precision, recipe record, verification."""
    recipe = chain.recipes.get(c.name)
    if recipe is None:
        return c  # already quantized in the source: copied as it was
    record = {
        "recipe": recipe.record(),
        "method": chain.method if recipe.mode == "static" else None,
        "calibration_samples": len(chain.calibration.samples) if recipe.mode == "static" else 0,
        "calibrated_on": r.calibrated_on,
        "excluded_nodes": {e.name: e.reason for e in r.excluded},
        "fallback_rounds": [f.index for f in report.fallback if f.component == c.name],
        "report": "quantization_report.json",
        # steps that raised on this component and what was done instead (mmedge.quantize._isolation)
        "failures": [dataclasses.asdict(f) for f in r.failures],
    }
    if r.speed is not None:  # the speed check's rounds, interval and decision (mmedge.quantize.speed)
        record["speed_check"] = json_safe(dataclasses.asdict(r.speed))
    if r.backend is not None:  # onnxruntime against OpenVINO (mmedge.quantize.backend); read by the runtime
        record["backend"] = json_safe(dataclasses.asdict(r.backend))
    if recipe.precision == "int8":  # what the kernel-saturation check saw (mmedge.quantize.saturation)
        record["kernels_checked_on"] = {"cpu": cpu_model_and_flags()[0], "saturating": int8_kernels_saturate()}
    if r.precision == "fp32":
        return dataclasses.replace(c, quantization=record)
    return dataclasses.replace(
        c,
        precision=r.precision,
        quantization=record,
        optimizations=(*c.optimizations, *_pre_processed(r)),
        verification=(*c.verification, _verification(chain, c, r)),
    )


def _pre_processed(r: ComponentReport) -> tuple[str, ...]:
    """``("quant_pre_process",)`` unless that step failed and the component was quantized without it."""
    return () if any(f.step == "pre-processing" for f in r.failures) else ("quant_pre_process",)


def _verification(chain: Chain, c: Component, r: ComponentReport) -> Verification:
    if not r.outputs:
        return Verification(
            stage="quantize",
            reference="fp32-bundle",
            passed=False,
            max_abs_error=0.0,
            max_rel_error=0.0,
            atol=0.0,
            rtol=0.0,
            detail="not evaluated: the component's inputs are not all fed by the wiring",
        )
    worst = min(r.outputs, key=lambda t: t.cosine)
    feeds = chain.holdout.feeds(chain.fp32, c.name)
    # The shared check: every symbolic dim must still take another size (numbers only reported here).
    dims = verify_component(
        chain.versions[c.name],
        chain.fp32[c.name],
        c,
        feeds[:1],
        stage="quantize",
        reference_name="fp32-bundle",
        tolerance=Tolerance(min_cosine=COMPONENT_MIN_COSINE),
    )
    return Verification(
        stage="quantize",
        reference="fp32-bundle",
        passed=all(t.cosine >= COMPONENT_MIN_COSINE for t in r.outputs) and dims.dynamic_dims_ok,
        max_abs_error=max(t.max_abs_error for t in r.outputs),
        max_rel_error=max(t.max_rel_error for t in r.outputs),
        atol=0.0,
        rtol=0.0,
        shapes=dims.shapes,
        dynamic_dims_ok=dims.dynamic_dims_ok,
        detail=(
            f"{len(feeds)} held-out samples, FP32 inputs from {', '.join(chain.holdout.upstream(c.name)) or 'raw inputs'}; "
            f"worst output {worst.tensor!r}: cosine {worst.cosine:.5f} (pass >= {COMPONENT_MIN_COSINE}), SQNR {worst.sqnr_db:.1f} dB; "
            f"shape check: {dims.detail}"
        ),
    )
