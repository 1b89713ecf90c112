"""Hugging Face transformer encoders: offline attention/LayerNorm/GELU fusion, kept only where it helps.

``optimize_transformers(bundle, out)`` rewrites each FP32 transformer encoder of a bundle with a
transformer fuser (see :mod:`mmedge.export._hf_fusion`), checks the fused graph against the
unfused one on two input shapes (numerics within the tolerance, dynamic dimensions still
dynamic), and records the decision in the component's ``optimizations`` and ``verification``.

With ``fuse="auto"`` every fuser is tried and timed against the unfused graph, interleaved, as
the runtime runs it (ORT applies its own load-time fusions to the unfused graph too); the
fastest is kept only if it beats the unfused graph by ``min_speedup``, else the component stays
unfused and the measurement says why. Fuse before quantizing: fused ops are what
``quantize_bundle``'s dynamic INT8 then sees.

Export models whose encoders are transformers modules with :func:`mmedge.export.export_model`
(``tokenizer=`` stores the tokenizer); :mod:`mmedge.models.hf` has ready wrappers.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmedge.bundle import (
    Bundle,
    Component,
    Manifest,
    TextPreprocess,
    Verification,
    check_replaceable,
    load_bundle,
    scratch_directory,
    staged_bundle,
    write_manifest,
)
from mmedge.errors import ExportError
from mmedge.verify import Tolerance, verify_component

__all__ = ["FUSE_MODES", "FusionResult", "FusionTrial", "ffn_down_projections", "optimize_transformers"]

FUSE_MODES = ("auto", "onnxscript", "ort")
RECORD_PREFIX = "transformer-fusion"
_VERIFY_SHAPES = ((2, 1.0), (3, 0.5))  # (batch, fraction of the sequence length) of the two checks


@dataclass(frozen=True)
class FusionTrial:
    """One fuser tried on one component."""

    component: str
    fuser: str  # "onnxscript" or "ort"
    fused_ops: Mapping[str, int]  # fused op type -> count in the fused graph
    passed: bool  # numerics within tolerance and dynamic dims kept, on both check shapes
    max_abs_error: float
    latency_ms: float | None = None  # median per run at (batch 1, seq_length); None when not timed
    baseline_ms: float | None = None  # the unfused graph, timed interleaved with it
    detail: str = ""  # why it failed


@dataclass(frozen=True)
class FusionResult:
    """What :func:`optimize_transformers` wrote and measured."""

    path: Path
    bundle: Bundle
    kept: Mapping[str, str]  # component -> the fuser kept, or "none"
    trials: tuple[FusionTrial, ...]
    seq_length: Mapping[str, int]  # component -> the sequence length it was timed at


@dataclass(frozen=True)
class _Plan:
    fuse: str
    model_type: str
    threads: int
    min_speedup: float
    tol: Tolerance
    seq_length: int | None


def optimize_transformers(
    bundle: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    fuse: str = "auto",
    components: Sequence[str] | None = None,
    model_type: str = "bert",
    seq_length: int | None = None,
    threads: int = 2,
    min_speedup: float = 1.03,
    tolerance: Tolerance | None = None,
    force: bool = False,
) -> FusionResult:
    """Fuse the transformer encoders of ``bundle`` into a new bundle at ``out``.

    ``fuse``: "auto" (time every fuser, keep the fastest if ``min_speedup`` times faster than
    unfused), or "onnxscript" / "ort" to apply that one (no timing). ``components``: encoder
    names, default every FP32 encoder with self-attention. ``model_type``: the Hugging Face
    model type, mapped by optimum to onnxruntime's optimizer family for the "ort" fuser.
    ``seq_length``: the length timed, default the text input's ``max_length`` (what the runtime
    feeds). Raises :class:`~mmedge.errors.ExportError` when nothing can be fused, or a named
    fuser's graph fails its check. An existing ``out`` is replaced only if it is an mmedge bundle
    (``force=True``: any folder).
    """
    from mmedge.export._hf_fusion import ort_model_type

    plan = _check_options(fuse, threads, min_speedup, tolerance, seq_length)
    plan = dataclasses.replace(plan, model_type=ort_model_type(model_type))
    check_replaceable(out, force=force)
    src = load_bundle(bundle)
    targets = _targets(src, components)
    trials: list[FusionTrial] = []
    kept: dict[str, str] = {}
    lengths = {c.name: seq_length or _text_length(src.manifest, c) for c in targets}
    with scratch_directory("fuse") as tmp, staged_bundle(out, force=force) as stage:
        for rel in [c.file for c in src.manifest.components] + [a.file for a in src.manifest.assets]:
            (stage / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src.path / rel, stage / rel)
        updated = {}
        for component in targets:
            work = Path(tmp) / component.name
            work.mkdir()
            found, choice, record = _fuse_component(src, component, work, plan, lengths[component.name])
            trials += found
            kept[component.name] = choice.fuser if choice else "none"
            if choice is not None:
                shutil.copyfile(work / f"{choice.fuser}.onnx", stage / component.file)
            updated[component.name] = _recorded(component, record, choice, plan)
        parts = tuple(updated.get(c.name, c) for c in src.manifest.components)
        write_manifest(stage, dataclasses.replace(src.manifest, components=parts))
    return FusionResult(Path(out), load_bundle(out), kept, tuple(trials), lengths)


def ffn_down_projections(onnx_file: str | os.PathLike[str]) -> tuple[str, ...]:
    """Names of a transformer graph's FFN down-projections: MatMuls whose weight has more rows than columns.

    In BERT-style encoders these (intermediate -> hidden, fed by GELU outputs) see the widest
    activations, so keeping them FP32 under dynamic INT8 (``Recipe(mode="dynamic",
    exclude_nodes=...)``) brings the embeddings closer to FP32 at the cost of a third of the
    weights (results in ``benchmarks/NOTES.md``).
    """
    import onnx

    graph = onnx.load(str(onnx_file), load_external_data=False).graph
    shapes = {i.name: tuple(i.dims) for i in graph.initializer}
    return tuple(
        n.name
        for n in graph.node
        if n.op_type == "MatMul"
        and len(shapes.get(n.input[1], ())) == 2
        and shapes[n.input[1]][0] > shapes[n.input[1]][1]
    )


def _check_options(
    fuse: str, threads: int, min_speedup: float, tolerance: Tolerance | None, seq_length: int | None
) -> _Plan:
    problems = []
    if fuse not in FUSE_MODES:
        problems.append(f"fuse must be one of {FUSE_MODES}, found {fuse!r}")
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        problems.append(f"threads must be a positive int, found {threads!r}")
    if not isinstance(min_speedup, int | float) or min_speedup < 1:
        problems.append(f"min_speedup must be a number >= 1, found {min_speedup!r}")
    if seq_length is not None and (isinstance(seq_length, bool) or not isinstance(seq_length, int) or seq_length < 1):
        problems.append(f"seq_length must be a positive int or None, found {seq_length!r}")
    if problems:
        raise ExportError("optimize_transformers: " + "; ".join(problems))
    return _Plan(fuse, "bert", threads, float(min_speedup), tolerance or Tolerance(), seq_length)


def _targets(src: Bundle, names: Sequence[str] | None) -> list[Component]:
    """The components to fuse: the named ones (checked), else every FP32 transformer encoder."""
    import onnx

    from mmedge.export._hf_fusion import is_transformer

    manifest = src.manifest
    if names is not None:
        chosen = [manifest.component(n) for n in names]  # BundleError names an unknown one
        bad = [f"{c.name} ({c.role}, {c.precision}, {c.format})" for c in chosen if not _fusable(c)]
        if bad:
            raise ExportError(f"only FP32 ONNX encoders not fused yet can be fused; not: {', '.join(bad)}")
        return chosen
    chosen = [
        c
        for c in manifest.components
        if _fusable(c) and is_transformer(onnx.load(str(src.path / c.file), load_external_data=False))
    ]
    if not chosen:
        listed = ", ".join(f"{c.name} ({c.role}, {c.precision})" for c in manifest.components)
        raise ExportError(
            f"bundle {src.path} has no FP32 transformer encoder to fuse (components: {listed}); "
            "fuse an FP32 bundle before quantizing it, or name components=[...]"
        )
    return chosen


def _fusable(c: Component) -> bool:
    done = any(o.startswith(RECORD_PREFIX) for o in c.optimizations)
    return c.role == "encoder" and c.precision == "fp32" and c.format == "onnx" and not done


def _text_length(manifest: Manifest, component: Component) -> int:
    """What the runtime pads this encoder's text to: its text input's max_length (else its example length)."""
    for tensor in component.inputs:
        spec = next((i for i in manifest.inputs if i.name == tensor.name), None)
        if spec is not None and isinstance(spec.preprocess, TextPreprocess):
            return spec.preprocess.max_length
        if spec is not None and "seq" in spec.shape:
            return spec.example_shape[spec.shape.index("seq")]
    return 1


@dataclass(frozen=True)
class _Record:
    """The check of the kept graph (or of the best failing one) and the timings that decided."""

    verification: Verification | None
    timings: Mapping[str, float]  # "unfused" and each timed fuser -> median ms
    seq_length: int


def _fuse_component(
    src: Bundle, component: Component, work: Path, plan: _Plan, length: int
) -> tuple[list[FusionTrial], FusionTrial | None, _Record]:
    """Try the fusers on one component; the trials, the one to keep (or None) and what to record."""
    from mmedge.export._hf_fusion import FUSERS, fuse, id_bounds, input_feeds
    from mmedge.timing import interleaved_latency

    source = src.path / component.file
    bounds = id_bounds(source, component)
    checks = [
        input_feeds(src.manifest, component, bounds, batch=b, length=max(1, round(length * f)), seed=i)
        for i, (b, f) in enumerate(_VERIFY_SHAPES)
    ]
    trials, checked = [], {}
    for fuser in FUSERS if plan.fuse == "auto" else (plan.fuse,):
        target = work / f"{fuser}.onnx"
        ops = fuse(fuser, source, target, plan.model_type)
        checked[fuser] = _verify(component, source, target, checks, plan)
        v = checked[fuser]
        trials.append(FusionTrial(component.name, fuser, ops, v.passed, v.max_abs_error, detail=v.detail))
    passed = [t for t in trials if t.passed]
    if plan.fuse != "auto":
        if not passed:
            raise ExportError(f"{component.name}: the {plan.fuse} fusion changed the graph: {trials[0].detail}")
        return trials, passed[0], _Record(checked[plan.fuse], {}, length)
    timed = {}
    if passed:
        feeds = input_feeds(src.manifest, component, bounds, batch=1, length=length, seed=7)
        paths = {"unfused": source, **{t.fuser: work / f"{t.fuser}.onnx" for t in passed}}
        timed = interleaved_latency(paths, feeds, threads=plan.threads, error=ExportError)
        trials = [
            dataclasses.replace(t, latency_ms=timed[t.fuser], baseline_ms=timed["unfused"]) if t.fuser in timed else t
            for t in trials
        ]
    best = min((t for t in trials if t.latency_ms is not None), key=lambda t: t.latency_ms, default=None)
    keep = best if best is not None and timed["unfused"] >= plan.min_speedup * best.latency_ms else None
    verification = checked[keep.fuser] if keep else None
    return trials, keep, _Record(verification, timed, length)


def _verify(
    component: Component, source: Path, target: Path, checks: Sequence[Mapping[str, np.ndarray]], plan: _Plan
) -> Verification:
    """Fused vs unfused on each check input, by the shared check of every stage (dims the manifest
    declares symbolic must stay symbolic)."""
    return verify_component(
        target, source, component, checks, stage="optimize", reference_name="unfused-onnx", tolerance=plan.tol
    )


def _recorded(component: Component, record: _Record, choice: FusionTrial | None, plan: _Plan) -> Component:
    """The component with the decision in ``optimizations`` and the kept graph's check in ``verification``."""
    where = f"batch 1, seq {record.seq_length}, {plan.threads} threads"
    timings = ", ".join(f"{name} {ms:.3f} ms" for name, ms in record.timings.items())
    if choice is None:
        note = f"{RECORD_PREFIX}:none (no fuser beat the unfused graph by {plan.min_speedup}x: {timings or 'none verified'}; {where})"
        return dataclasses.replace(component, optimizations=(*component.optimizations, note))
    ops = ", ".join(f"{op}x{k}" for op, k in choice.fused_ops.items())
    measured = f"; {timings}; {where}" if timings else ""
    note = f"{RECORD_PREFIX}:{choice.fuser} ({ops}{measured})"
    checks = (*component.verification, record.verification) if record.verification else component.verification
    return dataclasses.replace(component, optimizations=(*component.optimizations, note), verification=checks)
