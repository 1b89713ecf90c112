"""Symbolic dimensions: which axes are dynamic, a second input that moves them, and output axes.

Raw inputs get ``batch`` on axis 0; text inputs ``seq`` on axis 1 and audio inputs ``samples`` on
their last axis; image sizes stay fixed. Every check also runs a *second* input in which each
symbol has another size, because an exporter that silently bakes a size in is only caught by
feeding it a different one. Axes of intermediate tensors (encoder outputs) are read off the two
PyTorch runs: an axis whose size moved is dynamic, named after the symbol that moved with it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from mmedge.bundle import BATCH, is_batch_symbol, modality_batch
from mmedge.errors import ExportError
from mmedge.verify import other_size

__all__ = [
    "Axes",
    "input_axes",
    "modality_batches",
    "observed_axes",
    "pairs_rows",
    "resized",
    "second_inputs",
    "symbol_sizes",
    "symbolic_shape",
]

Axes = dict[str, dict[int, str]]  # tensor name -> axis -> symbol
_SEQUENCE_SYMBOL = {"text": "seq", "audio": "samples"}


def input_axes(
    inputs: Mapping[str, Any],
    modalities: Mapping[str, str],
    dynamic: bool,
    derived: Collection[str] = (),
    time_symbols: Mapping[str, str | None] | None = None,
) -> tuple[Axes, list[str]]:
    """Dynamic axes of the raw inputs, plus notes on any axis assumed for inputs of modality "other".

    ``derived``: inputs the runtime fills from a text (its attention mask, segment ids), whose length
    is the text's by construction: their axes are assumed without a note. ``time_symbols`` overrides
    the symbol of an input's sequence axis: None keeps it fixed (spectrogram features the recipe
    always pads to one length, which a Whisper encoder requires).
    """
    if not dynamic:
        return {name: {} for name in inputs}, []
    axes: Axes = {}
    for name, t in inputs.items():
        axes[name] = {0: BATCH} if t.dim() >= 1 else {}
        symbol = (time_symbols or {}).get(name, _SEQUENCE_SYMBOL.get(modalities[name]))
        if symbol and t.dim() >= 2:
            axes[name][1 if symbol == "seq" else t.dim() - 1] = symbol
    notes = _align_other_inputs(inputs, modalities, axes, derived)
    return axes, notes


def _align_other_inputs(
    inputs: Mapping[str, Any], modalities: Mapping[str, str], axes: Axes, derived: Collection[str]
) -> list[str]:
    """Give an "other" input (e.g. an attention mask) the seq/samples symbol of a length it matches."""
    lengths: dict[int, set[str]] = {}
    for name, per_axis in axes.items():
        for axis, symbol in per_axis.items():
            if not is_batch_symbol(symbol):
                lengths.setdefault(int(inputs[name].shape[axis]), set()).add(symbol)
    notes = []
    for name, t in inputs.items():
        if modalities[name] != "other":
            continue
        for axis in range(1, t.dim()):
            symbols = lengths.get(int(t.shape[axis]), set())
            if len(symbols) == 1:
                (symbol,) = symbols
                axes[name][axis] = symbol
                if name in derived:
                    continue
                notes.append(
                    f"input {name!r} axis {axis} has the example length of {symbol!r}, so it is exported as "
                    f"dynamic {symbol!r}; give it a preprocess entry or another example length if that is wrong"
                )
    return notes


def pairs_rows(axes: Axes) -> bool:
    """Whether a tensor with these axes has a batch symbol on two axes: it pairs every item of the call with
    every other (a similarity matrix), as CLIP's ``logits_per_image`` does."""
    return any(sum(map(is_batch_symbol, per_axis.values())) > 1 for per_axis in axes.values())


def modality_batches(axes: Axes, owners: Mapping[str, str]) -> Axes | None:
    """``axes`` with each encoder's inputs counting items by their modality's own batch symbol.

    ``owners``: input name → modality of the encoder that reads it. None where that cannot give each
    modality its own count: an input with a batch axis that no encoder reads, or fewer than two modalities.
    """
    batched = [name for name, per_axis in axes.items() if BATCH in per_axis.values()]
    if any(name not in owners for name in batched) or len({owners[n] for n in batched}) < 2:
        return None
    return {
        name: {axis: modality_batch(owners[name]) if symbol == BATCH else symbol for axis, symbol in per_axis.items()}
        for name, per_axis in axes.items()
    }


def symbol_sizes(tensors: Mapping[str, Any], axes: Axes) -> dict[str, int]:
    """The size of each symbol in these tensors; raises if two tensors disagree on one."""
    sizes: dict[str, int] = {}
    for name, per_axis in axes.items():
        for axis, symbol in per_axis.items():
            size = int(tensors[name].shape[axis])
            if sizes.setdefault(symbol, size) != size:
                raise ExportError(
                    f"the example inputs disagree on dimension {symbol!r}: input {name!r} axis {axis} is {size}, "
                    f"another input has {sizes[symbol]}. Give all inputs the same {symbol!r} size."
                )
    return sizes


def second_inputs(inputs: Mapping[str, Any], axes: Axes, modalities: Mapping[str, str]) -> dict[str, Any]:
    """Inputs like the examples with every symbol at :func:`~mmedge.verify.other_size` (see :func:`resized`)
    and float image/audio values perturbed, so sizes, rows and values differ from the example's."""
    import torch

    sizes = symbol_sizes(inputs, axes)
    new = resized(inputs, axes, {symbol: other_size(symbol, size) for symbol, size in sizes.items()})
    gen = torch.Generator().manual_seed(1)
    out = {}
    for name, t in new.items():
        x = t
        if x.is_floating_point() and modalities[name] in ("image", "audio"):
            x = x + 0.05 * x.std().nan_to_num(1.0) * torch.randn(x.shape, generator=gen, dtype=x.dtype)
        elif not axes[name]:
            x = x.roll(1, dims=0) if x.dim() else x  # same shape: other values
        out[name] = x.contiguous()
    return out


def resized(inputs: Mapping[str, Any], axes: Axes, sizes: Mapping[str, int]) -> dict[str, Any]:
    """``inputs`` with the axes of each symbol in ``sizes`` at that size. Rows and steps are taken
    cyclically (so ids stay in the vocabulary and masks stay masks), rows starting one later."""
    import torch

    out = {}
    for name, t in inputs.items():
        x = t
        for axis, symbol in axes[name].items():
            if symbol in sizes:
                offset = 1 if is_batch_symbol(symbol) else 0
                x = x.index_select(axis, (torch.arange(sizes[symbol]) + offset) % t.shape[axis])
        out[name] = x
    return out


def observed_axes(
    name: str, shapes: tuple[tuple[int, ...], tuple[int, ...]], sizes: tuple[Mapping[str, int], Mapping[str, int]]
) -> dict[int, str]:
    """Axes of a tensor whose size differs between the two runs, named after the symbol that moved alike."""
    first, second = shapes
    if len(first) != len(second):
        raise ExportError(
            f"{name!r} has rank {len(first)} on the example input but rank {len(second)} on an input of another "
            "shape; an exported graph needs a fixed rank. Make the module return the same rank for any size."
        )
    axes = {}
    for axis, (a, b) in enumerate(zip(first, second, strict=True)):
        if a == b:
            continue
        moved = [s for s in sizes[0] if (sizes[0][s], sizes[1].get(s)) == (a, b)]
        axes[axis] = moved[0] if moved else f"{name}_dim{axis}"
    return axes


def symbolic_shape(shape: tuple[int, ...], axes: Mapping[int, str]) -> tuple[int | str, ...]:
    return tuple(axes.get(i, int(d)) for i, d in enumerate(shape))
