"""Failure isolation: a step that fails on one component does not fail the whole bundle.

A user's model can export fine and still trip one of onnxruntime's quantization tools: an
``nn.EmbeddingBag`` text encoder exports sequence ops (``SequenceEmpty``, ``Loop``,
``ConcatFromSequence``) that ``quant_pre_process``'s symbolic shape inference cannot type
(``KeyError: ''``). The component whose step raised (a :class:`~mmedge.quantize._apply.StepError`)
is retried without that step where that is sound, else kept FP32; every other component is
quantized as usual:

- pre-processing (symbolic shape inference and graph optimisation) only helps the quantizers:
  a graph symbolic inference cannot type (a dynamo-exported STFT front-end) is pre-processed
  without it, and one that fails even so is read by the quantizers as it is (the named FP32 graph);
- static calibration: dynamic INT8 computes activation ranges at run time and needs none;
- quantization itself: nothing to go without, so the component stays FP32.

Each is recorded as a :class:`~mmedge.quantize.report.StepFailure` in the report and the
manifest's ``quantization`` record. With ``strict=True`` the failure is raised instead, with the fix.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Iterable
from pathlib import Path

from mmedge.errors import QuantizationError
from mmedge.quantize._apply import CalibrationError, PreprocessError, StepError, named_copy, prepare
from mmedge.quantize.recipes import Recipe
from mmedge.quantize.report import StepFailure

__all__ = ["prepare_all", "without_step"]

NO_PRE_PROCESS = (
    "quantized without quant_pre_process (no symbolic shape inference or graph optimisation; "
    "tensors whose shape the quantizer cannot tell may stay FP32)"
)
SYMBOLIC_SHAPES = "symbolic shape inference"  # the step a graph was pre-processed without
NO_SYMBOLIC_SHAPES = (
    "pre-processed without symbolic shape inference (ONNX shape inference and graph optimisation only; "
    "tensors whose shape the quantizer cannot tell may stay FP32)"
)
AS_DYNAMIC = "retried as dynamic INT8, which computes activation ranges at run time and needs no calibration"
KEPT_FP32 = "kept FP32"


def prepare_all(
    components: Iterable[tuple[str, Path]],
    work: Path,
    *,
    fp32: Collection[str],
    strict: bool,
    say: Callable[[str], None],
) -> tuple[dict[str, Path], dict[str, list[StepFailure]]]:
    """Pre-process each ``(name, file)``: the files the quantizers read, and the components that went without.

    Components in ``fp32`` (kept FP32 on request) are only named: nothing reads their prepared graph.
    """
    prepared: dict[str, Path] = {}
    failures: dict[str, list[StepFailure]] = {}
    for name, source in components:
        if name in fp32:
            prepared[name] = named_copy(name, source, work)
            continue
        say(f"pre-processing {name}")
        try:
            prepared[name] = prepare(name, source, work)
        except PreprocessError as e:
            if strict:
                raise _strict_error(name, e, NO_PRE_PROCESS) from e
            try:
                prepared[name] = prepare(name, source, work, symbolic=False)
                failures[name] = [StepFailure(SYMBOLIC_SHAPES, str(e), NO_SYMBOLIC_SHAPES)]
            except PreprocessError:
                prepared[name] = named_copy(name, source, work)
                failures[name] = [StepFailure(e.step, str(e), NO_PRE_PROCESS)]
    return prepared, failures


def without_step(component: str, recipe: Recipe, error: StepError, *, strict: bool) -> tuple[Recipe, StepFailure]:
    """The recipe to retry ``component`` with after ``error``, and the record of it (``strict``: raise)."""
    if isinstance(error, CalibrationError) and recipe.mode == "static":
        action = AS_DYNAMIC
        retry = dataclasses.replace(
            Recipe.for_mode("dynamic", f"{recipe.reason}; static calibration failed: {action}"),
            exclude_nodes=recipe.exclude_nodes,
            keep_frontend_fp32=recipe.keep_frontend_fp32,
            reduce_range=recipe.reduce_range,
        )
    else:
        action = KEPT_FP32
        retry = Recipe.for_mode("fp32", f"{error.step} failed ({error}): kept FP32. The recipe was: {recipe.reason}")
    if strict:
        raise _strict_error(component, error, action) from error
    return retry, StepFailure(error.step, str(error), action)


def _strict_error(component: str, error: StepError, action: str) -> QuantizationError:
    return QuantizationError(
        f"{error}. strict=True makes this an error; without it, {component!r} would have been {action}, "
        f"and the report would say so. To quantize the rest of the bundle anyway, keep it FP32: "
        f"recipe={{{component!r}: 'fp32'}} (CLI: --recipe {component}=fp32), or drop strict (--strict)."
    )
