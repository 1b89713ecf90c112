"""Decide the split: which submodules are encoders, and what each one's component takes in.

Everything is read off one real forward pass (``_capture``, with the data flow of ``_flow``):
which raw inputs each submodule's arguments derive from and through which ops. Computation
``forward`` does on one modality's raw inputs before an encoder (``audio.unsqueeze(1)``,
``img.float() / 255``, a normalisation, packing a dict) is *folded*: the encoder's component takes
those raw inputs and runs that code too (``EncoderSpec.folded`` names the ops). Computation mixing
modalities before an encoder is refused, naming the module and the inputs. With ``encoders=None``
the encoders are found by the same data flow, whatever the submodules are called.
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
    "audio": ("audio", "wav", "speech", "sound", "waveform", "mel", "spec", "pcm", "voice"),
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
    return _modality_reason(name, tensor, preprocess, {})[0]


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
    calls = {path: _one_call(model, key, path, cap) for key, path in encoders.items()}
    # A raw input's modality as stated (argument, preprocessing, name), else those of the encoders it feeds.
    kinds = {}
    for r in inputs:
        stated = _stated(r, preprocess.get(r), modalities)
        fed = {k for k, p in encoders.items() if r in calls[p].sources}
        kinds[r] = {stated} if stated in _KNOWN_MODALITIES else fed & set(_KNOWN_MODALITIES)
    specs, notes = [], []
    for key, path in encoders.items():
        modality = key if key in _KNOWN_MODALITIES else "other"
        spec, note = _spec(
            model, f"{key}_encoder", path, modality=modality, call=calls[path], cap=cap, inputs=inputs, kinds=kinds
        )
        specs.append(spec)
        notes += note
    return Split(encoders=tuple(specs), calls=calls, output=cap.output, auto=False, notes=tuple(notes))


def _stated(name: str, preprocess: Any, given: Mapping[str, str]) -> str | None:
    """A raw input's modality from what was said about it (argument, preprocessing, name); None if nothing."""
    if name in given:
        return given[name]
    if type(preprocess) in _PREPROCESS_MODALITY:
        return _PREPROCESS_MODALITY[type(preprocess)]
    lowered = name.lower()
    return next((m for m, hints in _NAME_HINTS.items() if any(h in lowered for h in hints)), None)


def _spec(
    model: Any,
    name: str,
    path: str,
    *,
    modality: str,
    call: Call,
    cap: Capture,
    inputs: Mapping[str, Any],
    kinds: Mapping[str, set[str]],
) -> tuple[EncoderSpec, list[str]]:
    """The encoder's spec; computation ``forward`` does on its inputs before the call is folded into it."""
    if not call.computed:
        return EncoderSpec(name=name, path=path, modality=modality, inputs=call.raw_inputs), []
    cls = type(model).__name__
    where = ", ".join(f"{c.where} (shape {list(c.shape)})" for c in call.computed)
    raw = tuple(n for n in inputs if n in call.sources)
    if not raw:
        raise ExportError(
            f"{name}: submodule {path!r} receives {where} computed inside {cls}.forward from no raw model input "
            "(only from parameters or constants), so it has no input to export. Choose the submodule that encodes "
            "a model input."
        )
    if len(set().union(*(kinds[n] for n in raw))) > 1:
        mixed = ", ".join(f"{n}: {'/'.join(sorted(kinds[n]))}" for n in raw if kinds[n])
        raise ExportError(
            f"{name}: submodule {path!r} receives a tensor computed inside {cls}.forward ({where}) from inputs of "
            f"more than one modality ({mixed}); an encoder's component takes one modality's raw inputs, so that "
            f"computation cannot be folded into it. Restructure the model so that forward calls self.{path}(<input>) "
            "on one modality's inputs and mixes modalities after the encoders (in the fusion head), or move the "
            "preprocessing into the data pipeline before the model."
        )
    folded = cap.glue(call) or ("forward",)  # computed by something the data-flow log did not see
    shown = ", ".join(folded)
    note = (
        f"{name}: folded the computation {cls}.forward does on {', '.join(map(repr, raw))} before "
        f"self.{path}(...) into the component ({shown}); its inputs are those raw inputs"
    )
    spec = EncoderSpec(name=name, path=path, modality=modality, inputs=raw, folded=folded)
    return spec, [note]


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
    if not call.raw_inputs and not call.computed:
        raise ExportError(
            f"encoder {key!r}: submodule {path!r} is called without any tensor input; it cannot be an encoder"
        )
    if not tensors(call.output):
        raise ExportError(f"encoder {key!r}: submodule {path!r} returns no tensor; it cannot feed the fusion head")
    return call


def _auto_split(
    model: Any, inputs: Mapping[str, Any], preprocess: Mapping[str, Any], given: Mapping[str, str]
) -> Split:
    """Per group of raw inputs of one modality, the largest submodule fed only by them, decided by data flow.

    Every submodule is watched on one forward pass. A candidate is called once, returns tensors
    that are not the model's whole output (some may be model outputs, as a ``CLIPOutput`` returns its
    vision model's: the manifest then wires them from the encoder), and its arguments derive from raw
    inputs of exactly one modality; one that combines the outputs of two other candidates is a fusion,
    not an encoder.
    Candidates are taken largest first (parameters, then buffers, then the outermost, then one
    whose name says the modality) while they share no raw input with one already taken. A taken
    candidate that only looks its input up (an ``nn.Embedding`` table, which holds more parameters
    than the small ``nn.TransformerEncoder`` that reads it) gives way to the candidate of its modality
    that reads its output: the table is folded into that component instead of leaving the transformer
    to the head. Stages after a real encoder (a projection in the head) stay in the head.
    """
    cls = type(model).__name__
    paths = [name for name, _ in model.named_modules() if name]
    cap = capture(model, inputs, paths)
    why = {r: _modality_reason(r, inputs[r], preprocess.get(r), given) for r in inputs}
    modality = _grouped_modalities({r: m for r, (m, _) in why.items()}, preprocess)
    sizes = {name: sum(p.numel() for p in m.parameters()) for name, m in model.named_modules() if name}
    # a parameter-free front end (an STFT, a mel filterbank in buffers) can be an encoder too, ranked after
    stored = {name: sum(b.numel() for b in m.buffers()) for name, m in model.named_modules() if name}
    outputs = {id(t) for t in _safe_tensors(cap.output)}
    fed = {
        p: c[0]
        for p, c in cap.calls.items()
        if len(c) == 1
        and c[0].sources
        and len({modality[r] for r in c[0].sources}) == 1
        and (found := _safe_tensors(c[0].output))
        and not outputs <= {id(t) for t in found}  # it computes the model's whole output: no head is left
    }
    fed = {p: c for p, c in fed.items() if not _fuses(p, c, fed)}
    ranked = sorted(fed, key=lambda p: (-sizes[p], -stored[p], p.count("."), not _named_for(p, modality, fed[p]), p))
    chosen: list[str] = []
    for p in ranked:
        if all(fed[p].sources.isdisjoint(fed[q].sources) and not _nested(p, q) for q in chosen):
            chosen.append(p)
    began = {
        _last_stage(model, p, fed, chosen, cap): p for p in chosen
    }  # the encoder -> the candidate its chain began at
    chosen = list(began)
    if not chosen:
        children = ", ".join(n for n, _ in model.named_children()) or "none"
        raise ExportError(
            f"could not detect encoders: no submodule of {cls} is called once on inputs of one modality and leaves "
            f"work for a fusion head (children: {children}). Pass encoders={{'text': 'path.to.text_encoder', ...}}."
        )
    chosen.sort(key=lambda p: fed[p].start)  # in the order forward calls them
    taken = [modality[min(fed[p].sources)] for p in chosen]
    specs, notes = [], []
    for p in chosen:
        call = fed[p]
        raw = tuple(n for n in inputs if n in call.sources)
        m = modality[raw[0]]
        # Two encoders of one modality (e.g. two cameras) are named after their inputs instead.
        key = (
            m if m in _KNOWN_MODALITIES and taken.count(m) == 1 else (raw[0] if len(raw) == 1 else p.replace(".", "_"))
        )
        kinds = {r: {modality[r]} for r in inputs}
        spec, folded = _spec(model, f"{key}_encoder", p, modality=m, call=call, cap=cap, inputs=inputs, kinds=kinds)
        rivals = [q for q in fed if fed[q].sources == call.sources]
        on = ", ".join(f"{r!r} ({m}: {why[r][1]})" for r in raw)
        first = began[p]
        chosen_as = (
            f"the largest of the {len(rivals)} submodules called once on {'/'.join(raw)} alone"
            if first == p
            else f"the last {m}-only stage of the chain from {cls}.{first} ({sizes[first]:,} parameters, the largest "
            f"submodule called once on {'/'.join(n for n in inputs if n in fed[first].sources)} alone), folded in"
        )
        notes.append(
            f"auto-split: {spec.name} = {cls}.{p} on input{'s' if len(raw) > 1 else ''} {on}: {sizes[p]:,} "
            f"parameters, {chosen_as}"
        )
        specs.append(spec)
        notes += folded
    return Split(
        encoders=tuple(specs),
        calls={s.path: fed[s.path] for s in specs},
        output=cap.output,
        auto=True,
        notes=tuple(notes),
    )


def _last_stage(model: Any, path: str, fed: Mapping[str, Call], chosen: list[str], cap: Capture) -> str:
    """Where the encoder that starts at lookup stage ``path`` ends: the candidate fed by the same
    modality's inputs (and no other taken candidate's) that reads what the lookup returned, and on
    while that one is a lookup too. ``path`` itself where it computes (or nothing reads it so)."""
    if cap.flow is None:
        return path
    others = [fed[q].sources for q in chosen if q != path]
    current = path
    while _looks_up(model.get_submodule(current)):
        made = set(cap.flow.serials(fed[current].output))
        after = [
            p
            for p, call in fed.items()
            if call.start > fed[current].start
            and not _nested(p, current)
            and call.sources >= fed[path].sources
            and all(call.sources.isdisjoint(o) for o in others)
            and cap.flow.derives(call.serials, made, call.start)
        ]
        if not after:
            return current
        current = min(after, key=lambda p: (fed[p].start, p.count(".")))  # the next stage; outermost first
    return current


def _looks_up(module: Any) -> bool:
    """Whether every layer with parameters in ``module`` is an embedding table or a norm: a lookup
    stage (token and position embeddings), no layer that transforms features."""
    from torch import nn

    lookups = (nn.Embedding, nn.EmbeddingBag, nn.LayerNorm)
    layers = [m for m in module.modules() if any(True for _ in m.parameters(recurse=False))]
    return (
        bool(layers)
        and all(isinstance(m, lookups) for m in layers)
        and any(isinstance(m, nn.Embedding | nn.EmbeddingBag) for m in layers)
    )


def _grouped_modalities(modality: Mapping[str, str], preprocess: Mapping[str, Any]) -> dict[str, str]:
    """Each raw input's modality for the split: a text's attention mask and segment ids (``mask_input``,
    ``type_ids_input``: "other" in the manifest, derived by the runtime) go with its ids, since the
    text encoder takes all three (a BERT), and an encoder fed by them is fed by one modality."""
    grouped = dict(modality)
    for name, pre in preprocess.items():
        if isinstance(pre, TextPreprocess) and name in grouped:
            for companion in pre.derived:
                if companion in grouped:
                    grouped[companion] = grouped[name]
    return grouped


def _modality_reason(name: str, tensor: Any, preprocess: Any, given: Mapping[str, str]) -> tuple[str, str]:
    """A raw input's modality and why: as given, else its preprocessing, else its name, else dtype and rank."""
    if name in given:
        return given[name], "as given"
    if type(preprocess) in _PREPROCESS_MODALITY:
        return _PREPROCESS_MODALITY[type(preprocess)], f"its {type(preprocess).__name__}"
    stated = _stated(name, None, {})
    if stated is not None:
        return stated, "its name"
    import torch

    shape = f"{str(tensor.dtype).removeprefix('torch.')} {tensor.dim()}-D tensor"
    if tensor.is_floating_point():
        return {4: "image", 2: "audio", 3: "audio"}.get(tensor.dim(), "other"), f"a {shape}"
    if tensor.dtype in (torch.int64, torch.int32) and tensor.dim() == 2:
        return "text", f"an {shape}"
    if tensor.dtype == torch.uint8 and tensor.dim() == 4:  # pixels
        return "image", f"a {shape}"
    if tensor.dtype == torch.int16 and tensor.dim() in (2, 3):  # PCM samples
        return "audio", f"an {shape}"
    return "other", f"a {shape}"


def _safe_tensors(value: Any) -> list[Any]:
    try:
        return tensors(value)
    except ExportError:
        return []


def _nested(a: str, b: str) -> bool:
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def _fuses(path: str, call: Call, fed: Mapping[str, Call]) -> bool:
    """Whether ``path`` combines two candidates fed by disjoint inputs (e.g. a head over two cameras)."""
    parts = {c.sources for q, c in fed.items() if not _nested(path, q) and c.sources < call.sources}
    return any(a.isdisjoint(b) for a in parts for b in parts if a != b)


def _named_for(path: str, modality: Mapping[str, str], call: Call) -> bool:
    hints = _NAME_HINTS.get(modality[min(call.sources)], ())
    return any(h in path.lower() for h in hints)


def _has_tensor(call: Call) -> bool:
    try:
        return bool(tensors(call.output))
    except ExportError:
        return False
