"""Apply a :class:`~mmedge.quantize.recipes.Recipe` to one ONNX file with onnxruntime's tools.

:func:`prepare` names every node (exclusion lists and the report need names) and runs
``quant_pre_process`` (symbolic shape inference + basic graph optimisations: the quantizer
only quantizes tensors whose shapes it knows). :func:`apply` then calibrates (static) and runs
``quantize_static`` (QDQ), ``quantize_dynamic`` or the FP16 converter on the prepared file.
Every onnxruntime exception is translated here into a :class:`StepError` (a
:class:`QuantizationError`) that names the component and the step, so the chain can retry the
component without that step (:mod:`mmedge.quantize._isolation`).
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import onnx

from mmedge.errors import QuantizationError, translated
from mmedge.quantize._shapes import infer_shapes
from mmedge.quantize.calibration import SampleReader
from mmedge.quantize.recipes import Recipe, frontend_nodes, shallow_convs

__all__ = [
    "METHODS",
    "CalibrationError",
    "PreprocessError",
    "QuantizerError",
    "StepError",
    "apply",
    "excluded_nodes",
    "named_copy",
    "prepare",
]

METHODS = ("minmax", "entropy", "percentile")


class StepError(QuantizationError):
    """One step of quantizing one component raised; ``step`` names it. The chain retries the
    component without that step where that is sound, else keeps it FP32 (``strict``: re-raised)."""

    step = ""


class PreprocessError(StepError):
    step = "pre-processing"


class CalibrationError(StepError):
    step = "calibration"


class QuantizerError(StepError):
    step = "quantization"


def named_copy(component: str, source: Path, work: Path) -> Path:
    """A copy of ``source`` in ``work`` whose every node has a unique name (exclusions and the report need names)."""
    model = onnx.load(str(source))
    _name_nodes(model, component)
    named = work / f"{component}.named.onnx"
    onnx.save(model, str(named))
    return named


def prepare(component: str, source: Path, work: Path, *, symbolic: bool = True) -> Path:
    """The named, pre-processed FP32 copy of ``source`` that every recipe starts from.

    Raises :class:`PreprocessError` when ``quant_pre_process`` fails; the named copy is then
    ``work / f"{component}.named.onnx"``, which the quantizers can read as it is. ``symbolic=False``
    skips its symbolic shape inference (:func:`mmedge.quantize._shapes.infer_shapes`), which cannot type some
    graphs (a dynamo-exported STFT front-end, sequence ops); ONNX shape inference and the graph
    optimisation still run.
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    named = named_copy(component, source, work)
    pre = work / f"{component}.pre.onnx"
    # Run from the work dir: onnxruntime's tools write temporaries into the current directory.
    with (
        translated(PreprocessError, f"pre-processing component {component!r} (onnxruntime quant_pre_process)"),
        contextlib.chdir(work),
        _quiet("onnxruntime.tools.symbolic_shape_infer"),
    ):
        inferred = named
        if symbolic:  # quant_pre_process's first step, with the opset-18 reductions typed (mmedge.quantize._shapes)
            # auto_merge: transformers graphs slice position tables to the input length (Min(max_positions, seq)
            # broadcast against seq), which strict symbolic inference refuses.
            inferred = work / f"{component}.shapes.onnx"
            onnx.save(infer_shapes(onnx.load(str(named)), auto_merge=True), str(inferred))
        quant_pre_process(str(inferred.resolve()), str(pre.resolve()), skip_symbolic_shape=True)
    model = onnx.load(str(pre))
    if _name_nodes(model, component):  # the optimiser may add unnamed nodes
        onnx.save(model, str(pre))
    return pre


@contextlib.contextmanager
def _quiet(logger: str) -> Iterator[None]:
    """Drop a library logger's warnings for a while. Symbolic shape inference warns on every
    dim it cannot compare ("Unable to determine if 20*floor(samples/20) + 400 <= samples + 400")
    and goes on correctly; on the user's terminal that reads like a failure."""
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def _name_nodes(model: onnx.ModelProto, component: str) -> bool:
    """Give every unnamed node a unique, stable name; whether any was renamed."""
    taken = {n.name for n in model.graph.node if n.name}
    renamed = False
    for i, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{component}/{node.op_type}_{i}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)
            renamed = True
    return renamed


def excluded_nodes(model: onnx.ModelProto, recipe: Recipe, fallback: Mapping[str, str]) -> dict[str, str]:
    """Node name -> why it stays FP32: requested names, excluded op types, the spectral
    front-end, and nodes kept by the accuracy fallback. Unknown requested names are an error."""
    names = [n.name for n in model.graph.node]
    unknown = sorted(set(recipe.exclude_nodes) - set(names))
    if unknown:
        raise QuantizationError(
            f"recipe excludes nodes {unknown} that the graph does not have (after naming and "
            f"pre-processing); it has e.g. {names[:5]}. Take names from the report or from Netron."
        )
    reasons = dict.fromkeys(recipe.exclude_nodes, "requested")
    for n in model.graph.node:
        if n.op_type in recipe.exclude_op_types:
            reasons.setdefault(n.name, f"op type {n.op_type} kept FP32")
    if recipe.keep_frontend_fp32:
        for name in frontend_nodes(model):
            reasons.setdefault(name, "spectral front-end (STFT/DFT, power, mel, log) kept FP32")
    if recipe.mode == "static":
        for name, depth in shallow_convs(model, recipe.min_conv_depth).items():
            reasons.setdefault(
                name, f"Conv over {depth} values per output (< min_conv_depth {recipe.min_conv_depth}): FP32 is faster"
            )
    for name, why in fallback.items():
        reasons.setdefault(name, why)
    return reasons


def apply(
    recipe: Recipe,
    prepared: Path,
    out: Path,
    *,
    exclude: Sequence[str],
    samples: SampleReader | None = None,
    method: str = "minmax",
    cache: Path | None = None,
) -> None:
    """Write ``prepared`` quantized by ``recipe`` to ``out``, keeping ``exclude`` nodes FP32.

    Static recipes first calibrate on ``samples`` (the component's own input dicts) with
    ``method`` and keep the ranges in ``cache``, so fallback rounds re-quantize without
    re-calibrating. onnxruntime failures raise :class:`CalibrationError` or
    :class:`QuantizerError`, so the chain knows which step to go without.
    """
    component = prepared.name.removesuffix(".pre.onnx").removesuffix(".named.onnx")
    if recipe.mode not in ("static", "dynamic", "fp16"):
        raise QuantizationError(f"recipe mode {recipe.mode!r} does not quantize; copy the FP32 file instead")
    if recipe.mode == "static":
        if samples is None or not len(samples):
            raise QuantizationError("static quantization needs calibration samples; none were given")
        cache = cache or out.with_suffix(".ranges.json")
        if not cache.is_file():
            with translated(CalibrationError, f"calibrating {component!r} ({method} ranges, onnxruntime calibrator)"):
                _calibrate(prepared, samples, method, cache)
    # onnxruntime logs a root-logger warning for a graph quant_pre_process could not prepare;
    # the report says so already.
    with translated(QuantizerError, f"quantizing {component!r} ({recipe.mode})"), _quiet(""):
        if recipe.mode == "static":
            _static(recipe, prepared, out, exclude=exclude, method=method, cache=cache)
        elif recipe.mode == "dynamic":
            _dynamic(recipe, prepared, out, exclude)
        else:
            _fp16(recipe, prepared, out, exclude)


def _calibrate(prepared: Path, samples: SampleReader, method: str, cache: Path) -> None:
    """Compute the activation ranges of ``prepared`` on ``samples`` into ``cache`` (what
    ``quantize_static`` does itself without a cache; done apart so a failure here is told apart)."""
    from onnxruntime.quantization import create_calibrator, save_tensors_data
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    samples.rewind()
    # The histogram calibrators print progress to stdout, which belongs to `--json` output.
    with (
        tempfile.TemporaryDirectory(prefix="calibrate-", dir=cache.parent) as tmp,
        contextlib.redirect_stdout(io.StringIO()),
    ):
        calibrator = create_calibrator(
            prepared,
            sorted({*QDQRegistry, *QLinearOpsRegistry}),  # the op types quantize_static calibrates
            augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=_calibration_method(method),
        )
        calibrator.collect_data(samples)
        save_tensors_data(calibrator.compute_data(), cache)


def _calibration_method(method: str):
    from onnxruntime.quantization import CalibrationMethod

    return {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[method]


def _static(recipe: Recipe, prepared: Path, out: Path, *, exclude: Sequence[str], method: str, cache: Path) -> None:
    from onnxruntime.quantization import QuantFormat, quantize_static

    quantize_static(
        str(prepared),
        str(out),
        None,  # the ranges come from the cache _calibrate wrote
        quant_format=QuantFormat.QDQ,
        per_channel=recipe.per_channel,
        reduce_range=recipe.reduce_range,
        activation_type=_quant_type(recipe.activation_type),
        weight_type=_quant_type(recipe.weight_type),
        nodes_to_exclude=list(exclude),
        op_types_to_quantize=list(recipe.op_types) or None,
        calibrate_method=_calibration_method(method),
        calibration_cache_path=cache,
        extra_options={"ActivationSymmetric": recipe.activation_symmetric},
    )


def _dynamic(recipe: Recipe, prepared: Path, out: Path, exclude: Sequence[str]) -> None:
    from onnxruntime.quantization import quantize_dynamic

    quantize_dynamic(
        str(prepared),
        str(out),
        per_channel=recipe.per_channel,
        reduce_range=recipe.reduce_range,
        weight_type=_quant_type(recipe.weight_type),
        nodes_to_exclude=list(exclude),
        op_types_to_quantize=list(recipe.op_types) or None,
    )


def _fp16(recipe: Recipe, prepared: Path, out: Path, exclude: Sequence[str]) -> None:
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    # keep_io_types: the component's IO stays float32, so the manifest and wiring do not change.
    model = convert_float_to_float16(
        onnx.load(str(prepared)),
        keep_io_types=True,
        node_block_list=list(exclude),
        op_block_list=[*DEFAULT_OP_BLOCK_LIST, *recipe.exclude_op_types],
    )
    onnx.save(model, str(out))


def _quant_type(name: str):
    from onnxruntime.quantization import QuantType

    return {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}[name]
