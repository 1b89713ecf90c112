"""Decide the split: which submodules are encoders, and check that each one runs on raw inputs.

An encoder can be exported on its own only if ``forward`` hands it raw model inputs: anything
computed before it would be lost from the bundle. That is checked on a real forward pass (see
``_capture``), so the error can name the module and the argument.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mmedge.bundle import AudioPreprocess, ImagePreprocess, TextPreprocess
from mmedge.errors import ExportError
from mmedge.export._capture import Call, Capture, capture
from mmedge.export._tree import tensors
from mmedge.export._types import EncoderSpec

__all__ = ["Split", "guess_modality", "input_modalities", "plan_split"]

_KNOWN_MODALITIES = ("text", "image", "audio")  # mmedge.bundle.MODALITIES but "other": an encoder is named after these
_NAME_HINTS = {
    "text": ("text", "token", "ids", "caption", "word", "sentence", "query"),
    "image": ("image", "img", "pixel", "vision", "photo", "picture", "frame"),
    "audio": ("audio", "wav", "speech", "sound", "waveform", "mel", "spec"),
}
_PREPROCESS_MODALITY = {TextPreprocess: "text", ImagePreprocess: "image", AudioPreprocess: "audio"}


@dataclass(frozen=True)
class Split:
    """The encoders chosen, the forward pass that showed how they are called, and what was decided."""

    encoders: tuple[EncoderSpec, ...]
    calls: Mapping[str, Call]  # encoder path -> its one call
    output: Any  # the model's output on the example inputs
    auto: bool
    notes: tuple[str, ...] = ()


def guess_modality(name: str, tensor: Any, preprocess: Any) -> str:
    """A raw input's modality from its preprocessing metadata, else its name, else its dtype and rank."""
    if type(preprocess) in _PREPROCESS_MODALITY:
        return _PREPROCESS_MODALITY[type(preprocess)]
    lowered = name.lower()
    for modality, hints in _NAME_HINTS.items():
        if any(h in lowered for h in hints):
            return modality
    import torch

    if tensor.is_floating_point():
        return {4: "image", 2: "audio", 3: "audio"}.get(tensor.dim(), "other")
    if tensor.dtype in (torch.int64, torch.int32) and tensor.dim() == 2:
        return "text"
    return "other"


def input_modalities(
    inputs: Mapping[str, Any], encoders: tuple[EncoderSpec, ...], preprocess: Mapping[str, Any]
) -> dict[str, str]:
    """Each raw input's modality: its encoder's, else what its preprocessing says, else "other"."""
    found = {name: _PREPROCESS_MODALITY.get(type(preprocess.get(name)), "other") for name in inputs}
    for enc in encoders:
        for name in enc.inputs:
            found[name] = enc.modality
    return found


def plan_split(
    model: Any,
    inputs: Mapping[str, Any],
    encoders: Mapping[str, str] | None,
    preprocess: Mapping[str, Any],
    modalities: Mapping[str, str],
) -> Split:
    """Resolve ``encoders`` (modality -> submodule path) or detect them when it is None.

    ``modalities`` are the user's statements about raw inputs; detection uses them first.
    """
    if encoders is None:
        return _auto_split(model, inputs, preprocess, modalities)
    if not encoders:
        raise ExportError(
            "encoders is empty; name at least one, e.g. {'text': 'text_encoder'}, or pass None to detect them"
        )
    for key, path in encoders.items():
        if not isinstance(key, str) or not key.isidentifier():
            raise ExportError(f"encoder key {key!r} must be a modality such as 'text', 'image' or 'audio'")
        _check_path(model, key, path)
    _check_disjoint(encoders)
    cap = capture(model, inputs, list(encoders.values()))
    specs, calls = [], {}
    for key, path in encoders.items():
        call = _one_call(model, key, path, cap)
        calls[path] = call
        modality = key if key in _KNOWN_MODALITIES else "other"
        specs.append(EncoderSpec(name=f"{key}_encoder", path=path, modality=modality, inputs=call.raw_inputs))
    return Split(encoders=tuple(specs), calls=calls, output=cap.output, auto=False)


def _check_path(model: Any, key: str, path: str) -> None:
    if not isinstance(path, str) or not path:
        raise ExportError(
            f"encoder {key!r}: the submodule path must be a dotted name such as 'text_encoder', found {path!r}"
        )
    try:
        model.get_submodule(path)
    except AttributeError as e:
        names = [n for n, _ in model.named_modules() if n]
        close = difflib.get_close_matches(path, names, n=3)
        children = ", ".join(n for n, _ in model.named_children())
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise ExportError(
            f"encoder {key!r}: {type(model).__name__} has no submodule {path!r}.{hint} "
            f"Its direct children are: {children}. Pass a dotted path as printed by model.named_modules()."
        ) from e


def _check_disjoint(encoders: Mapping[str, str]) -> None:
    paths = list(encoders.values())
    for a in paths:
        for b in paths:
            if a == b and paths.count(a) > 1:
                raise ExportError(
                    f"submodule {a!r} is named for more than one encoder; each encoder needs its own module"
                )
            if b.startswith(a + "."):
                raise ExportError(f"encoder {b!r} is inside encoder {a!r}; encoders must not contain each other")


def _one_call(model: Any, key: str, path: str, cap: Capture) -> Call:
    calls = cap.calls[path]
    cls = type(model).__name__
    if not calls:
        raise ExportError(
            f"encoder {key!r}: submodule {path!r} was never called during {cls}.forward on the example inputs. "
            f"Call it as self.{path}(...) (not .forward(...)) on the raw input, or choose the submodule that is."
        )
    if len(calls) > 1:
        raise ExportError(
            f"encoder {key!r}: submodule {path!r} is called {len(calls)} times in {cls}.forward; an encoder is "
            "exported for one call. Give each use its own module, or export the shared module as part of the head."
        )
    call = calls[0]
    if call.computed:
        where = ", ".join(f"{c.where} (shape {list(c.shape)})" for c in call.computed)
        raise ExportError(
            f"encoder {key!r}: submodule {path!r} receives a tensor computed inside {cls}.forward ({where}), not a "
            "raw model input, so exporting it alone would drop that computation. Restructure the model so that "
            f"forward calls self.{path}(<input>) directly on its arguments: move the preprocessing into the encoder "
            "(e.g. nn.Sequential(preprocess_module, encoder)) or into the data pipeline before the model."
        )
    if not call.raw_inputs:
        raise ExportError(
            f"encoder {key!r}: submodule {path!r} is called without any tensor input; it cannot be an encoder"
        )
    if not tensors(call.output):
        raise ExportError(f"encoder {key!r}: submodule {path!r} returns no tensor; it cannot feed the fusion head")
    return call


def _auto_split(
    model: Any, inputs: Mapping[str, Any], preprocess: Mapping[str, Any], given: Mapping[str, str]
) -> Split:
    children = [name for name, _ in model.named_children()]
    cap = capture(model, inputs, children)
    chosen: list[tuple[str, str, Call]] = []  # (raw input, path, call)
    for path in children:
        calls = cap.calls[path]
        if len(calls) == 1 and not calls[0].computed and len(calls[0].raw_inputs) == 1 and _has_tensor(calls[0]):
            chosen.append((calls[0].raw_inputs[0], path, calls[0]))
    if not chosen:
        raise ExportError(
            f"could not detect encoders: no direct child of {type(model).__name__} is called with exactly one raw "
            f"input (children: {', '.join(children) or 'none'}). Pass encoders={{'text': 'path.to.text_encoder', ...}}."
        )
    modalities = {raw: given.get(raw) or guess_modality(raw, inputs[raw], preprocess.get(raw)) for raw, _, _ in chosen}
    taken = [modalities[raw] for raw, _, _ in chosen]
    specs, calls, notes = [], {}, []
    for raw, path, call in chosen:
        modality = modalities[raw]
        # Two encoders of one modality (e.g. two cameras) are named after their inputs instead.
        key = modality if modality in _KNOWN_MODALITIES and taken.count(modality) == 1 else raw
        specs.append(EncoderSpec(name=f"{key}_encoder", path=path, modality=modality, inputs=(raw,)))
        calls[path] = call
        notes.append(f"auto-split: {key}_encoder = {type(model).__name__}.{path} on input {raw!r} ({modality})")
    return Split(encoders=tuple(specs), calls=calls, output=cap.output, auto=True, notes=tuple(notes))


def _has_tensor(call: Call) -> bool:
    try:
        return bool(tensors(call.output))
    except ExportError:
        return False
