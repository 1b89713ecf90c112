"""Export and verify each piece: the encoders, the fusion head, the whole chain, the monolithic model."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mmedge.bundle import Asset, Component
from mmedge.errors import ExportError
from mmedge.export import _manifest as mf
from mmedge.export._capture import Call, used_tensors
from mmedge.export._context import Ctx, ExportedPart, model_prefix, raise_failed
from mmedge.export._exporters import Exported, ExportJob, export_verified
from mmedge.export._tree import flatten
from mmedge.export._types import EncoderSpec, VerificationRow
from mmedge.export._verify import compare, numpy_of, run_onnx, verify_onnx

__all__ = ["HEAD", "MONOLITHIC_FILE", "check_chain", "export_encoder", "export_head", "export_monolithic"]

HEAD = "fusion_head"
MONOLITHIC_FILE = "model.onnx"


def _export(
    ctx: Ctx, job: ExportJob, file: str, feeds: Sequence[Mapping[str, Any]], refs: Sequence[Mapping[str, Any]]
) -> Exported:
    """Export ``job`` into the bundle, verified on both runs; progress and fallbacks reported."""
    ctx.report(job.component, "exporting")
    exported = export_verified(job, ctx.stage / file, lambda p: verify_onnx(job.component, p, feeds, refs, ctx.tol))
    ctx.note_fallbacks(job.component, exported)
    ctx.report(job.component, f"verified ({exported.exporter})")
    return exported


def _assets(name: str, file: str, exported: Exported) -> tuple[Asset, ...]:
    return (Asset(name=f"{name}_weights", file=f"{file}.data"),) if exported.external_data else ()


def _numpy(tensors: Mapping[str, Any]) -> dict[str, Any]:
    return {n: numpy_of(t) for n, t in tensors.items()}


def export_encoder(ctx: Ctx, spec: EncoderSpec, call: Call, split: Sequence[EncoderSpec] = ()) -> ExportedPart:
    """``<modality>_encoder.onnx``: the encoder on its raw inputs, outputs flattened and named.

    When ``forward`` computes the encoder's arguments from raw inputs (``spec.folded``), that
    computation is exported in the component: the module is ``forward`` run up to the call, with
    the other encoders of ``split`` stubbed out by their recorded outputs.
    """
    from mmedge.export._wrappers import EncoderModule, FoldedEncoderModule, stubbed

    names_in = tuple(dict.fromkeys(spec.inputs))
    others = [s.path for s in split if s.path != spec.path and set(s.inputs).isdisjoint(names_in)]
    with stubbed(ctx.work, others if call.computed else []) as stubs:
        for path, stub in stubs.items():
            stub.value = ctx.runs.calls[0][path].output
        if call.computed:
            constants = {n: t for n, t in ctx.runs.inputs[0].items() if n not in names_in}
            module: Any = FoldedEncoderModule(ctx.work, spec.path, names_in, constants)
        else:
            module = EncoderModule(ctx.work.get_submodule(spec.path), call, names_in)
        return _export_encoder(ctx, spec, call, module, names_in)


def _export_encoder(ctx: Ctx, spec: EncoderSpec, call: Call, module: Any, names_in: tuple[str, ...]) -> ExportedPart:
    from mmedge.export._frontend import FrontendSwap, swap_mel_frontends

    key = spec.name.removesuffix("_encoder")
    prefix = key if isinstance(call.output, Mapping) else f"{key}_features"
    what = f"encoder {spec.path!r}"
    pairs, structure = flatten(call.output, prefix, what)
    features = (dict(pairs), dict(flatten(ctx.runs.calls[1][spec.path].output, prefix, what)[0]))
    args = tuple(ctx.runs.inputs[0][n] for n in names_in)
    swap = FrontendSwap()
    if ctx.audio_frontend != "keep" and spec.modality == "audio":
        swap = swap_mel_frontends(
            module.encoder, lambda: module(*args), call.output, ctx.tol, spec.name, mode=ctx.audio_frontend
        )
        if swap.kept:
            ctx.warnings.append(swap.kept)
    out_axes = ctx.output_axes(*features)
    job = ExportJob(
        spec.name,
        module,
        args,
        names_in,
        tuple(features[0]),
        {**{n: ctx.axes[n] for n in names_in}, **out_axes},
        ctx.opset,
        tuple(ctx.runs.inputs[1][n] for n in names_in),
    )
    feeds = [ctx.runs.numpy(r, names_in) for r in (0, 1)]
    file = f"{spec.name}.onnx"
    exported = _export(ctx, job, file, feeds, [_numpy(f) for f in features])
    component = Component(
        name=spec.name,
        file=file,
        role="encoder",
        modality=spec.modality,
        inputs=tuple(mf.tensor_spec(n, ctx.runs.inputs[0][n], ctx.axes[n]) for n in names_in),
        outputs=tuple(mf.tensor_spec(n, t, out_axes[n]) for n, t in features[0].items()),
        exporter=exported.exporter,
        opset=ctx.opset,
        output_structure=structure,
        optimizations=(*exported.optimizations, *swap.optimizations),
        folded=spec.folded,
    )
    return ExportedPart(component, exported.rows, features, call.output, out_axes, _assets(spec.name, file, exported))


def export_head(ctx: Ctx, specs: Sequence[EncoderSpec], parts: Sequence[ExportedPart]) -> ExportedPart:
    """``fusion_head.onnx``: ``forward`` with encoders stubbed, fed the encoder outputs it uses.

    Raw inputs that ``forward`` also uses outside the encoders (a mask, decoder tokens) become
    head inputs too; everything the head does not touch stays out of its graph.
    """
    from mmedge.export._wrappers import HeadModule, stubbed

    features = tuple({k: v for p in parts for k, v in p.features[r].items()} for r in (0, 1))
    raw = ctx.runs.inputs
    clash = sorted(set(features[0]) & set(raw[0]))
    if clash:
        raise ExportError(f"encoder outputs {clash} have the names of raw inputs; rename the model's forward arguments")
    values = tuple({**features[r], **raw[r]} for r in (0, 1))
    templates = {s.path: (p.template, tuple(p.features[0])) for s, p in zip(specs, parts, strict=True)}
    with stubbed(ctx.work, [s.path for s in specs]) as stubs:
        probe = HeadModule(
            ctx.work, stubs=stubs, templates=templates, raw_names=tuple(raw[0]), inputs=tuple(values[0]), constants={}
        )
        used = used_tensors(probe, values[0], glue_fed={n for s in specs if s.folded for n in s.inputs})
        _check_reproduces(probe, values[0], ctx.runs.outputs[0], ctx)
        everything = ctx.runs.model_outputs()
        passthrough = _passthrough(everything, parts)
        if len(passthrough) == len(everything[0]):
            raise ExportError(
                "forward returns only encoder outputs as they are, so nothing is left for a fusion head; name the "
                "encoders (encoders= / [encoders]) or return what forward computes from them"
            )
        inputs = tuple(n for n in values[0] if n in used)
        if not any(n in features[0] for n in inputs):
            raise ExportError("the rest of forward uses no encoder output; check the encoders named for the split")
        constants = {n: t for n, t in values[0].items() if n not in used}
        skip = [i for i, n in enumerate(everything[0]) if n in passthrough]
        module = HeadModule(
            ctx.work,
            stubs=stubs,
            templates=templates,
            raw_names=tuple(raw[0]),
            inputs=inputs,
            constants=constants,
            skip=skip,
        )
        outputs = tuple({n: t for n, t in run.items() if n not in passthrough} for run in everything)
        in_axes = {n: ctx.axes[n] if n in raw[0] else _feature_axes(parts, n) for n in inputs}
        out_axes = ctx.output_axes(*outputs)
        job = ExportJob(
            HEAD,
            module,
            tuple(values[0][n] for n in inputs),
            inputs,
            tuple(outputs[0]),
            {**in_axes, **out_axes},
            ctx.opset,
            tuple(values[1][n] for n in inputs),
        )
        feeds = [{n: numpy_of(values[r][n]) for n in inputs} for r in (0, 1)]
        file = f"{HEAD}.onnx"
        exported = _export(ctx, job, file, feeds, [_numpy(o) for o in outputs])
    structure = flatten(ctx.runs.outputs[0], model_prefix(ctx.runs.outputs[0]), "model.forward")[1]
    component = Component(
        name=HEAD,
        file=file,
        role="head",
        inputs=tuple(mf.tensor_spec(n, values[0][n], in_axes[n]) for n in inputs),
        outputs=tuple(mf.tensor_spec(n, t, out_axes[n]) for n, t in outputs[0].items()),
        exporter=exported.exporter,
        opset=ctx.opset,
        output_structure=structure,
        optimizations=exported.optimizations,
    )
    return ExportedPart(component, exported.rows, assets=_assets(HEAD, file, exported), passthrough=passthrough)


def _passthrough(
    outputs: tuple[Mapping[str, Any], Mapping[str, Any]], parts: Sequence[ExportedPart]
) -> dict[str, tuple[str, str]]:
    """Model outputs that are an encoder's output tensor itself in both runs (a ``CLIPOutput`` returns its
    vision model's ``last_hidden_state``): output name -> (encoder component, tensor). The manifest wires
    them from the encoder; in the head they would be graph inputs returned as outputs, which the
    exporters refuse or fix to the example's sizes."""
    found = {}
    for name in outputs[0]:
        for part in parts:
            same = [
                tensor
                for tensor in part.features[0]
                if outputs[0][name] is part.features[0][tensor] and outputs[1][name] is part.features[1][tensor]
            ]
            if same:
                found[name] = (part.component.name, same[0])
    return found


def _feature_axes(parts: Sequence[ExportedPart], name: str) -> Mapping[int, str]:
    return next(p.axes[name] for p in parts if name in p.axes)


def _check_reproduces(head: Any, values: Mapping[str, Any], expected: Any, ctx: Ctx) -> None:
    """The stubbed forward must give the model's output; if not, no export of it can."""
    import torch

    with torch.no_grad():
        got = head(*values.values())
    want = [t for _, t in flatten(expected, model_prefix(expected), "model.forward")[0]]
    rows = [
        compare(HEAD, f"output {i}", [numpy_of(w)], [{f"output {i}": numpy_of(g)}], ctx.tol)
        for i, (w, g) in enumerate(zip(want, got, strict=True))
    ]
    raise_failed(
        rows,
        "forward with the encoders replaced by their recorded outputs does not reproduce the model's output (forward "
        "depends on encoder state other than its return value, or is random); make encoders pure functions of their inputs",
    )


def check_chain(ctx: Ctx, parts: Sequence[ExportedPart], head: ExportedPart) -> tuple[VerificationRow, ...]:
    """Run encoders then head in onnxruntime, wired as in the manifest, against ``model(**inputs)``."""
    ctx.report("chain", "verifying")
    values = [ctx.runs.numpy(r, list(ctx.runs.inputs[0])) for r in (0, 1)]
    for part in parts:
        feeds = [{t.name: v[t.name] for t in part.component.inputs} for v in values]
        for v, got in zip(values, run_onnx(ctx.stage / part.component.file, feeds), strict=True):
            if isinstance(got, str):
                raise ExportError(f"{part.component.name} failed in the chain check: {got}")
            v.update(got)
    gots = run_onnx(
        ctx.stage / head.component.file, [{t.name: v[t.name] for t in head.component.inputs} for v in values]
    )
    for v, got in zip(values, gots, strict=True):
        if isinstance(got, dict):
            got.update({name: v[tensor] for name, (_, tensor) in head.passthrough.items()})
    refs = [_numpy(o) for o in ctx.runs.model_outputs()]
    rows = tuple(compare("chain", n, [r[n] for r in refs], gots, ctx.tol) for n in refs[0])
    raise_failed(rows, "the whole chain (encoders → fusion_head) does not reproduce model.forward")
    ctx.report("chain", "verified")
    return rows


def export_monolithic(ctx: Ctx, head: ExportedPart) -> ExportedPart:
    """``model.onnx``: the whole model in one graph, the benchmark's baseline."""
    from mmedge.export._wrappers import MonolithicModule

    raw = tuple(ctx.runs.inputs[0])
    refs = [_numpy(o) for o in ctx.runs.model_outputs()]
    out_axes = ctx.output_axes(*ctx.runs.model_outputs())
    job = ExportJob(
        "monolithic",
        MonolithicModule(ctx.work, raw),
        tuple(ctx.runs.inputs[0].values()),
        raw,
        tuple(refs[0]),
        {**ctx.axes, **out_axes},
        ctx.opset,
        tuple(ctx.runs.inputs[1].values()),
    )
    exported = _export(ctx, job, MONOLITHIC_FILE, [ctx.runs.numpy(r, raw) for r in (0, 1)], refs)
    component = Component(
        name="monolithic", file=MONOLITHIC_FILE, role="head", inputs=(), outputs=(), exporter=exported.exporter
    )
    return ExportedPart(
        component,
        exported.rows,
        assets=(Asset(name="monolithic", file=MONOLITHIC_FILE), *_assets("monolithic", MONOLITHIC_FILE, exported)),
    )
