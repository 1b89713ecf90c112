"""Watch a real forward pass: what each submodule was called with, and which tensors code touched.

The split is found on the model as it runs, not by reading its source: forward hooks record each
candidate encoder's arguments (classified as raw model inputs, tensors computed inside
``forward``, or constants) and its output; a ``TorchFunctionMode`` records which tensors the rest
of ``forward`` actually uses, so the fusion head gets exactly the inputs it needs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from mmedge.errors import ExportError, translated
from mmedge.export._flow import METADATA, Flow, flowing, op_name

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
    container: str = ""  # "dict", "tuple", ... when the tensors came packed in one


@dataclass(frozen=True)
class Call:
    """One call of a watched submodule."""

    args: tuple[Any, ...]  # Raw, Computed or a constant
    kwargs: Mapping[str, Any]
    output: Any  # as returned: tensors in tuples/dicts
    sources: frozenset[str] = frozenset()  # raw inputs its tensor arguments derive from
    serials: tuple[int, ...] = ()  # its tensor arguments in the capture's data flow (``_flow``)
    start: int = 0  # how many ops had run when it was called

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
    flow: Flow | None = None

    def glue(self, call: Call) -> tuple[str, ...]:
        """The ops ``forward`` ran on raw inputs to make ``call``'s arguments (empty for raw arguments)."""
        if self.flow is None or not call.computed:
            return ()
        ops = self.flow.glue(call.serials, call.start)
        packed = {c.container for c in call.computed if c.container}
        return (*ops, *sorted(f"pack {p}" for p in packed))


def _classify(value: Any, where: str, raw_ids: Mapping[int, str]) -> Any:
    import torch
    from torch.utils._pytree import tree_leaves

    if isinstance(value, torch.Tensor):
        name = raw_ids.get(id(value))
        return Raw(name) if name is not None else Computed(where, tuple(value.shape))
    nested = [t for t in tree_leaves(value) if isinstance(t, torch.Tensor)]
    if nested:
        packed = type(value).__name__
        return Computed(f"{where} (tensors inside a {packed})", tuple(nested[0].shape), packed)
    return value


def capture(model: Any, inputs: Mapping[str, Any], paths: Sequence[str]) -> Capture:
    """Run ``model(**inputs)`` once under ``no_grad`` with hooks on the submodules at ``paths``.

    The pass is also logged by :func:`~mmedge.export._flow.flowing`, so each call knows which raw
    inputs its arguments derive from and the capture can say which ops made them.
    """
    import torch

    raw_ids = {id(t): name for name, t in inputs.items()}
    calls: dict[str, list[Call]] = {p: [] for p in paths}
    starts: dict[str, list[int]] = {p: [] for p in paths}

    def hooks_for(path: str, flow: Flow) -> tuple[Callable[..., None], Callable[..., None]]:
        def before(_module: Any, _args: tuple[Any, ...], _kwargs: dict[str, Any]) -> None:
            starts[path].append(len(flow.ops))

        def after(_module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
            calls[path].append(
                Call(
                    args=tuple(_classify(a, f"argument {i}", raw_ids) for i, a in enumerate(args)),
                    kwargs={k: _classify(v, f"keyword {k!r}", raw_ids) for k, v in kwargs.items()},
                    output=output,
                    sources=flow.sources((args, kwargs)),
                    serials=flow.serials((args, kwargs)),
                    start=starts[path].pop(),
                )
            )

        return before, after

    handles = []
    try:
        with (
            torch.no_grad(),
            translated(ExportError, f"{type(model).__name__}.forward failed on the example inputs"),
            flowing(inputs) as flow,
        ):
            for p in paths:
                before, after = hooks_for(p, flow)
                module = model.get_submodule(p)
                handles.append(module.register_forward_pre_hook(before, with_kwargs=True))
                handles.append(module.register_forward_hook(after, with_kwargs=True))
            output = model(**inputs)
    finally:
        for h in handles:
            h.remove()
    return Capture(output=output, calls={p: tuple(c) for p, c in calls.items()}, flow=flow)


@contextmanager
def _recording(watched: Mapping[str, Any], used: set[str]) -> Iterator[None]:
    import torch
    from torch.overrides import TorchFunctionMode
    from torch.utils._pytree import tree_leaves

    ids = {id(t): name for name, t in watched.items()}

    class Recorder(TorchFunctionMode):
        def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            kwargs = kwargs or {}
            if op_name(func) not in METADATA:
                used.update(
                    ids[id(t)] for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor) and id(t) in ids
                )
            return func(*args, **kwargs)

    with Recorder():
        yield


def used_tensors(fn: Callable[..., Any], watched: Mapping[str, Any], glue_fed: Iterable[str] = ()) -> set[str]:
    """Names of the ``watched`` tensors that any torch operation touches while ``fn(*watched)`` runs.

    A ``glue_fed`` tensor (a raw input whose glue was folded into an encoder) counts only if its data
    reaches ``fn``'s result or Python reads its value: the glue itself, which ``forward`` still runs
    on it before the stubbed encoder, is not a use.
    """
    import torch

    used: set[str] = set()
    with torch.no_grad(), _recording(watched, used), flowing(watched) as flow:
        result = fn(*watched.values())
    live = flow.live(result)
    return {n for n in used if n in live or n not in set(glue_fed)}
