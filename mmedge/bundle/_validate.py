"""Consistency of a parsed manifest: names, wiring, raw input specs, preprocessing recipes, generation.

Every check is linear in the manifest's size (sets and dicts, never a scan per entry), so a
hostile manifest with tens of thousands of entries is refused, or loaded, in well under a second.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Sequence

from mmedge.bundle._order import wiring_stages
from mmedge.bundle._types import (
    AUDIO_FEATURES,
    CROP_ROUNDINGS,
    DTYPES,
    FORMATS,
    INTERPOLATIONS,
    MAX_ITEM_ELEMENTS,
    MODALITIES,
    OUTPUT_KINDS,
    PRECISIONS,
    RAW_INPUTS,
    ROLES,
    AudioPreprocess,
    Dim,
    GenerationSpec,
    ImagePreprocess,
    InputSpec,
    Manifest,
    TextPreprocess,
)
from mmedge.errors import BundleError

__all__ = ["consistency_problems"]

_MAX_SIDE = math.isqrt(MAX_ITEM_ELEMENTS)  # of an image recipe's resize: beyond it the resized image is too large


def consistency_problems(m: Manifest) -> list[str]:
    """Every internal inconsistency of a manifest, as readable lines."""
    problems = _name_problems(m)
    names = {c.name for c in m.components}
    if RAW_INPUTS in names:
        problems.append(f"{RAW_INPUTS!r} is reserved for raw model inputs; rename that component")
    for i in m.inputs:
        if i.modality not in MODALITIES:
            problems.append(f"input {i.name!r}: modality {i.modality!r} is not one of {MODALITIES}")
        if i.dtype not in DTYPES:
            problems.append(f"input {i.name!r}: dtype {i.dtype!r} is not one of {DTYPES}")
    problems += _input_problems(m)
    raw = {i.name for i in m.inputs}
    problems += [
        f"input {i.name!r}: {field} {getattr(i.preprocess, field)!r} is not an input of the bundle"
        for i in m.inputs
        for field in ("mask_input", "type_ids_input")
        if isinstance(i.preprocess, TextPreprocess)
        and getattr(i.preprocess, field) is not None
        and getattr(i.preprocess, field) not in raw
    ]
    for c in m.components:
        for attr, allowed in (("role", ROLES), ("precision", PRECISIONS), ("format", FORMATS)):
            if getattr(c, attr) not in allowed:
                problems.append(f"component {c.name!r}: {attr} {getattr(c, attr)!r} is not one of {allowed}")
        problems += [
            f"component {c.name!r}: tensor {t.name!r} has dtype {t.dtype!r}, not one of {DTYPES}"
            for t in (*c.inputs, *c.outputs)
            if t.dtype not in DTYPES
        ]
    problems += _wiring_problems(m, raw)
    outputs = {c.name: {t.name for t in c.outputs} for c in m.components}
    for o in m.outputs:
        if o.tensor not in outputs.get(o.component, ()):
            problems.append(f"output {o.name!r} reads unknown tensor {o.component}.{o.tensor}")
        if o.kind not in OUTPUT_KINDS:
            problems.append(f"output {o.name!r}: kind {o.kind!r} is not one of {OUTPUT_KINDS}")
    if m.generation is not None:
        problems += _generation_problems(m, m.generation)
    return problems


def _name_problems(m: Manifest) -> list[str]:
    """Names used twice where each must name one thing: the runtime would silently pick one of them."""
    problems = [
        f"{kind} {name!r} is listed twice; names must be unique (rename one or remove the copy)"
        for kind, entries in (
            ("component", m.components),
            ("input", m.inputs),
            ("output", m.outputs),
            ("asset", m.assets),
        )
        for name in _twice(e.name for e in entries)
    ]
    for c in m.components:
        for kind, tensors in (("input", c.inputs), ("output", c.outputs)):
            problems += [
                f"component {c.name!r}: {kind} tensor {name!r} is listed twice; tensor names must be unique"
                for name in _twice(t.name for t in tensors)
            ]
    files = [c.file for c in m.components] + [a.file for a in m.assets]
    problems += [
        f"file {name!r} is listed for two entries; each component and asset needs its own file"
        for name in _twice(files)
    ]
    return problems


def _twice(names: Iterable[str]) -> list[str]:
    """The names that occur more than once, in first-seen order."""
    seen: set[str] = set()
    repeated: dict[str, None] = {}
    for name in names:
        if name in seen:
            repeated[name] = None
        seen.add(name)
    return list(repeated)


def _wiring_problems(m: Manifest, raw: set[str]) -> list[str]:
    """Edges to or from unknown tensors, inputs fed twice or not at all, and cycles."""
    problems: list[str] = []
    inputs = {c.name: {t.name for t in c.inputs} for c in m.components}
    outputs = {c.name: {t.name for t in c.outputs} for c in m.components}
    fed: dict[tuple[str, str], str] = {}
    for e in m.wiring:
        if e.target not in inputs:
            problems.append(f"wiring targets unknown component {e.target!r}")
        elif e.input not in inputs[e.target]:
            problems.append(f"wiring targets unknown input {e.input!r} of {e.target!r}")
        if e.source == RAW_INPUTS:
            if e.output not in raw:
                problems.append(f"wiring reads unknown raw input {e.output!r}")
        elif e.source not in outputs:
            problems.append(f"wiring reads unknown component {e.source!r}")
        elif e.output not in outputs[e.source]:
            problems.append(f"wiring reads unknown output {e.output!r} of {e.source!r}")
        source, key = f"{e.source}.{e.output}", (e.target, e.input)
        first = fed.get(key)
        if first is None:
            fed[key] = source
        else:
            problems.append(
                f"input {e.input!r} of component {e.target!r} is fed by two wiring edges ({first} and {source}); "
                "an input takes exactly one tensor: remove one edge"
            )
    for c in m.components:
        problems += [
            f"input {t.name!r} of component {c.name!r} is fed by nothing in the wiring"
            for t in c.inputs
            if (c.name, t.name) not in fed and c.role != "decoder"
        ]
    upstream: dict[str, set[str]] = {name: set() for name in inputs}
    for e in m.wiring:
        if e.target in upstream and e.source in upstream:
            upstream[e.target].add(e.source)
    try:
        wiring_stages(upstream)
    except BundleError as e:
        problems.append(str(e))
    return problems


def _input_problems(m: Manifest) -> list[str]:
    """Raw input specs the runtime cannot follow: bad sizes or recipes, or a spec unlike the tensor it feeds."""
    problems: list[str] = []
    feeds: dict[str, set[tuple[str, str]]] = {}  # raw input → the (component, input) it feeds
    for e in m.wiring:
        if e.source == RAW_INPUTS:
            feeds.setdefault(e.output, set()).add((e.target, e.input))
    tensors = {(c.name, t.name): t for c in m.components for t in c.inputs}
    for i in m.inputs:
        where = f"input {i.name!r}"
        dims = [d for d in (*i.shape, *i.example_shape) if isinstance(d, int)]
        item = math.prod(d for d in i.shape[1:] if isinstance(d, int))
        if any(d < 0 for d in dims) or max(item, math.prod(i.example_shape)) > MAX_ITEM_ELEMENTS:
            problems.append(f"{where}: shape {list(i.shape)} / example_shape {list(i.example_shape)} is out of range")
        if i.default is not None and not _fits(i.default, i.dtype):
            problems.append(f"{where}: default {i.default!r} is not a finite {i.dtype} value")
        for target, name in sorted(feeds.get(i.name, ())):
            t = tensors.get((target, name))
            if t is not None and (t.dtype != i.dtype or not _same_dims(t.shape, i.shape)):
                problems.append(
                    f"{where} is {i.dtype} {list(i.shape)} but feeds {target}.{name}, {t.dtype} {list(t.shape)}"
                )
        problems += [f"{where}: {p}" for p in _preprocess_problems(i)]
    return problems


def _fits(value: float, dtype: str) -> bool:
    """Whether ``value`` is finite and representable in ``dtype`` (so filling or scaling with it cannot overflow)."""
    if dtype not in DTYPES:
        return True  # reported as an unknown dtype
    if not math.isfinite(value):
        return False
    low, high, integral = _range(dtype)
    return low <= value <= high and (not integral or value == int(value))


@functools.cache
def _range(dtype: str) -> tuple[float, float, bool]:
    """(min, max, integers only) of a numpy dtype, once per dtype rather than once per manifest entry."""
    import numpy as np

    if dtype == "bool":
        return 0.0, 1.0, True
    kind = np.dtype(dtype).kind
    info = np.finfo(dtype) if kind == "f" else np.iinfo(dtype)
    return float(info.min), float(info.max), kind != "f"


def _same_dims(a: Sequence[Dim], b: Sequence[Dim]) -> bool:
    """Same rank, and no axis fixed to two different sizes."""
    return len(a) == len(b) and all(
        x == y for x, y in zip(a, b, strict=True) if isinstance(x, int) and isinstance(y, int)
    )


def _preprocess_problems(i: InputSpec) -> list[str]:
    """Recipe values the runtime would divide by, allocate from or broadcast against, out of range."""
    pre = i.preprocess
    # normalisation maps [0, 1] pixels to about [-3, 3]; beyond these bounds float32 math overflows
    moderate = all(abs(v) <= 1e6 for v in getattr(pre, "mean", ())) and all(
        1e-6 <= abs(v) <= 1e6 for v in getattr(pre, "std", ())
    )
    if isinstance(pre, ImagePreprocess):
        channel = i.shape[1 if pre.layout == "NCHW" else 3] if len(i.shape) == 4 else None
        hw = i.shape[2:4] if pre.layout == "NCHW" else i.shape[1:3]
        checks = [
            (pre.layout in ("NCHW", "NHWC"), f"layout {pre.layout!r} is not 'NCHW' or 'NHWC'"),
            (
                min(pre.size) >= 1 and math.prod(pre.size) * len(pre.mean) <= MAX_ITEM_ELEMENTS,
                f"size {pre.size} is out of range",
            ),
            (len(i.shape) != 4 or _same_dims(hw, pre.size), f"size {pre.size} differs from the shape {list(i.shape)}"),
            (
                moderate and len(pre.mean) == len(pre.std) >= 1,
                "mean/std must be equally long, within ±1e6, and |std| >= 1e-6",
            ),
            (
                not isinstance(channel, int) or channel == len(pre.mean),
                f"mean/std have {len(pre.mean)} values for {channel} channels",
            ),
            (0 < pre.scale <= 1e6, f"scale must be in (0, 1e6], found {pre.scale!r}"),
            (pre.channel_order in ("RGB", "BGR"), f"channel_order {pre.channel_order!r} is not 'RGB' or 'BGR'"),
            (
                pre.channel_order == "RGB" or len(pre.mean) == 3,
                f"channel_order 'BGR' needs 3 channels, found mean/std for {len(pre.mean)}",
            ),
            (
                pre.interpolation in INTERPOLATIONS,
                f"interpolation {pre.interpolation!r} is not one of {', '.join(map(repr, INTERPOLATIONS))}",
            ),
            (
                pre.crop_rounding in CROP_ROUNDINGS,
                f"crop_rounding {pre.crop_rounding!r} is not one of {', '.join(map(repr, CROP_ROUNDINGS))}",
            ),
            (
                all(max(pre.size) <= side <= _MAX_SIDE for side in pre.resize_sides),
                f"resize {pre.resize} must be at least the crop's largest side ({max(pre.size)}) and at most {_MAX_SIDE}",
            ),
        ]
    elif isinstance(pre, AudioPreprocess):
        length = i.shape[-1] if i.shape and isinstance(i.shape[-1], int) and not pre.spectral else None
        seconds_ok = math.isfinite(pre.max_seconds) and 1 <= pre.sample_rate * pre.max_seconds <= MAX_ITEM_ELEMENTS
        checks = [
            (1 <= pre.sample_rate <= 10**7, f"sample_rate {pre.sample_rate} Hz is out of range"),
            (length is not None or seconds_ok, f"max_seconds {pre.max_seconds!r} gives no usable length"),
            (
                pre.spectral or not pre.mono or len(i.shape) != 3 or not isinstance(i.shape[1], int) or i.shape[1] == 1,
                f"mono=true but the input takes {i.shape[1] if len(i.shape) == 3 else 1} channels; set mono=false",
            ),
            *(_spectral_problems(i, pre) if pre.spectral else ()),
            (
                not pre.normalize or i.dtype.startswith("float"),
                f"normalize=true gives unit-variance floats, which the {i.dtype} input cannot take as PCM",
            ),
        ]
    elif isinstance(pre, TextPreprocess):
        checks = [
            (1 <= pre.max_length <= MAX_ITEM_ELEMENTS, f"max_length {pre.max_length} is out of range"),
            (
                all(t is None or (t >= 0 and _fits(t, i.dtype)) for t in (pre.pad_id, pre.unk_id)),
                f"pad_id and unk_id must be token ids (>= 0, fitting {i.dtype})",
            ),
        ]
    else:
        checks = []
    return [message for ok, message in checks if not ok]


def _spectral_problems(i: InputSpec, pre: AudioPreprocess) -> list[tuple[bool, str]]:
    """A spectrogram recipe's STFT sizes, and the (batch, n_mels, frames) input it must feed."""
    sizes_ok = 2 <= pre.n_fft <= 2**16 and 1 <= pre.hop_length <= pre.n_fft and 1 <= pre.n_mels <= pre.n_fft // 2 + 1
    samples = round(pre.sample_rate * pre.max_seconds) if math.isfinite(pre.max_seconds) else 0
    frames = pre.frames(samples) if sizes_ok else 0
    fixed = i.shape[-1] if len(i.shape) == 3 and isinstance(i.shape[-1], int) else None
    return [
        (
            pre.features in AUDIO_FEATURES,
            f"features {pre.features!r} is not one of {', '.join(map(repr, AUDIO_FEATURES))}",
        ),
        (
            sizes_ok,
            f"n_fft {pre.n_fft}, hop_length {pre.hop_length}, n_mels {pre.n_mels}: need 2 <= n_fft <= 65536, "
            "1 <= hop_length <= n_fft and 1 <= n_mels <= n_fft // 2 + 1",
        ),
        (
            len(i.shape) == 3 and i.shape[1] == pre.n_mels,
            f"features {pre.features!r} feed (batch, {pre.n_mels}, frames), but the input's shape is {list(i.shape)}",
        ),
        (pre.mono, f"features {pre.features!r} are computed from one channel: set mono=true"),
        (i.dtype.startswith("float"), f"features {pre.features!r} are floats; the input takes {i.dtype}"),
        (
            frames * max(pre.n_mels, pre.n_fft) <= MAX_ITEM_ELEMENTS,  # the windowed frames are n_fft wide
            f"max_seconds {pre.max_seconds!r} gives {frames} frames of {pre.n_fft} samples: too many to compute",
        ),
        (
            fixed is None or not sizes_ok or fixed == frames,
            f"max_seconds {pre.max_seconds!r} at {pre.sample_rate} Hz gives {frames} frames of hop_length "
            f"{pre.hop_length}, but the input takes {fixed}",
        ),
    ]


def _generation_problems(m: Manifest, g: GenerationSpec) -> list[str]:
    """Whether the generation spec names real tensors of a decoder and every decoder input is fed."""
    where = "generation"
    decoder = next((c for c in m.components if c.name == g.decoder), None)
    if decoder is None:
        return [f"{where}: decoder {g.decoder!r} is not a component"]
    problems = (
        []
        if decoder.role == "decoder"
        else [f"{where}: component {g.decoder!r} has role {decoder.role!r}, not 'decoder'"]
    )
    ins, outs = {t.name: t for t in decoder.inputs}, {t.name: t for t in decoder.outputs}
    token, logits = ins.get(g.token_input), outs.get(g.logits_output)
    if token is None or token.dtype not in ("int64", "int32") or len(token.shape) != 2:
        problems.append(
            f"{where}: token_input {g.token_input!r} must be an int64/int32 [batch, 1] input of {g.decoder!r}"
        )
    if logits is None or len(logits.shape) != 2:
        problems.append(f"{where}: logits_output {g.logits_output!r} must be a [batch, vocab] output of {g.decoder!r}")
    for i, o in g.state:
        if i not in ins or o not in outs:
            problems.append(f"{where}: state pair ({i!r}, {o!r}) must be an input and an output of {g.decoder!r}")
        elif (ins[i].dtype, len(ins[i].shape)) != (outs[o].dtype, len(outs[o].shape)):
            problems.append(f"{where}: state input {i!r} and output {o!r} differ in dtype or rank")
        elif ins[i].shape.count("batch") != 1:
            problems.append(
                f"{where}: state input {i!r} must have exactly one axis named 'batch', found {list(ins[i].shape)}"
            )
    wired = {e.input for e in m.edges_into(g.decoder)}
    if g.token_input in wired:
        problems.append(f"{where}: token_input {g.token_input!r} is fed by the wiring; the generation loop feeds it")
    problems += [
        f"{where}: input {t.name!r} of {g.decoder!r} is neither the token input nor fed by the wiring"
        for t in decoder.inputs
        if t.name != g.token_input and t.name not in wired
    ]
    vocab = logits.shape[-1] if logits is not None and logits.shape else None
    for name in ("bos_id", "eos_id", "pad_id"):
        value = getattr(g, name)
        if not isinstance(value, int) or value < 0 or (isinstance(vocab, int) and value >= vocab):
            problems.append(f"{where}: {name} {value!r} is not a token id of the {vocab or '?'}-token vocabulary")
    if not isinstance(g.max_length, int) or g.max_length < 1:
        problems.append(f"{where}: max_length must be a positive int, found {g.max_length!r}")
    if g.vocab not in {a.name for a in m.assets}:
        problems.append(f"{where}: vocab asset {g.vocab!r} is not among the assets; re-export with the vocabulary")
    return problems
