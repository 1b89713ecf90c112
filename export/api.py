"""``export_model``: a user's PyTorch model → a verified split ONNX bundle.

The model runs twice in PyTorch (the example inputs, then a second input with every dynamic
dimension resized); those runs are the reference for every check. Then each encoder, the fusion
head (``forward`` with encoders stubbed out) and optionally the monolithic model are exported,
verified on both inputs, and the whole chain encoders → head is verified against the model.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmedge.bundle import (
    RAW_INPUTS,
    Asset,
    AudioPreprocess,
    Edge,
    Manifest,
    ModelInfo,
    TensorSpec,
    TextPreprocess,
    check_replaceable,
    derived_inputs,
    is_batch_symbol,
    load_bundle,
    staged_bundle,
    write_manifest,
)
from mmedge.errors import ExportError
from mmedge.export import _manifest as mf
from mmedge.export._arguments import AUDIO_FRONTENDS, check_modalities, check_options, model_and_inputs
from mmedge.export._audio_rate import infer_audio_preprocess
from mmedge.export._axes import (
    Axes,
    input_axes,
    modality_batches,
    pairs_rows,
    resized,
    second_inputs,
    symbol_sizes,
)
from mmedge.export._capture import capture
from mmedge.export._context import Ctx, ExportedPart, Progress, Runs
from mmedge.export._guarantee import verify_export
from mmedge.export._image_layout import infer_pixel_preprocess
from mmedge.export._split import Split, input_modalities, plan_split
from mmedge.export._timm_recipe import infer_timm_preprocess
from mmedge.export._types import ExportResult
from mmedge.export._verify import record
from mmedge.export.doctor import preflight, raise_errors, report_for
from mmedge.verify import Tolerance

__all__ = ["AUDIO_FRONTENDS", "export_model"]


def export_model(
    model: Any,
    example_inputs: Mapping[str, Any],
    encoders: Mapping[str, str] | None = None,
    *,
    out: str | os.PathLike[str],
    opset: int | None = None,
    dynamic: bool = True,
    monolithic: bool = False,
    preprocess: Mapping[str, Any] | None = None,
    labels: Sequence[str] | None = None,
    vocab: Sequence[str] | None = None,
    tolerance: Tolerance | None = None,
    audio_frontend: str = "auto",
    modalities: Mapping[str, str] | None = None,
    progress: Progress | None = None,
    model_info: ModelInfo | None = None,
    tokenizer: Any = None,
    force: bool = False,
) -> ExportResult:
    """Export ``model`` as a split ONNX bundle in ``out`` and verify it against PyTorch.

    ``example_inputs`` maps ``forward``'s argument names to example tensors; ``encoders`` maps a
    modality ("text", "image", "audio") to the dotted path of the submodule encoding it, or is
    None to detect them by data flow (per modality, the largest submodule fed by its raw inputs
    alone; see :mod:`mmedge.export._split`). Computation ``forward`` does on one modality's raw
    inputs before calling an encoder is folded into that encoder's component. Each encoder becomes
    ``<modality>_encoder.onnx`` and the rest of ``forward`` ``fusion_head.onnx``. ``preprocess``,
    ``labels`` and ``vocab`` default to the model's attributes of those names.
    ``audio_frontend="auto"`` replaces torchaudio MelSpectrograms (an ONNX STFT) in audio encoders
    by the equivalent convolutions where the swap verifies on the example input, and otherwise
    keeps them with a warning; ``"conv"`` makes a failed swap an error, ``"keep"`` never swaps.
    ``modalities`` overrides the detected modality of raw inputs (it decides their dynamic axes:
    ``seq`` for text, ``samples`` for audio). ``progress(step, status)`` is called as work proceeds.
    ``tokenizer`` (a ``tokenizers.Tokenizer`` or transformers fast tokenizer) is saved in the
    bundle as ``tokenizer.json`` so the runtime takes strings; an ``attention_mask`` input is
    then derived from the same strings (see :mod:`mmedge.export._hf_tokenizer`).
    An existing ``out`` is replaced only if it is an mmedge bundle (``force=True``: any folder).
    Raises :class:`~mmedge.errors.ExportError` naming the component and the fix.
    """
    tol = tolerance or Tolerance()
    opset = check_options(opset, audio_frontend, tol)
    check_replaceable(out, force=force)
    from mmedge.export._components import check_chain, export_encoder, export_head, export_monolithic

    report = progress or (lambda _step, _status: None)
    work, inputs, dict_notes = model_and_inputs(model, example_inputs)
    vocab = vocab if vocab is not None else getattr(model, "vocab", None)
    labels = labels if labels is not None else getattr(model, "labels", None)
    pre = mf.resolve_preprocess(preprocess, model, inputs, vocab)
    report("split", "running forward")
    given = check_modalities(modalities, inputs)
    text = None
    if tokenizer is not None:
        from mmedge.export._hf_tokenizer import text_setup

        text = text_setup(tokenizer, pre, given, inputs)
        pre, given = text.preprocess, text.modalities
    with preflight(work, inputs) as recorded:  # the split's forward pass is also the pre-flight's
        split = plan_split(work, inputs, encoders, pre, given)
    doctor = report_for(model, recorded, split, inputs, audio_frontend)
    raise_errors(doctor)
    modalities = {**input_modalities(inputs, split.encoders, pre), **given}
    inferred, audio_notes = infer_audio_preprocess(work, split.encoders, modalities, inputs, pre)
    pixels, pixel_notes = infer_pixel_preprocess(modalities, inputs, pre)
    timm, timm_notes = infer_timm_preprocess(work, split.encoders, modalities, inputs, {**pre, **pixels})
    pre = {**pre, **inferred, **pixels, **timm}
    axes, notes = input_axes(inputs, modalities, dynamic, derived_inputs(pre.values()), _time_symbols(pre))
    axes, runs, batch_notes = _reference_runs(work, split, inputs, axes=axes, modalities=modalities, pre=pre)
    specs = tuple(dataclasses.replace(e, dynamic_axes={n: axes[n] for n in e.inputs}) for e in split.encoders)
    report("split", ", ".join(f"{e.name}={e.path}" for e in specs))
    with staged_bundle(out, force=force) as stage:
        found = [f.line() for f in doctor.findings if f.severity != "info"]
        ctx = Ctx(
            work,
            runs,
            axes,
            tol,
            opset,
            stage,
            audio_frontend,
            report,
            [
                *dict_notes,
                *(text.notes if text else ()),
                *split.notes,
                *audio_notes,
                *pixel_notes,
                *timm_notes,
                *notes,
                *batch_notes,
                *found,
            ],
        )
        parts = [export_encoder(ctx, spec, split.calls[spec.path], specs) for spec in specs]
        head = export_head(ctx, specs, parts)
        chain = check_chain(ctx, parts, head)
        parts, head = verify_export(ctx, parts, head)
        feeds = [runs.numpy(r, list(inputs)) for r in (0, 1)]
        head = head.with_record(record(chain, feeds, tol, "pytorch-chain", "encoders → fusion_head vs model.forward"))
        mono = export_monolithic(ctx, head) if monolithic else None
        tokenizer, defaults = (text.tokenizer, text.defaults) if text else (None, {})
        meta = _Meta(model, model_info, modalities, pre, vocab, labels, tokenizer, defaults)
        write_manifest(stage, _manifest(ctx, meta, parts, head, mono))
    components = [*parts, head]
    exporters = {p.component.name: p.component.exporter for p in components}
    rows = [r for p in components for r in p.rows] + list(chain)
    if mono is not None:
        exporters["monolithic"] = mono.component.exporter
        rows += list(mono.rows)
    settled = _settled_by_dynamo(doctor.findings, exporters)
    return ExportResult(
        path=Path(out),
        bundle=load_bundle(out),
        encoders=specs,
        auto_split=split.auto,
        exporters=exporters,
        verification=tuple(rows),
        warnings=tuple(settled.get(w, w) for w in ctx.warnings),
    )


def _settled_by_dynamo(findings: Sequence[Any], exporters: Mapping[str, str]) -> dict[str, str]:
    """Pre-flight warnings of control flow on tensor values, reworded where dynamo exported the component:
    torch.export refuses such a branch unless the code steps around it while tracing (transformers'
    attention-mask checks do), so the export stands, verified on inputs of other shapes and values."""
    return {
        f.line(): (
            f"pre-flight note: {f.component}: {f.pattern} at {f.where[0]}: dynamo exported it (torch.export "
            "refuses a branch on tensor values the code does not step around while tracing) and it verified on "
            "inputs of other shapes and values; the TorchScript exporter would have baked in the branch taken"
        )
        for f in findings
        if f.pattern == "data-dependent-control-flow"
        and f.severity == "warning"
        and exporters.get(f.component) == "dynamo"
    }


def _time_symbols(pre: Mapping[str, Any]) -> dict[str, str | None]:
    """Spectrogram inputs' time axis: fixed where the recipe pads every clip to one length, else ``frames``."""
    return {
        name: None if p.pad else "frames" for name, p in pre.items() if isinstance(p, AudioPreprocess) and p.spectral
    }


def _two_runs(work: Any, split: Split, inputs: dict[str, Any], axes: Axes, modalities: Mapping[str, str]) -> Runs:
    second = second_inputs(inputs, axes, modalities)
    shapes = ", ".join(f"{n}={list(t.shape)}" for n, t in second.items())
    try:
        cap = capture(work, second, list(split.calls))
    except ExportError as e:
        raise ExportError(
            f"the model fails on a second input of other sizes ({shapes}), which is how dynamic axes are verified: "
            f"{e}. If the model only works at the example sizes, export with dynamic=False."
        ) from e.__cause__
    calls2 = {}
    for path, first in split.calls.items():
        found = cap.calls[path]
        if len(found) != 1 or (found[0].raw_inputs, found[0].sources) != (first.raw_inputs, first.sources):
            raise ExportError(
                f"submodule {path!r} is called differently for inputs of other sizes ({shapes}); encoders must be called once, on the same raw inputs"
            )
        calls2[path] = found[0]
    return Runs(
        inputs=(inputs, second),
        calls=(split.calls, calls2),
        outputs=(split.output, cap.output),
        sizes=(symbol_sizes(inputs, axes), symbol_sizes(second, axes)),
    )


def _reference_runs(
    work: Any,
    split: Split,
    inputs: dict[str, Any],
    *,
    axes: Axes,
    modalities: Mapping[str, str],
    pre: Mapping[str, Any],
) -> tuple[Axes, Runs, list[str]]:
    """The two runs every check compares against, with the axes they were made with (each modality's own
    batch where an output pairs items: :func:`_own_batches`), once the model is known to take its texts'
    full length; and the notes to give."""
    runs = _two_runs(work, split, inputs, axes, modalities)
    _check_text_lengths(work, inputs, axes, pre)
    return _own_batches(work, split, inputs, runs, axes=axes, modalities=modalities)


def _check_text_lengths(work: Any, inputs: Mapping[str, Any], axes: Axes, pre: Mapping[str, Any]) -> None:
    """The model runs at the length strings are padded or cut to, which neither check run may have used:
    a tokenizer's truncation of 128 tokens for a text tower of 77 positions exports and verifies at the
    example's 32 tokens, then fails on every string."""
    lengths = {
        name: p.max_length
        for name, p in pre.items()
        if isinstance(p, TextPreprocess) and axes.get(name, {}).get(1) == "seq" and p.max_length > inputs[name].shape[1]
    }
    if not lengths:
        return
    name, length = max(lengths.items(), key=lambda item: item[1])
    import torch

    try:
        with torch.no_grad():
            work(**resized(inputs, axes, {"seq": length}))
    except Exception as e:  # the user's model on a longer input: any failure is reported
        raise ExportError(
            f"the model fails on {length} tokens, the length strings are padded or cut to for input {name!r} "
            f"({type(e).__name__}: {str(e)[:300]}); set [inputs.{name}.preprocess] max_length (or preprocess=) "
            f"to a length the model takes, at most its position embeddings' size"
        ) from e


def _own_batches(
    work: Any, split: Split, inputs: dict[str, Any], runs: Runs, *, axes: Axes, modalities: Mapping[str, str]
) -> tuple[Axes, Runs, list[str]]:
    """Each modality's own batch symbol where an output pairs every item with every other (CLIP's
    ``logits_per_image``, ``(batch, batch)`` with one shared batch), so one photo can be scored against
    20 label texts; the shared batch stays where the model refuses different numbers of items."""
    if not pairs_rows(runs.output_axes(*runs.model_outputs())):
        return axes, runs, []
    separate = modality_batches(axes, {n: s.modality for s in split.encoders for n in s.inputs})
    if separate is None:
        return axes, runs, []
    try:
        own = _two_runs(work, split, inputs, separate, modalities)
    except ExportError as e:
        why = " ".join(str(e.__cause__ or e).split())[:200]
        note = (
            "an output pairs every item with every other, but the model fails on different numbers of items per "
            f"modality ({why}), so all inputs share one batch size"
        )
        return axes, runs, [note]
    symbols = sorted(
        {symbol for per_axis in separate.values() for symbol in per_axis.values() if is_batch_symbol(symbol)}
    )
    note = (
        "an output pairs every item with every other, so each modality takes its own number of items "
        f"({', '.join(symbols)}): e.g. one photo against several label texts in one call"
    )
    return separate, own, [note]


def _model_outputs(ctx: Ctx, parts: Sequence[ExportedPart], head: ExportedPart) -> list[tuple[str, str, TensorSpec]]:
    """Each model output in forward's order: (its name, the component computing it, that component's tensor).
    Encoder outputs returned as they are come from the encoder, the rest from the head."""
    tensors = {(c.name, t.name): t for c in (*(p.component for p in parts), head.component) for t in c.outputs}
    places = {t.name: (head.component.name, t.name) for t in head.component.outputs} | dict(head.passthrough)
    return [(name, places[name][0], tensors[places[name]]) for name in ctx.runs.model_outputs()[0]]


@dataclass(frozen=True)
class _Meta:
    """What the manifest says about the model beyond its components."""

    model: Any
    given: ModelInfo | None
    modalities: Mapping[str, str]
    preprocess: Mapping[str, Any]
    vocab: Sequence[str] | None
    labels: Sequence[str] | None
    tokenizer: Any = None  # a tokenizers.Tokenizer saved as tokenizer.json
    defaults: Mapping[str, float] = dataclasses.field(default_factory=dict)  # inputs filled when omitted


def _manifest(
    ctx: Ctx, meta: _Meta, parts: Sequence[ExportedPart], head: ExportedPart, mono: ExportedPart | None
) -> Manifest:
    wiring = [Edge(RAW_INPUTS, t.name, p.component.name, t.name) for p in parts for t in p.component.inputs]
    producers = {t.name: p.component.name for p in parts for t in p.component.outputs}
    wiring += [
        Edge(producers.get(t.name, RAW_INPUTS), t.name, head.component.name, t.name) for t in head.component.inputs
    ]
    consumed = {e.output for e in wiring if e.source == RAW_INPUTS}
    unused = [n for n in ctx.runs.inputs[0] if n not in consumed]
    ctx.warnings.extend(f"input {n!r} is used by no component; it is left out of the bundle" for n in unused)
    raw = {n: t for n, t in ctx.runs.inputs[0].items() if n in consumed}
    pre = {n: p for n, p in meta.preprocess.items() if n in consumed}
    inputs, warnings = mf.input_specs(raw, meta.modalities, ctx.axes, pre, meta.defaults)
    outputs, label_warnings = mf.output_specs(_model_outputs(ctx, parts, head), meta.labels)
    ctx.warnings.extend(warnings + label_warnings)
    assets = [a for p in (*parts, head, *([mono] if mono else [])) for a in p.assets]
    if meta.vocab:
        assets.append(Asset(name="vocab", file=mf.write_vocab(ctx.stage, meta.vocab)))
    if meta.tokenizer is not None:
        from mmedge.export._hf_tokenizer import write_tokenizer

        assets.append(write_tokenizer(ctx.stage, meta.tokenizer))
    return Manifest(
        model=mf.model_info(meta.model, meta.given),
        inputs=inputs,
        components=(*(p.component for p in parts), head.component),
        wiring=tuple(wiring),
        outputs=outputs,
        assets=tuple(assets),
        created_by=mf.created_by(ctx.opset),
    )
