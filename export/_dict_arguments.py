"""``forward(batch)`` with a dict of tensors, as Lightning-style code writes it: the dict's keys become inputs.

An ONNX graph takes named tensors, not a dict, so the bundle's raw inputs are the dict's entries
(``image``, ``text``), which is also what a caller of the runtime has in hand. The export's
working copy of the model gets a ``forward`` that takes those tensors by name and rebuilds the
dict for the model's own ``forward``; everything downstream (the split, folding, verification)
then sees a model with one tensor per argument. The caller's model is never changed.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Mapping
from typing import Any

from mmedge.errors import ExportError

__all__ = ["flatten_dict_arguments", "forward_arguments", "grouped"]


def flatten_dict_arguments(model: Any, example_inputs: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The example inputs with each dict of tensors replaced by its entries, and a note per dict.

    ``model`` (the export's working copy) gets a ``forward`` taking the flat names when any
    argument is a dict; an entry that is not a tensor, or a key that collides with another
    argument, is an ExportError.
    """
    import torch

    groups = {name: value for name, value in example_inputs.items() if isinstance(value, Mapping) and value}
    if not groups:
        return dict(example_inputs), []
    flat: dict[str, Any] = {}
    notes = []
    for name, value in example_inputs.items():
        entries = groups.get(name, {name: value})
        for key, tensor in entries.items():
            where = f"forward's argument {name!r}" + (f", entry {key!r}," if name in groups else "")
            if name in groups and not isinstance(tensor, torch.Tensor):
                raise ExportError(
                    f"{where} is a {type(tensor).__name__}; a dict argument is exported when each of its entries "
                    "is a tensor (flatten nested values, or pass them as arguments of their own)"
                )
            if not isinstance(key, str) or not key.isidentifier():
                raise ExportError(f"{where}: key {key!r} cannot name a model input (use identifier strings)")
            if key in flat:
                raise ExportError(
                    f"{where}: {key!r} is also another argument or entry; the bundle's inputs need distinct names"
                )
            flat[key] = tensor
        if name in groups:
            notes.append(
                f"forward's argument {name!r} is a dict: its entries {', '.join(map(repr, entries))} are the "
                "bundle's inputs, passed by those names"
            )
    keys = {name: tuple(value) for name, value in groups.items()}
    model.forward = _DictForward(model, keys, tuple(flat))
    return flat, notes


class _DictForward:
    """``forward(**tensors)`` calling the model's class ``forward`` with its dict arguments rebuilt.

    An instance attribute, so ``model(...)`` and ``model.forward(...)`` both find it; deep copies of
    the model (the export copies it to swap front-ends) get one bound to the copy.
    """

    def __init__(self, model: Any, groups: Mapping[str, tuple[str, ...]], names: tuple[str, ...]) -> None:
        self._model = model
        self._groups = dict(groups)
        self._names = names
        parameter = inspect.Parameter.POSITIONAL_OR_KEYWORD
        self.__signature__ = inspect.Signature([inspect.Parameter(n, parameter) for n in names])

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        values = self.__signature__.bind(*args, **kwargs).arguments
        return type(self._model).forward(self._model, **grouped(values, self._groups))

    def __deepcopy__(self, memo: dict[int, Any]) -> _DictForward:
        return _DictForward(copy.deepcopy(self._model, memo), self._groups, self._names)


def grouped(flat: Mapping[str, Any], groups: Mapping[str, tuple[str, ...]]) -> dict[str, Any]:
    """``forward``'s arguments from inputs by name: each dict argument (``groups``: argument -> its entries) rebuilt."""
    entries = {key for keys in groups.values() for key in keys}
    call = {name: value for name, value in flat.items() if name not in entries}
    return call | {argument: {key: flat[key] for key in keys if key in flat} for argument, keys in groups.items()}


def forward_arguments(model: Any, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """``forward``'s keyword arguments from a bundle's inputs by name (what a PyTorch baseline is called with).

    Inputs ``forward`` names go as they are; where exactly one required argument is named by no input
    (``forward(batch)``, ``forward(batch, scale)``), it takes the dict of the inputs no argument names,
    as the export flattened it. Otherwise the inputs go as they are, and the model's own error says why.
    """
    params = inspect.signature(model.forward).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(inputs)
    named = {name: value for name, value in inputs.items() if name in params}
    missing = [
        name
        for name, p in params.items()
        if name not in named and p.default is inspect.Parameter.empty and p.kind is not p.VAR_POSITIONAL
    ]
    rest = {name: value for name, value in inputs.items() if name not in params}
    if len(missing) != 1 or not rest:
        return dict(inputs)
    return {**named, missing[0]: rest}
