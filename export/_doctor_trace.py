"""Record, during one real forward pass, the torch calls known to break export or mobile EPs.

A ``TorchFunctionMode`` sees every torch function and Tensor method Python code calls (before
dispatch decomposes them), and forward hooks on every submodule say which module made the call.
Recorded: STFT/FFT calls and complex results, packed sequences, Python reads of tensor values
(``.item()``, ``bool(t)``, ``.tolist()``: data-dependent control flow), in-place writes into a
raw model input, and float64/bfloat16 results. Nothing is recorded twice: each (module, kind,
op, detail) is counted.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Event", "Recording", "recording"]

# Calls that turn a tensor's value into a Python value: code after them branches or sizes on data.
_SCALAR_READS = frozenset({"item", "tolist", "__bool__", "__int__", "__float__", "__index__", "equal", "is_nonzero"})
_SPECTRAL = frozenset({"stft", "istft"})
_PACKING = frozenset({"pack_padded_sequence", "_pack_padded_sequence", "pack_sequence"})
_IN_PLACE_DUNDERS = frozenset(
    {"__setitem__", "__iadd__", "__isub__", "__imul__", "__itruediv__", "__ifloordiv__", "__ipow__", "__imatmul__"}
)
_NOT_WRITES = frozenset({"requires_grad_", "share_memory_", "retain_grad"})  # in-place on metadata only
_ODD_DTYPES = ("float64", "bfloat16")


@dataclass(frozen=True)
class Event:
    """One kind of call seen at one module."""

    path: str  # the innermost module running ("" = the model's own forward)
    kind: str  # "stft", "complex", "packed-sequence", "scalar-read", "input-mutation", "dtype"
    op: str  # the torch function or Tensor method, e.g. "stft", "Tensor.item"
    detail: str = ""  # e.g. the dtype, or the mutated input's name


@dataclass
class Recording:
    """What one forward pass did; filled in while :func:`recording` is active."""

    events: Counter[Event] = field(default_factory=Counter)
    module_types: dict[str, type] = field(default_factory=dict)  # path -> class of that submodule
    forwards: int = 0  # how many times the model's own forward started


def _name(func: Any) -> str:
    owner = getattr(func, "__self__", None)  # property getters arrive as <descriptor>.__get__
    return getattr(owner, "__name__", "") or getattr(func, "__name__", "") or type(func).__name__


def _is_write(name: str, kwargs: Mapping[str, Any]) -> bool:
    if name in _IN_PLACE_DUNDERS or "out" in kwargs:
        return True
    return name.endswith("_") and not name.startswith("_") and name not in _NOT_WRITES


def _storage(t: Any) -> int:
    try:
        return t.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):  # tensors without storage (meta, sparse)
        return 0


@contextmanager
def _module_stack(model: Any, stack: list[str]) -> Iterator[None]:
    """Keep ``stack`` at the paths of the modules running, innermost last."""

    def push(path: str) -> Any:
        return lambda *_: stack.append(path)

    def pop(*_: Any) -> None:
        if len(stack) > 1:
            stack.pop()

    handles = []
    for path, module in model.named_modules():
        if path:
            handles.append(module.register_forward_pre_hook(push(path)))
            handles.append(module.register_forward_hook(pop, always_call=True))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def recording(model: Any, inputs: Mapping[str, Any]) -> Iterator[Recording]:
    """Record what ``model``'s forward does while the block runs it on ``inputs`` (the raw tensors)."""
    import torch
    from torch.overrides import TorchFunctionMode
    from torch.utils._pytree import tree_leaves

    rec = Recording(module_types={path: type(m) for path, m in model.named_modules() if path})
    stack = [""]
    raw = {_storage(t): name for name, t in inputs.items() if isinstance(t, torch.Tensor) and _storage(t)}

    def note(kind: str, op: str, detail: str = "") -> None:
        rec.events[Event(stack[-1], kind, op, detail)] += 1

    class Recorder(TorchFunctionMode):
        def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            kwargs = kwargs or {}
            name = _name(func)
            if name in _SCALAR_READS:
                note("scalar-read", f"Tensor.{name}" if not hasattr(torch, name) else name)
            if _is_write(name, kwargs):
                target = kwargs.get("out", args[0] if args else None)
                if isinstance(target, torch.Tensor) and _storage(target) in raw:
                    note("input-mutation", name, raw[_storage(target)])
            if name in _SPECTRAL or name.startswith("fft_"):
                note("stft", name)
            elif name in _PACKING:
                note("packed-sequence", name)
            out = func(*args, **kwargs)
            if name not in _SPECTRAL and not name.startswith("fft_"):
                for t in tree_leaves(out):
                    if isinstance(t, torch.Tensor) and t.is_complex():
                        note("complex", name, str(t.dtype).removeprefix("torch."))
                    elif isinstance(t, torch.Tensor) and str(t.dtype).removeprefix("torch.") in _ODD_DTYPES:
                        note("dtype", name, str(t.dtype).removeprefix("torch."))
            return out

    def started(*_: Any) -> None:
        rec.forwards += 1

    root = model.register_forward_pre_hook(started)
    try:
        with _module_stack(model, stack), Recorder():
            yield rec
    finally:
        root.remove()
