"""Data flow of one real forward pass: which raw inputs each tensor derives from, and through which ops.

A ``TorchFunctionMode`` sees every torch function and Tensor method that Python code calls, inside
submodules too. Each tensor gets a serial number the first time it is seen (a weak reference keeps
a reused ``id`` from being mistaken for an old tensor), and each call is logged as an :class:`Op`
from input serials to output serials. From that log:

- :meth:`Flow.sources`: the raw model inputs a value derives from (how the split tells which
  modality feeds a submodule);
- :meth:`Flow.glue`: the ops ``forward`` ran between the raw inputs and a value (what is folded
  into an encoder);
- :meth:`Flow.live`: the raw inputs that reach the returned tensors through data flow (what the
  fusion head needs), ignoring computation that only fed stubbed-out encoders.
"""

from __future__ import annotations

import weakref
from collections.abc import Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Flow", "Op", "flowing", "op_name"]

# Tensor attributes that say nothing about a tensor's values or shape: reading them is not a use.
METADATA = frozenset({"device", "dtype", "layout", "requires_grad", "is_cuda", "is_sparse", "is_quantized"})
# Reads of a tensor's shape: a use, but one that glue folded into an encoder makes on its own input.
_SHAPE_READS = frozenset({"size", "shape", "dim", "ndim", "numel", "__len__", "stride"})
# Operator spellings → the op's name in reports ("x / 255" is a div, like "x.div(255)").
_ALIASES = {"truediv": "div", "floordiv": "floor_divide", "getitem": "slice", "matmul": "matmul"}


def op_name(func: Any) -> str:
    """The name of a torch function or Tensor method as called (``__truediv__`` → ``div``)."""
    owner = getattr(func, "__self__", None)  # property getters arrive as <descriptor>.__get__
    name = getattr(owner, "__name__", "") or getattr(func, "__name__", "") or type(func).__name__
    if name.startswith("__") and name.endswith("__"):
        name = name.strip("_")
        if name.startswith(("r", "i")) and name[1:] in {"add", "sub", "mul", "truediv", "floordiv", "pow", "matmul"}:
            name = name[1:]
    return _ALIASES.get(name, name)


@dataclass(frozen=True)
class Op:
    """One torch call: tensors in, tensors out (serials), and whether it returned a Python value."""

    name: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    value_read: bool = False  # returned no tensor (item, bool, tolist): forward used a tensor's value
    shape_read: bool = False


@dataclass
class Flow:
    """The op log of one forward pass; filled in while :func:`flowing` is active."""

    ops: list[Op] = field(default_factory=list)
    _table: dict[int, tuple[Any, int]] = field(default_factory=dict)  # id -> (weakref, serial)
    _sources: dict[int, frozenset[str]] = field(default_factory=dict)  # serial -> raw inputs
    _producers: dict[int, list[int]] = field(default_factory=dict)  # serial -> indices of ops writing it
    _raw: dict[int, str] = field(default_factory=dict)  # serial -> raw input name
    _count: int = 0

    def serial(self, t: Any) -> int:
        entry = self._table.get(id(t))
        if entry is not None and entry[0]() is t:
            return entry[1]
        self._count += 1
        number = self._count
        try:
            ref = weakref.ref(t)
        except TypeError:  # not weakly referenceable: keep it alive so its id stays its own
            ref = _Strong(t)
        self._table[id(t)] = (ref, number)
        return number

    def add_raw(self, name: str, t: Any) -> None:
        s = self.serial(t)
        self._sources[s] = frozenset({name})
        self._raw[s] = name

    def serials(self, obj: Any) -> tuple[int, ...]:
        return tuple(self.serial(t) for t in _tensors(obj))

    def sources(self, obj: Any) -> frozenset[str]:
        """The raw inputs that the tensors in ``obj`` derive from."""
        found: frozenset[str] = frozenset()
        for s in self.serials(obj):
            found |= self._sources.get(s, frozenset())
        return found

    def record(self, name: str, args: Any, result: Any) -> None:
        ins = self.serials(args)
        outs = self.serials(result)
        taint = frozenset().union(*(self._sources.get(s, frozenset()) for s in ins))
        index = len(self.ops)
        for s in outs:
            if taint:
                self._sources[s] = self._sources.get(s, frozenset()) | taint
            self._producers.setdefault(s, []).append(index)
        shape = name in _SHAPE_READS
        self.ops.append(Op(name, ins, outs, value_read=not outs and not shape, shape_read=shape))

    def _producer(self, serial: int, before: int) -> int | None:
        earlier = [i for i in self._producers.get(serial, ()) if i < before]
        return earlier[-1] if earlier else None

    def _behind(self, serials: Iterable[int], before: int) -> set[int]:
        """Indices of the ops before op ``before`` that computed ``serials`` from raw inputs (ops on
        data no raw input reaches, building a constant or reading a weight, are not followed)."""
        seen: set[int] = set()
        stack = [(s, before) for s in serials]
        while stack:
            s, limit = stack.pop()
            index = self._producer(s, limit)
            if index is None or index in seen or not self._sources.get(s):
                continue
            seen.add(index)
            stack += [(i, index) for i in self.ops[index].inputs]
        return seen

    def glue(self, serials: Iterable[int], before: int) -> tuple[str, ...]:
        """Names of the ops, in run order, that computed ``serials`` from raw inputs before op ``before``.

        Only ops on data derived from raw inputs count: building a constant is not glue.
        """
        return tuple(dict.fromkeys(self.ops[i].name for i in sorted(self._behind(serials, before))))

    def derives(self, serials: Iterable[int], targets: Collection[int], before: int) -> bool:
        """Whether ``serials`` were computed (by ops before op ``before``) from any tensor in ``targets``
        (tensors derived from raw inputs: the outputs of an earlier submodule call)."""
        serials = tuple(serials)
        reached = set(serials).union(*(self.ops[i].inputs for i in self._behind(serials, before)))
        return not reached.isdisjoint(targets)

    def live(self, outputs: Any) -> set[str]:
        """Raw inputs whose data reaches ``outputs`` or whose value Python read (``item``, ``bool``)."""
        wanted = set(self.serials(outputs))
        used: set[str] = set()
        for op in reversed(self.ops):
            if op.value_read or wanted.intersection(op.outputs):
                wanted.update(op.inputs)
        for s in wanted:
            if s in self._raw:
                used.add(self._raw[s])
        return used


class _Strong:
    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def __call__(self) -> Any:
        return self.obj


def _tensors(obj: Any) -> list[Any]:
    import torch
    from torch.utils._pytree import tree_leaves

    if isinstance(obj, torch.Tensor):
        return [obj]
    return [t for t in tree_leaves(obj) if isinstance(t, torch.Tensor)]


@contextmanager
def flowing(raw: Mapping[str, Any]) -> Iterator[Flow]:
    """Log every torch call made inside the block; ``raw`` are the model inputs, by name."""
    from torch.overrides import TorchFunctionMode

    flow = Flow()
    for name, t in raw.items():
        flow.add_raw(name, t)

    class Recorder(TorchFunctionMode):
        def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            kwargs = kwargs or {}
            result = func(*args, **kwargs)
            name = op_name(func)
            if name not in METADATA:
                flow.record(name, (args, kwargs), result)
            return result

    with Recorder():
        yield flow
