"""Nested module outputs (tensors in tuples, lists, dicts) ↔ flat, named tensor lists.

ONNX graphs take and return flat lists of tensors, while PyTorch modules return things like an
LSTM's ``(out, (h, c))`` or a Hugging Face ``ModelOutput``. :func:`flatten` names every tensor
and records the nesting as JSON (the manifest's ``output_structure``); :func:`rebuild` puts a
flat list back into the original container types so the rest of ``forward`` sees what it saw.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from mmedge.errors import ExportError

__all__ = ["flatten", "rebuild", "tensors"]


def _join(prefix: str, key: object) -> str:
    return f"{prefix}_{key}" if prefix else str(key)


def flatten(obj: Any, prefix: str, what: str) -> tuple[list[tuple[str, Any]], Any]:
    """``(name, tensor)`` pairs of every tensor in ``obj`` and its structure as JSON.

    A bare tensor is named ``prefix``; tuple items get ``_<index>`` and dict items ``_<key>``
    appended. The structure mirrors ``obj`` with each tensor replaced by its name and ``None``
    kept. ``what`` names the producer in error messages.
    """
    import torch

    if isinstance(obj, torch.Tensor):
        if not prefix:
            raise ExportError(f"{what} returns a bare tensor where a name was expected")
        return [(prefix, obj)], prefix
    if obj is None:
        return [], None
    if isinstance(obj, Mapping):
        pairs: list[tuple[str, Any]] = []
        structure: dict[str, Any] = {}
        for key, value in obj.items():
            if not isinstance(key, str):
                raise ExportError(f"{what} returns a dict with key {key!r}; only string keys can name ONNX outputs")
            sub, structure[key] = flatten(value, _join(prefix, key), what)
            pairs += sub
        return pairs, structure
    if isinstance(obj, tuple | list):
        pairs, items = [], []
        for i, value in enumerate(obj):
            sub, s = flatten(value, _join(prefix or "output", i), what)
            pairs += sub
            items.append(s)
        return pairs, items
    raise ExportError(
        f"{what} returns a {type(obj).__name__}; exportable outputs are tensors and tuples, lists or dicts of "
        "tensors. Return tensors (e.g. convert Python numbers with torch.tensor) from the module."
    )


def tensors(obj: Any) -> list[Any]:
    """The tensors of a nested output, in :func:`flatten` order."""
    return [t for _, t in flatten(obj, "x", "module")[0]]


def rebuild(template: Any, values: Sequence[Any]) -> Any:
    """``template`` with its tensors replaced, in order, by ``values`` (same container types)."""
    it = iter(values)
    out = _rebuild(template, it)
    if next(it, None) is not None:
        raise ExportError("internal: more tensors than the output structure holds")
    return out


def _rebuild(template: Any, it: Iterator[Any]) -> Any:
    import torch

    if isinstance(template, torch.Tensor):
        return next(it)
    if template is None:
        return None
    if isinstance(template, Mapping):
        items = {k: _rebuild(v, it) for k, v in template.items()}
        return items if type(template) is dict else type(template)(**items)
    items_list = [_rebuild(v, it) for v in template]
    if isinstance(template, list):
        return items_list
    if hasattr(template, "_fields"):  # a namedtuple
        return type(template)(*items_list)
    if type(template) is not tuple:  # a struct sequence, e.g. torch.return_types.max
        return type(template)(items_list)
    return tuple(items_list)
