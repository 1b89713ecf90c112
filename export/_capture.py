"""Watch a real forward pass: what each submodule was called with, and which tensors code touched.

The split is found on the model as it runs, not by reading its source: forward hooks record each
candidate encoder's arguments (classified as raw model inputs, tensors computed inside
``forward``, or constants) and its output; a ``TorchFunctionMode`` records which tensors the rest
of ``forward`` actually uses, so the fusion head gets exactly the inputs it needs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from mmedge.errors import ExportError, translated

__all__ = ["Call", "Capture", "Computed", "Raw", "capture", "used_tensors"]


@dataclass(frozen=True)
class Raw:
    """An argument that is the raw model input of this name (the very tensor passed to ``forward``)."""

    name: str


@dataclass(frozen=True)
class Computed:
    """A tensor argument computed inside ``forward`` (or nested in a container), not a raw input."""

    where: str  # "argument 0" or "keyword 'mask'"
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Call:
    """One call of a watched submodule."""

    args: tuple[Any, ...]  # Raw, Computed or a constant
    kwargs: Mapping[str, Any]
    output: Any  # as returned: tensors in tuples/dicts

    @property
    def raw_inputs(self) -> tuple[str, ...]:
        return tuple(a.name for a in (*self.args, *self.kwargs.values()) if isinstance(a, Raw))

    @property
    def computed(self) -> tuple[Computed, ...]:
        return tuple(a for a in (*self.args, *self.kwargs.values()) if isinstance(a, Computed))


@dataclass(frozen=True)
class Capture:
    """One forward pass: the model's output and every call of each watched submodule."""

    output: Any
    calls: Mapping[str, tuple[Call, ...]]  # submodule path -> calls in order


def _classify(value: Any, where: str, raw_ids: Mapping[int, str]) -> Any:
    import torch
    from torch.utils._pytree import tree_leaves

    if isinstance(value, torch.Tensor):
        name = raw_ids.get(id(value))
        return Raw(name) if name is not None else Computed(where, tuple(value.shape))
    nested = [t for t in tree_leaves(value) if isinstance(t, torch.Tensor)]
    if nested:
        return Computed(f"{where} (tensors inside a {type(value).__name__})", tuple(nested[0].shape))
    return value


def capture(model: Any, inputs: Mapping[str, Any], paths: Sequence[str]) -> Capture:
    """Run ``model(**inputs)`` once under ``no_grad`` with hooks on the submodules at ``paths``."""
    import torch

    raw_ids = {id(t): name for name, t in inputs.items()}
    calls: dict[str, list[Call]] = {p: [] for p in paths}

    def hook_for(path: str) -> Callable[..., None]:
        def hook(_module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
            calls[path].append(
                Call(
                    args=tuple(_classify(a, f"argument {i}", raw_ids) for i, a in enumerate(args)),
                    kwargs={k: _classify(v, f"keyword {k!r}", raw_ids) for k, v in kwargs.items()},
                    output=output,
                )
            )

        return hook

    handles = [model.get_submodule(p).register_forward_hook(hook_for(p), with_kwargs=True) for p in paths]
    try:
        with torch.no_grad(), translated(ExportError, f"{type(model).__name__}.forward failed on the example inputs"):
            output = model(**inputs)
    finally:
        for h in handles:
            h.remove()
    return Capture(output=output, calls={p: tuple(c) for p, c in calls.items()})


# Tensor attributes that say nothing about a tensor's values or shape: reading them is not a use.
_METADATA = frozenset({"device", "dtype", "layout", "requires_grad", "is_cuda", "is_sparse", "is_quantized"})


def _func_name(func: Any) -> str:
    owner = getattr(func, "__self__", None)  # property getters arrive as <descriptor>.__get__
    return getattr(owner, "__name__", "") or getattr(func, "__name__", "")


@contextmanager
def _recording(watched: Mapping[str, Any], used: set[str]) -> Iterator[None]:
    import torch
    from torch.overrides import TorchFunctionMode
    from torch.utils._pytree import tree_leaves

    ids = {id(t): name for name, t in watched.items()}

    class Recorder(TorchFunctionMode):
        def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            kwargs = kwargs or {}
            if _func_name(func) not in _METADATA:
                used.update(
                    ids[id(t)] for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor) and id(t) in ids
                )
            return func(*args, **kwargs)

    with Recorder():
        yield


def used_tensors(fn: Callable[..., Any], watched: Mapping[str, Any]) -> set[str]:
    """Names of the ``watched`` tensors that any torch operation touches while ``fn(*watched)`` runs."""
    import torch

    used: set[str] = set()
    with torch.no_grad(), _recording(watched, used):
        fn(*watched.values())
    return used
