"""``export_captioner``: an image captioner (image encoder + recurrent decoder) → a generative bundle.

Three components, each exported like ``export_model``'s (dynamo or TorchScript, whichever
verifies) and checked against PyTorch on two batch sizes:

* ``image_encoder.onnx``: image [batch, 3, H, W] → image_features (``model.image_encoder``);
* ``decoder_init.onnx``: image_features → the first recurrent state, e.g. h0, c0 [layers, batch,
  hidden] (``model.decoder.init_state``);
* ``decoder_step.onnx``: tokens [batch, 1] + state → logits [batch, vocab] + the next state
  (``model.decoder.step``), checked from the first state and from a later one.

The manifest wires image → encoder → init → the step's state inputs, and its
:class:`~mmedge.bundle.GenerationSpec` tells the runtime how to loop the step (BOS/EOS/pad ids,
state pairs, the vocabulary asset). Finally the exported chain generates greedy captions for the
example images, and they must equal the PyTorch model's, produced by the same search
(:mod:`mmedge.decoding`) over ``model.decoder.step``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmedge.bundle import (
    RAW_INPUTS,
    Asset,
    Component,
    Edge,
    GenerationSpec,
    Manifest,
    ModelInfo,
    OutputSpec,
    check_replaceable,
    load_bundle,
    staged_bundle,
    write_manifest,
)
from mmedge.decoding import Generation, generate
from mmedge.errors import ExportError, translated
from mmedge.export import _manifest as mf
from mmedge.export._arguments import check_options, working_copy
from mmedge.export._axes import Axes, observed_axes, second_inputs
from mmedge.export._context import Progress
from mmedge.export._exporters import ExportJob, export_verified
from mmedge.export._types import EncoderSpec, ExportResult, VerificationRow
from mmedge.export._verify import numpy_of, record, run_onnx, verify_onnx
from mmedge.sessions import create_session, plain_options
from mmedge.verify import Tolerance

__all__ = ["DECODER_INIT", "DECODER_STEP", "IMAGE_ENCODER", "export_captioner"]

IMAGE_ENCODER, DECODER_INIT, DECODER_STEP = "image_encoder", "decoder_init", "decoder_step"
FEATURES, TOKENS, LOGITS = "image_features", "tokens", "logits"


@dataclass(frozen=True)
class _Env:
    """One captioner export in progress."""

    stage: Path
    opset: int
    tol: Tolerance
    report: Progress
    warnings: list[str] = field(default_factory=list)


def export_captioner(
    model: Any,
    example_inputs: Mapping[str, Any],
    *,
    out: str | os.PathLike[str],
    state_names: Sequence[str] = ("h", "c"),
    max_length: int | None = None,
    vocab: Sequence[str] | None = None,
    preprocess: Mapping[str, Any] | None = None,
    opset: int | None = None,
    tolerance: Tolerance | None = None,
    progress: Progress | None = None,
    model_info: ModelInfo | None = None,
    force: bool = False,
) -> ExportResult:
    """Export a captioner as ``image_encoder`` + ``decoder_init`` + ``decoder_step`` and verify it.

    ``model`` needs ``image_encoder(image) -> feature``, ``decoder.init_state(feature) -> state
    tuple`` and ``decoder.step(tokens [B, 1], *state) -> (logits [B, vocab], *state)``, plus
    ``bos_id``, ``eos_id`` and ``pad_id`` (like :class:`mmedge.models.CaptionNet`).
    ``example_inputs`` is ``{image input name: example images}``. ``state_names`` names the state
    tensors (``h``, ``c`` for an LSTM): init outputs ``h0``, step inputs ``h``, step outputs
    ``h_out``. ``max_length`` (tokens generated after <bos>, <eos> included) defaults to
    ``model.config.max_caption_length - 1``; ``vocab`` and ``preprocess`` to the model's attributes.
    An existing ``out`` is replaced only if it is an mmedge bundle (``force=True``: any folder).
    Raises :class:`~mmedge.errors.ExportError` naming the component and the fix.
    """
    tol = tolerance or Tolerance()
    opset = check_options(opset, "keep", tol)
    check_replaceable(out, force=force)
    work = working_copy(model)
    name, image = _check_model(work, example_inputs, state_names)
    vocab = tuple(vocab if vocab is not None else getattr(model, "vocab", None) or ())
    spec = _generation_spec(model, state_names, max_length, vocab)
    given = preprocess if preprocess is not None else getattr(model, "preprocess", None) or {}
    pre = mf.resolve_preprocess({k: v for k, v in given.items() if k == name}, model, {name: image}, vocab)
    runs = _reference_runs(work, name, image, state_names=state_names, spec=spec, vocab_size=len(vocab))
    with staged_bundle(out, force=force) as stage:
        env = _Env(stage, opset, tol, progress or (lambda _step, _status: None))
        parts = _export_parts(env, work, runs)
        chain = _check_generation(env, work, runs, spec=spec, parts=parts, vocab=vocab)
        step = _with(parts[DECODER_STEP][0], record((chain,), [], tol, "pytorch-generate", chain.detail))
        components = (parts[IMAGE_ENCODER][0], parts[DECODER_INIT][0], step)
        inputs, warnings = mf.input_specs({name: image}, {name: "image"}, {name: {0: "batch"}}, pre)
        env.warnings.extend(warnings)
        write_manifest(
            stage,
            Manifest(
                model=mf.model_info(model, model_info),
                inputs=inputs,
                components=components,
                wiring=_wiring(name, parts, spec),
                outputs=(OutputSpec(name=LOGITS, component=DECODER_STEP, tensor=LOGITS, kind="logits"),),
                assets=(Asset(name=spec.vocab, file=mf.write_vocab(stage, vocab)),),
                created_by=mf.created_by(opset),
                generation=spec,
            ),
        )
    rows = [r for _, part_rows in parts.values() for r in part_rows]
    return ExportResult(
        path=Path(out),
        bundle=load_bundle(out),
        encoders=(EncoderSpec(IMAGE_ENCODER, "image_encoder", "image", (name,), {name: {0: "batch"}}),),
        auto_split=False,
        exporters={n: c.exporter for n, (c, _) in parts.items()},
        verification=(*rows, chain),
        warnings=tuple(env.warnings),
    )


def _check_model(model: Any, example_inputs: Mapping[str, Any], state_names: Sequence[str]) -> tuple[str, Any]:
    """The image input's name and example, after checking the model has what generation needs."""
    import torch

    problems = []
    if not hasattr(model, "image_encoder"):
        problems.append("model has no `image_encoder` submodule")
    decoder = getattr(model, "decoder", None)
    problems += [f"model.decoder has no `{m}` method" for m in ("init_state", "step") if not hasattr(decoder, m)]
    problems += [
        f"model has no int `{a}`"
        for a in ("bos_id", "eos_id", "pad_id")
        if not isinstance(getattr(model, a, None), int)
    ]
    if (
        not state_names
        or len(set(state_names)) != len(state_names)
        or not all(isinstance(s, str) and s for s in state_names)
    ):
        problems.append(f"state_names must be distinct non-empty names, found {list(state_names)!r}")
    if not isinstance(example_inputs, Mapping) or len(example_inputs) != 1:
        problems.append("example_inputs must be {image input name: example images}, one entry")
    elif not isinstance(image := next(iter(example_inputs.values())), torch.Tensor) or image.dim() != 4:
        problems.append(f"the example image must be a [batch, 3, H, W] tensor, found {type(image).__name__}")
    if problems:
        raise ExportError(f"cannot export {type(model).__name__} as a captioner: " + "; ".join(problems))
    return next(iter(example_inputs.items()))


def _generation_spec(
    model: Any, state_names: Sequence[str], max_length: int | None, vocab: Sequence[str]
) -> GenerationSpec:
    if not vocab:
        raise ExportError("a captioner needs its vocabulary to decode captions: pass vocab= or set model.vocab")
    if max_length is None:
        config_length = getattr(getattr(model, "config", None), "max_caption_length", None)
        if not isinstance(config_length, int):
            raise ExportError(
                "pass max_length= (tokens generated after <bos>, <eos> included); the model has no config.max_caption_length"
            )
        max_length = config_length - 1  # the config counts <bos>
    return GenerationSpec(
        decoder=DECODER_STEP,
        token_input=TOKENS,
        logits_output=LOGITS,
        state=tuple((s, f"{s}_out") for s in state_names),
        bos_id=model.bos_id,
        eos_id=model.eos_id,
        pad_id=model.pad_id,
        max_length=max_length,
        vocab="vocab",
    )


@dataclass(frozen=True)
class _Run:
    """One PyTorch reference run: every component's inputs and outputs by graph name."""

    feeds: dict[str, dict[str, Any]]  # component -> input name -> tensor
    outputs: dict[str, dict[str, Any]]  # component -> output name -> tensor


def _reference_runs(
    model: Any, name: str, image: Any, *, state_names: Sequence[str], spec: GenerationSpec, vocab_size: int
) -> tuple[_Run, _Run]:
    """The example batch, then one more item; the step is checked from the first state on the
    example and from the state after one step (with random tokens) on the second run."""
    import torch

    images = (image, second_inputs({name: image}, {name: {0: "batch"}}, {name: "image"})[name])
    gen = torch.Generator().manual_seed(0)
    runs = []
    with torch.no_grad(), translated(ExportError, "running the captioner in PyTorch"):
        for r, x in enumerate(images):
            feature = model.image_encoder(x)
            state = tuple(model.decoder.init_state(feature))
            if len(state) != len(state_names):
                raise ExportError(
                    f"decoder.init_state returns {len(state)} tensors but state_names has {len(state_names)}"
                )
            bos = torch.full((x.shape[0], 1), spec.bos_id, dtype=torch.long)
            tokens = bos if r == 0 else torch.randint(0, vocab_size, (x.shape[0], 1), generator=gen)
            step_state = state if r == 0 else tuple(model.decoder.step(bos, *state)[1:])
            logits, *after = model.decoder.step(tokens, *step_state)
            runs.append(
                _Run(
                    feeds={
                        IMAGE_ENCODER: {name: x},
                        DECODER_INIT: {FEATURES: feature},
                        DECODER_STEP: {TOKENS: tokens, **dict(zip(state_names, step_state, strict=True))},
                    },
                    outputs={
                        IMAGE_ENCODER: {FEATURES: feature},
                        DECODER_INIT: {f"{s}0": t for s, t in zip(state_names, state, strict=True)},
                        DECODER_STEP: {
                            LOGITS: logits,
                            **{f"{s}_out": t for s, t in zip(state_names, after, strict=True)},
                        },
                    },
                )
            )
    return runs[0], runs[1]


def _export_parts(
    env: _Env, work: Any, runs: tuple[_Run, _Run]
) -> dict[str, tuple[Component, tuple[VerificationRow, ...]]]:
    from mmedge.export._decoder_wrappers import DecoderInit, DecoderStep, ImageEncoder

    modules = {IMAGE_ENCODER: ImageEncoder(work), DECODER_INIT: DecoderInit(work), DECODER_STEP: DecoderStep(work)}
    roles = {IMAGE_ENCODER: ("encoder", "image"), DECODER_INIT: ("decoder", None), DECODER_STEP: ("decoder", None)}
    return {
        name: _export_part(env, name, module, runs, role=roles[name][0], modality=roles[name][1])
        for name, module in modules.items()
    }


def _export_part(
    env: _Env, name: str, module: Any, runs: tuple[_Run, _Run], *, role: str, modality: str | None
) -> tuple[Component, tuple[VerificationRow, ...]]:
    """Export one component, verified on both runs; its manifest entry and verification rows."""
    feeds, outputs = (runs[0].feeds[name], runs[1].feeds[name]), (runs[0].outputs[name], runs[1].outputs[name])
    sizes = (
        {"batch": int(next(iter(feeds[0].values())).shape[0])},
        {"batch": int(next(iter(feeds[1].values())).shape[0])},
    )
    axes: Axes = {
        n: observed_axes(n, (tuple(first[n].shape), tuple(second[n].shape)), sizes)
        for first, second in (feeds, outputs)
        for n in first
    }
    bad = [n for n, a in axes.items() if list(a.values()) != ["batch"]]
    if bad:
        raise ExportError(
            f"{name}: tensors {bad} must have exactly one axis that follows the batch size; found {[axes[n] for n in bad]}"
        )
    job = ExportJob(name, module, tuple(feeds[0].values()), tuple(feeds[0]), tuple(outputs[0]), axes, env.opset)
    np_feeds = [{n: numpy_of(t) for n, t in f.items()} for f in feeds]
    refs = [{n: numpy_of(t) for n, t in o.items()} for o in outputs]
    file = f"{name}.onnx"
    env.report(name, "exporting")
    exported = export_verified(job, env.stage / file, lambda p: verify_onnx(name, p, np_feeds, refs, env.tol))
    env.warnings.extend(
        f"{name}: the {a.exporter} exporter failed ({a.reason}); used {exported.exporter}" for a in exported.failed
    )
    if exported.external_data:
        raise ExportError(f"{name} has over 2 GB of weights; captioners that large are not supported")
    env.report(name, f"verified ({exported.exporter})")
    component = Component(
        name=name,
        file=file,
        role=role,
        modality=modality,
        inputs=tuple(mf.tensor_spec(n, t, axes[n]) for n, t in feeds[0].items()),
        outputs=tuple(mf.tensor_spec(n, t, axes[n]) for n, t in outputs[0].items()),
        exporter=exported.exporter,
        opset=env.opset,
        optimizations=exported.optimizations,
        verification=(record(exported.rows, np_feeds, env.tol, "pytorch"),),
    )
    return component, exported.rows


def _wiring(name: str, parts: Mapping[str, tuple[Component, Any]], spec: GenerationSpec) -> tuple[Edge, ...]:
    """image → encoder → init → the step's state inputs (their first value; the loop feeds the rest)."""
    init_outputs = [t.name for t in parts[DECODER_INIT][0].outputs]
    return (
        Edge(RAW_INPUTS, name, IMAGE_ENCODER, name),
        Edge(IMAGE_ENCODER, FEATURES, DECODER_INIT, FEATURES),
        *(Edge(DECODER_INIT, o, DECODER_STEP, i) for o, (i, _) in zip(init_outputs, spec.state, strict=True)),
    )


def _check_generation(
    env: _Env,
    work: Any,
    runs: tuple[_Run, _Run],
    *,
    spec: GenerationSpec,
    parts: Mapping[str, tuple[Component, Any]],
    vocab: Sequence[str],
) -> VerificationRow:
    """Greedy captions of the exported chain against PyTorch's on both runs' images; raises on a mismatch."""
    env.report("generation", "verifying")
    step_component = parts[DECODER_STEP][0]
    step_onnx = _onnx_step(env.stage / step_component.file)
    problems, worst = [], 0.0
    for r, run in enumerate(runs):
        feed = {n: numpy_of(t) for n, t in run.feeds[IMAGE_ENCODER].items()}
        (features,) = _ok(run_onnx(env.stage / f"{IMAGE_ENCODER}.onnx", [feed]))
        (state,) = _ok(run_onnx(env.stage / f"{DECODER_INIT}.onnx", [features]))
        initial = {i: state[f"{i}0"] for i, _ in spec.state}
        torch_initial = {n: numpy_of(t) for n, t in run.outputs[DECODER_INIT].items()}
        kwargs = {"spec": spec, "decoder": step_component, "vocab": vocab}
        got = generate(step_onnx, initial, **kwargs)
        want = generate(_torch_step(work, spec), {i: torch_initial[f"{i}0"] for i, _ in spec.state}, **kwargs)
        worst = max(worst, *(abs(a - b) for a, b in zip(got.scores, want.scores, strict=True)))
        problems += _differences(r, got, want)
    row = VerificationRow(
        component="generation",
        output="token_ids",
        max_abs_error=worst,
        max_rel_error=0.0,
        passed=not problems,
        shapes=tuple((int(next(iter(run.feeds[IMAGE_ENCODER].values())).shape[0]),) for run in runs),
        detail="; ".join(problems) or "greedy captions of the exported chain equal PyTorch's on both runs",
    )
    if problems:
        raise ExportError("the exported decoder generates other captions than PyTorch:\n  - " + "\n  - ".join(problems))
    env.report("generation", "verified")
    return row


def _differences(run: int, got: Generation, want: Generation) -> list[str]:
    return [
        f"run {run} item {i}: ONNX {list(a)} vs PyTorch {list(b)}"
        for i, (a, b) in enumerate(zip(got.token_ids, want.token_ids, strict=True))
        if a != b
    ]


def _ok(results: list[dict[str, np.ndarray] | str]) -> list[dict[str, np.ndarray]]:
    failed = [r for r in results if isinstance(r, str)]
    if failed:
        raise ExportError(f"onnxruntime failed while checking generation: {failed[0]}")
    return [r for r in results if not isinstance(r, str)]


def _onnx_step(path: Path) -> Any:
    session = create_session(
        path, plain_options(log_severity=2), error=ExportError, what=f"loading {path.name} to check generation"
    )
    names = [o.name for o in session.get_outputs()]

    def step(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with translated(ExportError, f"running {path.name} to check generation"):
            return dict(zip(names, session.run(names, feeds), strict=True))

    return step


def _torch_step(model: Any, spec: GenerationSpec) -> Any:
    import torch

    def step(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        state = [torch.from_numpy(np.ascontiguousarray(feeds[i])) for i, _ in spec.state]
        with torch.no_grad():
            logits, *after = model.decoder.step(torch.from_numpy(feeds[spec.token_input]), *state)
        return {
            spec.logits_output: numpy_of(logits),
            **{o: numpy_of(t) for (_, o), t in zip(spec.state, after, strict=True)},
        }

    return step


def _with(component: Component, verification: Any) -> Component:
    return dataclasses.replace(component, verification=(*component.verification, verification))
