"""Type checks of parsed manifest dataclasses against their own annotations.

JSON gives any field any type, and a dataclass built with ``cls(**data)`` accepts it: a file
name that is a list, a dim that is a dict, a mean that is a string. Every later use (a set of
names, a path, numpy arithmetic) would then fail with a raw TypeError far from the manifest.
``type_problems`` walks a dataclass tree once and names each field whose value does not fit
its annotation, e.g. ``components[1].file is int, expected str``.

Understood annotations: ``Any``, ``None``, ``str``/``int``/``float``/``bool`` (an int is a float,
a bool is not an int), unions, ``tuple[X, ...]`` and fixed tuples, ``Mapping[K, V]``, and nested
dataclasses.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["type_problems"]


def type_problems(obj: Any, where: str) -> list[str]:
    """Every field of dataclass ``obj`` (recursively) whose value does not fit its annotation."""
    if _fits(type(obj))(obj):
        return []  # the common case, answered without building a message per field
    hints = _hints(type(obj))
    problems: list[str] = []
    for f in dataclasses.fields(obj):
        problems += _problems(getattr(obj, f.name), hints[f.name], f"{where}.{f.name}")
    return problems


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    # resolving string annotations evaluates code: once per class, not once per manifest entry
    return typing.get_type_hints(cls)


@functools.cache
def _fits(hint: Any) -> Callable[[Any], bool]:
    """A predicate for "value fits ``hint``", built once per annotation: the fast path of the
    walk below, which a manifest with tens of thousands of entries takes for every one of them."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    plain = _plain_types(args if origin in (typing.Union, types.UnionType) else (hint,))
    if hint is Any:
        return lambda _v: True
    if plain is not None:
        accepted, bool_ok = plain
        return lambda v: isinstance(v, accepted) and (bool_ok or not isinstance(v, bool))
    if origin in (typing.Union, types.UnionType):
        options = [_fits(option) for option in args]
        return lambda v: any(fits(v) for fits in options)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return _all_items(_fits(args[0]))
    if origin is tuple:
        items = [_fits(a) for a in args]
        return lambda v: (
            isinstance(v, tuple) and len(v) == len(items) and all(f(x) for f, x in zip(items, v, strict=True))
        )
    if origin is Mapping:
        key, value = _fits(args[0]), _fits(args[1])
        return lambda v: isinstance(v, Mapping) and all(key(k) and value(x) for k, x in v.items())
    if dataclasses.is_dataclass(hint):
        return _all_fields(hint)
    return lambda v: isinstance(v, hint)


def _plain_types(options: tuple[Any, ...]) -> tuple[tuple[type, ...], bool] | None:
    """(classes to isinstance-check, whether a bool passes) for options that are all plain classes."""
    if not all(isinstance(o, type) and not dataclasses.is_dataclass(o) and o is not tuple for o in options):
        return None
    accepted = tuple(options) + ((int,) if float in options else ())
    return accepted, bool in options


def _all_items(item: Callable[[Any], bool]) -> Callable[[Any], bool]:
    def fits(value: Any) -> bool:
        if not isinstance(value, tuple):
            return False
        for v in value:  # noqa: SIM110 - a loop, not all(...): no generator per tuple on the hot path
            if not item(v):
                return False
        return True

    return fits


def _all_fields(cls: type) -> Callable[[Any], bool]:
    hints = _hints(cls)
    checks = [(f.name, _fits(hints[f.name])) for f in dataclasses.fields(cls)]

    def fits(value: Any) -> bool:
        if not isinstance(value, cls):
            return False
        for name, check in checks:  # noqa: SIM110 - as above
            if not check(getattr(value, name)):
                return False
        return True

    return fits


def _problems(value: Any, hint: Any, where: str) -> list[str]:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return []
    if origin in (typing.Union, types.UnionType):
        results = [_problems(value, option, where) for option in args]
        return [] if any(not r for r in results) else _mismatch(value, hint, where, results)
    if origin is tuple:
        if not isinstance(value, tuple):
            return _mismatch(value, hint, where)
        if len(args) == 2 and args[1] is Ellipsis:
            return [p for i, v in enumerate(value) for p in _problems(v, args[0], f"{where}[{i}]")]
        if len(value) != len(args):
            return [f"{where} has {len(value)} items, expected {len(args)}"]
        return [p for i, (v, a) in enumerate(zip(value, args, strict=True)) for p in _problems(v, a, f"{where}[{i}]")]
    if origin is Mapping:
        if not isinstance(value, Mapping):
            return _mismatch(value, hint, where)
        return [
            p for k, v in value.items() for p in _problems(k, args[0], where) + _problems(v, args[1], f"{where}[{k!r}]")
        ]
    if dataclasses.is_dataclass(hint):
        return type_problems(value, where) if isinstance(value, hint) else _mismatch(value, hint, where)
    if hint is type(None):
        return [] if value is None else _mismatch(value, hint, where)
    if hint is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, hint)
    return [] if ok else _mismatch(value, hint, where)


def _mismatch(value: Any, hint: Any, where: str, nested: list[list[str]] | None = None) -> list[str]:
    """One problem; for a union of dataclasses the value does fit, the deepest reason why not."""
    deeper = [r for r in nested or [] if r and not r[0].startswith(f"{where} is ")]
    if deeper:
        return deeper[0]
    name = getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
    return [f"{where} is {type(value).__name__}, expected {name}"]
