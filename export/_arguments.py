"""The arguments every export entry point shares (export_model, export_captioner, doctor), checked.

Each check raises ExportError naming what is wrong before any tracing starts.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Mapping
from typing import Any

from mmedge.bundle import MODALITIES
from mmedge.errors import ExportError, translated
from mmedge.export._dict_arguments import flatten_dict_arguments
from mmedge.export._types import DEFAULT_OPSET
from mmedge.verify import Tolerance

__all__ = ["AUDIO_FRONTENDS", "check_inputs", "check_modalities", "check_options", "model_and_inputs", "working_copy"]

# auto: swap torchaudio MelSpectrograms for the STFT-free MelFrontend where the swap verifies, else keep them;
# conv: swap them or fail; keep: export the model's front-end as it is (an ONNX STFT)
AUDIO_FRONTENDS = ("auto", "conv", "keep")


def check_options(opset: int | None, audio_frontend: str, tol: Tolerance) -> int:
    """The opset to use, after checking the exporter options."""
    if audio_frontend not in AUDIO_FRONTENDS:
        raise ExportError(f"audio_frontend must be one of {AUDIO_FRONTENDS}, found {audio_frontend!r}")
    if not isinstance(tol, Tolerance) or tol.atol < 0 or tol.rtol < 0 or tol.min_cosine is not None:
        raise ExportError(
            "tolerance must be a Tolerance with non-negative atol and rtol and no min_cosine "
            f"(export is checked element-wise against PyTorch), found {tol!r}"
        )
    opset = DEFAULT_OPSET if opset is None else opset
    if not isinstance(opset, int) or not 13 <= opset <= 20:
        raise ExportError(f"opset must be an integer from 13 to 20 (the range both exporters support), found {opset!r}")
    return opset


def check_modalities(modalities: Mapping[str, str] | None, inputs: Mapping[str, Any]) -> dict[str, str]:
    """The modalities the caller named, each for an input and from MODALITIES."""
    given = dict(modalities or {})
    problems = [f"{n!r} is not an input" for n in given if n not in inputs]
    problems += [f"{n!r}: {m!r} is not one of {MODALITIES}" for n, m in given.items() if m not in MODALITIES]
    if problems:
        raise ExportError("modalities: " + "; ".join(problems))
    return given


def working_copy(model: Any) -> Any:
    """A deep copy of the model in eval mode: export never changes the caller's model."""
    from torch import nn

    if not isinstance(model, nn.Module):
        raise ExportError(f"model must be a torch.nn.Module, found {type(model).__name__}")
    with translated(ExportError, f"cannot copy {type(model).__name__} for export (copy.deepcopy failed)"):
        return copy.deepcopy(model).eval()


def model_and_inputs(model: Any, example_inputs: Mapping[str, Any]) -> tuple[Any, dict[str, Any], list[str]]:
    """The working copy to export, its example inputs by input name in ``forward``'s order, and notes.

    A dict argument (``forward(batch)``) becomes one input per entry (:mod:`mmedge.export._dict_arguments`).
    """
    work = working_copy(model)
    if not isinstance(example_inputs, Mapping):
        raise ExportError("example_inputs must be a non-empty dict of forward's argument names to tensors")
    flat, notes = flatten_dict_arguments(work, example_inputs)
    return work, check_inputs(work, flat), notes


def check_inputs(model: Any, example_inputs: Mapping[str, Any]) -> dict[str, Any]:
    """The example inputs in ``forward``'s argument order, after checking names and types."""
    import torch

    if not isinstance(example_inputs, Mapping) or not example_inputs:
        raise ExportError("example_inputs must be a non-empty dict of forward's argument names to tensors")
    params = inspect.signature(model.forward).parameters
    kinds = {p.kind for p in params.values()}
    problems = [
        f"{n!r} is a {type(t).__name__}, not a tensor"
        for n, t in example_inputs.items()
        if not isinstance(t, torch.Tensor)
    ]
    if inspect.Parameter.VAR_KEYWORD not in kinds:
        problems += [
            f"{n!r} is not an argument of forward{inspect.signature(model.forward)}"
            for n in example_inputs
            if n not in params
        ]
    problems += [
        f"forward's required argument {n!r} has no example"
        for n, p in params.items()
        if p.default is inspect.Parameter.empty
        and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        and n not in example_inputs
    ]
    if problems:
        raise ExportError(f"example_inputs do not fit {type(model).__name__}.forward: " + "; ".join(problems))
    order = [n for n in params if n in example_inputs] + [n for n in example_inputs if n not in params]
    return {n: example_inputs[n] for n in order}
