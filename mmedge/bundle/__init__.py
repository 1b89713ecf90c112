"""The bundle contract: a directory of ONNX files described by a versioned ``manifest.json``.

The manifest is the only thing stages share (export → quantize → runtime → mobile), so it is
typed here as frozen dataclasses and checked thoroughly on load: format version, files present
and confined to the bundle, sha256 of every file, and the ONNX graphs' IO against the manifest.
Writes are staged in a sibling directory and renamed into place, so a crash never leaves a
half-written bundle where a complete one is expected.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import math
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmedge._hashing import sha256_file
from mmedge._schema import type_problems
from mmedge.errors import BundleError

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "Asset",
    "AudioPreprocess",
    "Bundle",
    "Component",
    "Edge",
    "GenerationSpec",
    "ImagePreprocess",
    "InputSpec",
    "Manifest",
    "ModelInfo",
    "OutputSpec",
    "TensorSpec",
    "TextPreprocess",
    "Verification",
    "check_io",
    "load_bundle",
    "manifest_from_dict",
    "manifest_to_dict",
    "required_inputs",
    "staged_bundle",
    "write_manifest",
]

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
# A manifest is a few KB; anything near this is malformed or hostile.
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
# The most elements one preprocessed item (an image, a wave, a text row) may have: larger recipes
# are edits or corruption, and would make the runtime allocate gigabytes per call.
MAX_ITEM_ELEMENTS = 2**26
RAW_INPUTS = "inputs"  # Edge.source naming a raw model input rather than a component

MODALITIES = ("text", "image", "audio", "other")
ROLES = ("encoder", "head", "decoder")
PRECISIONS = ("fp32", "fp16", "int8")
FORMATS = ("onnx", "ort")
DTYPES = ("float32", "float16", "float64", "int64", "int32", "int8", "uint8", "bool")
OUTPUT_KINDS = ("logits", "embedding", "scores", "token_ids", "other")

Dim = int | str  # a fixed size, or a symbolic name such as "batch"


@dataclass(frozen=True)
class TensorSpec:
    """One tensor at a component boundary."""

    name: str
    dtype: str  # numpy dtype name, e.g. "float32", "int64"
    shape: tuple[Dim, ...]  # symbolic dims are strings ("batch", "seq")


@dataclass(frozen=True)
class ImagePreprocess:
    """How raw images become the encoder's NCHW float tensor."""

    size: tuple[int, int]  # (height, width) the encoder was exported for
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    scale: float = 1.0 / 255.0  # applied to uint8 pixels before mean/std
    layout: str = "NCHW"


@dataclass(frozen=True)
class AudioPreprocess:
    """How raw waveforms become the encoder's (batch, samples) float tensor."""

    sample_rate: int
    max_seconds: float  # waveforms are padded with zeros or cropped to this length
    mono: bool = True


@dataclass(frozen=True)
class TextPreprocess:
    """How strings become token ids; the vocabulary or tokenizer is an asset of the bundle."""

    max_length: int
    pad_id: int = 0
    unk_id: int | None = None
    vocab_file: str | None = None  # one token per line, line index = id
    tokenizer_file: str | None = None  # a Hugging Face `tokenizers` JSON file
    lowercase: bool = True
    # The raw input that takes this text's attention mask (1 = token, 0 = padding); the runtime
    # derives it from the same strings or id lists, so callers give only the text.
    mask_input: str | None = None


Preprocess = ImagePreprocess | AudioPreprocess | TextPreprocess
_PREPROCESS_BY_MODALITY: dict[str, type] = {
    "image": ImagePreprocess,
    "audio": AudioPreprocess,
    "text": TextPreprocess,
}


@dataclass(frozen=True)
class InputSpec:
    """One raw model input, as the user feeds it."""

    name: str
    modality: str  # one of MODALITIES
    dtype: str
    shape: tuple[Dim, ...]
    example_shape: tuple[int, ...] = ()  # the concrete shape used at export; default for fixing dims
    preprocess: Preprocess | None = None
    default: float | None = None  # fill value when the input is omitted; None = required

    def sized_shape(self, batch: int) -> tuple[int, ...] | None:
        """The shape with ``batch`` on a symbolic axis 0 and other symbolic dims from ``example_shape``.

        None when a symbolic dim has no example size to take (callers say what to pass instead).
        """
        shape = []
        for axis, dim in enumerate(self.shape):
            if isinstance(dim, int):
                shape.append(dim)
            elif axis == 0:
                shape.append(batch)
            elif axis < len(self.example_shape):
                shape.append(self.example_shape[axis])
            else:
                return None
        return tuple(shape)


@dataclass(frozen=True)
class Verification:
    """Numerical check of one component after one stage (export, optimize, quantize, mobile)."""

    stage: str
    reference: str  # what it was compared with: "pytorch", "fp32-bundle", ...
    passed: bool
    max_abs_error: float
    max_rel_error: float
    atol: float
    rtol: float
    shapes: tuple[tuple[tuple[int, ...], ...], ...] = ()  # input shapes of each checked run
    dynamic_dims_ok: bool = True
    detail: str = ""


@dataclass(frozen=True)
class Component:
    """One ONNX (or ORT-format) file of the bundle and its place in the graph."""

    name: str
    file: str
    role: str  # one of ROLES
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    modality: str | None = None
    precision: str = "fp32"
    format: str = "onnx"
    exporter: str = ""  # "dynamo", "torchscript", "optimum", ...
    opset: int | None = None
    sha256: str = ""  # filled in by write_manifest
    size_bytes: int = 0  # filled in by write_manifest
    output_structure: Any = None  # nested lists of output names for tuple/dict returns
    quantization: Mapping[str, Any] | None = None  # the recipe record written by mmedge.quantize
    optimizations: tuple[str, ...] = ()
    verification: tuple[Verification, ...] = ()


@dataclass(frozen=True)
class Edge:
    """One tensor flowing into a component input: from a raw input or another component."""

    source: str  # a component name, or RAW_INPUTS for a raw model input
    output: str  # the tensor name at the source
    target: str  # a component name
    input: str  # the input name at the target


@dataclass(frozen=True)
class OutputSpec:
    """One model output and what it means."""

    name: str
    component: str
    tensor: str
    kind: str = "logits"  # one of OUTPUT_KINDS
    labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class Asset:
    """A non-ONNX file the runtime needs (vocabulary, tokenizer), hashed like components."""

    name: str
    file: str
    sha256: str = ""
    size_bytes: int = 0


@dataclass(frozen=True)
class GenerationSpec:
    """How the runtime generates a token sequence with a decoder component, one token per step.

    Before the first step, every input of ``decoder`` except ``token_input`` takes its value from
    the wiring (for a captioner: the LSTM state an init component computes from the image
    feature), and the token fed is ``bos_id``. After each step the next token is chosen from
    ``logits_output`` and fed back through ``token_input``, and each ``state`` output replaces
    its paired input. Wired inputs that are not state keep their value for the whole sequence
    (an encoder memory, say). A sequence ends with ``eos_id`` or after ``max_length`` tokens.
    Every state tensor has one axis named "batch", the axis beam search reorders.
    """

    decoder: str  # the component run once per token (role "decoder")
    token_input: str  # its integer [batch, 1] input: the previous token
    logits_output: str  # its [batch, vocab] output: the next token's logits
    state: tuple[tuple[str, str], ...]  # (input, output) pairs of the decoder carried to the next step
    bos_id: int
    eos_id: int
    pad_id: int = 0
    max_length: int = 32  # most tokens generated per sequence after <bos>, <eos> included
    vocab: str = "vocab"  # the asset with one token per line (line index = id) that decodes ids to text


@dataclass(frozen=True)
class ModelInfo:
    """Where the bundle came from."""

    name: str
    class_path: str = ""
    checkpoint_sha256: str = ""


@dataclass(frozen=True)
class Manifest:
    """The whole contract of a bundle."""

    model: ModelInfo
    inputs: tuple[InputSpec, ...]
    components: tuple[Component, ...]
    wiring: tuple[Edge, ...]
    outputs: tuple[OutputSpec, ...]
    assets: tuple[Asset, ...] = ()
    created_by: Mapping[str, str] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    generation: GenerationSpec | None = None  # set for bundles that generate sequences (captioning)

    def component(self, name: str) -> Component:
        for c in self.components:
            if c.name == name:
                return c
        known = ", ".join(c.name for c in self.components)
        raise BundleError(f"no component named {name!r} in the bundle; it has: {known}")

    def input(self, name: str) -> InputSpec:
        for i in self.inputs:
            if i.name == name:
                return i
        known = ", ".join(i.name for i in self.inputs)
        raise BundleError(f"no input named {name!r} in the bundle; it has: {known}")

    def asset(self, name: str) -> Asset:
        for a in self.assets:
            if a.name == name:
                return a
        raise BundleError(f"no asset named {name!r} in the bundle")

    def edges_into(self, component: str) -> tuple[Edge, ...]:
        return tuple(e for e in self.wiring if e.target == component)


@dataclass(frozen=True)
class Bundle:
    """A loaded, validated bundle: its directory and manifest."""

    path: Path
    manifest: Manifest

    def component_path(self, name: str) -> Path:
        return self.path / self.manifest.component(name).file

    def asset_path(self, name: str) -> Path:
        return self.path / self.manifest.asset(name).file


# ---------------------------------------------------------------------------------------------
# (de)serialisation


def required_inputs(inputs: Sequence[InputSpec]) -> tuple[InputSpec, ...]:
    """The inputs a caller must pass: those without a default, except the attention masks the
    runtime derives from their text input (``TextPreprocess.mask_input``)."""
    derived = {i.preprocess.mask_input for i in inputs if isinstance(i.preprocess, TextPreprocess)}
    return tuple(i for i in inputs if i.default is None and i.name not in derived)


def manifest_to_dict(manifest: Manifest) -> dict[str, Any]:
    """The JSON-ready form of a manifest; the inverse of :func:`manifest_from_dict`."""
    d = dataclasses.asdict(manifest)
    for spec_dict, spec in zip(d["inputs"], manifest.inputs, strict=True):
        if spec.preprocess is not None:
            spec_dict["preprocess"] = {"kind": spec.modality, **spec_dict["preprocess"]}
    if manifest.generation is None:
        del d["generation"]  # manifests of other bundles stay as they were
    return d


def manifest_from_dict(data: Mapping[str, Any]) -> Manifest:
    """Build a Manifest from parsed JSON, collecting every problem before raising one BundleError."""
    if not isinstance(data, Mapping):
        raise BundleError(f"manifest must be a JSON object, found {type(data).__name__}")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(
            f"unsupported bundle format_version {version!r}; this mmedge reads version "
            f"{FORMAT_VERSION}. Re-export the model with this mmedge version, or install the "
            "mmedge version that wrote it."
        )
    try:
        manifest = Manifest(
            model=ModelInfo(**data["model"]),
            inputs=tuple(_input_from_dict(i) for i in data["inputs"]),
            components=tuple(_component_from_dict(c) for c in data["components"]),
            wiring=tuple(Edge(**e) for e in data["wiring"]),
            outputs=tuple(OutputSpec(**{**o, "labels": tuple(o.get("labels", ()))}) for o in data["outputs"]),
            assets=tuple(Asset(**a) for a in data.get("assets", ())),
            created_by=dict(data.get("created_by", {})),
            format_version=version,
            generation=_generation_from_dict(data["generation"]) if data.get("generation") is not None else None,
        )
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise BundleError(
            f"manifest.json is malformed ({type(e).__name__}: {e}); it was edited by hand or "
            "written by an incompatible tool. Re-export the bundle."
        ) from e
    problems = type_problems(manifest, "manifest")
    if problems:
        raise BundleError(
            "manifest.json is malformed (edited by hand or written by an incompatible tool; re-export the "
            "bundle):\n  - " + "\n  - ".join(problems[:20])
        )
    problems = _consistency_problems(manifest)
    if problems:
        raise BundleError("manifest.json is inconsistent:\n  - " + "\n  - ".join(problems))
    return manifest


def _shape(raw: Sequence[Any]) -> tuple[Dim, ...]:
    dims = tuple(raw)
    for d in dims:
        if not isinstance(d, int | str) or isinstance(d, bool):
            raise ValueError(f"shape dims must be ints or names, found {d!r}")
    return dims


def _tensor_from_dict(d: Mapping[str, Any]) -> TensorSpec:
    return TensorSpec(name=d["name"], dtype=d["dtype"], shape=_shape(d["shape"]))


def _input_from_dict(d: Mapping[str, Any]) -> InputSpec:
    pre = d.get("preprocess")
    preprocess = None
    if pre is not None:
        pre = dict(pre)
        kind = pre.pop("kind", d["modality"])
        cls = _PREPROCESS_BY_MODALITY.get(kind)
        if cls is None:
            raise ValueError(f"input {d['name']!r}: no preprocessing is defined for {kind!r}")
        tuples = {f.name for f in dataclasses.fields(cls) if "tuple" in str(f.type)}
        preprocess = cls(**{k: tuple(v) if k in tuples else v for k, v in pre.items()})
    return InputSpec(
        name=d["name"],
        modality=d["modality"],
        dtype=d["dtype"],
        shape=_shape(d["shape"]),
        example_shape=tuple(d.get("example_shape", ())),
        preprocess=preprocess,
        default=d.get("default"),
    )


def _verification_from_dict(d: Mapping[str, Any]) -> Verification:
    shapes = tuple(tuple(tuple(s) for s in run) for run in d.get("shapes", ()))
    return Verification(**{**d, "shapes": shapes})


def _component_from_dict(d: Mapping[str, Any]) -> Component:
    return Component(
        **{
            **d,
            "inputs": tuple(_tensor_from_dict(t) for t in d["inputs"]),
            "outputs": tuple(_tensor_from_dict(t) for t in d["outputs"]),
            "optimizations": tuple(d.get("optimizations", ())),
            "verification": tuple(_verification_from_dict(v) for v in d.get("verification", ())),
        }
    )


def _generation_from_dict(d: Mapping[str, Any]) -> GenerationSpec:
    pairs = tuple(tuple(p) for p in d.get("state", ()))
    if any(len(p) != 2 or not all(isinstance(n, str) for n in p) for p in pairs):
        raise ValueError(f"generation.state must be [input, output] name pairs, found {d.get('state')!r}")
    return GenerationSpec(**{**d, "state": pairs})


def _consistency_problems(m: Manifest) -> list[str]:
    """Every internal inconsistency of a manifest, as readable lines."""
    problems: list[str] = []
    names = [c.name for c in m.components]
    problems += [f"component {n!r} is listed twice" for n in {n for n in names if names.count(n) > 1}]
    if RAW_INPUTS in names:
        problems.append(f"{RAW_INPUTS!r} is reserved for raw model inputs; rename that component")
    for i in m.inputs:
        if i.modality not in MODALITIES:
            problems.append(f"input {i.name!r}: modality {i.modality!r} is not one of {MODALITIES}")
        if i.dtype not in DTYPES:
            problems.append(f"input {i.name!r}: dtype {i.dtype!r} is not one of {DTYPES}")
    problems += _input_problems(m)
    raw_names = {i.name for i in m.inputs}
    problems += [
        f"input {i.name!r}: mask_input {i.preprocess.mask_input!r} is not an input of the bundle"
        for i in m.inputs
        if isinstance(i.preprocess, TextPreprocess) and i.preprocess.mask_input not in (None, *raw_names)
    ]
    components = {c.name: c for c in m.components}
    for c in m.components:
        for attr, allowed in (("role", ROLES), ("precision", PRECISIONS), ("format", FORMATS)):
            if getattr(c, attr) not in allowed:
                problems.append(f"component {c.name!r}: {attr} {getattr(c, attr)!r} is not one of {allowed}")
        problems += [
            f"component {c.name!r}: tensor {t.name!r} has dtype {t.dtype!r}, not one of {DTYPES}"
            for t in (*c.inputs, *c.outputs)
            if t.dtype not in DTYPES
        ]
    raw = {i.name for i in m.inputs}
    for e in m.wiring:
        if e.target not in components:
            problems.append(f"wiring targets unknown component {e.target!r}")
        elif e.input not in {t.name for t in components[e.target].inputs}:
            problems.append(f"wiring targets unknown input {e.input!r} of {e.target!r}")
        if e.source == RAW_INPUTS:
            if e.output not in raw:
                problems.append(f"wiring reads unknown raw input {e.output!r}")
        elif e.source not in components:
            problems.append(f"wiring reads unknown component {e.source!r}")
        elif e.output not in {t.name for t in components[e.source].outputs}:
            problems.append(f"wiring reads unknown output {e.output!r} of {e.source!r}")
    for c in m.components:
        fed = {e.input for e in m.edges_into(c.name)}
        problems += [
            f"input {t.name!r} of component {c.name!r} is fed by nothing in the wiring"
            for t in c.inputs
            if t.name not in fed and c.role != "decoder"
        ]
    for o in m.outputs:
        comp = components.get(o.component)
        if comp is None or o.tensor not in {t.name for t in comp.outputs}:
            problems.append(f"output {o.name!r} reads unknown tensor {o.component}.{o.tensor}")
        if o.kind not in OUTPUT_KINDS:
            problems.append(f"output {o.name!r}: kind {o.kind!r} is not one of {OUTPUT_KINDS}")
    if m.generation is not None:
        problems += _generation_problems(m, m.generation)
    return problems


def _input_problems(m: Manifest) -> list[str]:
    """Raw input specs the runtime cannot follow: bad sizes or recipes, or a spec unlike the tensor it feeds."""
    problems: list[str] = []
    fed = {(e.output, e.target, e.input) for e in m.wiring if e.source == RAW_INPUTS}
    tensors = {(c.name, t.name): t for c in m.components for t in c.inputs}
    for i in m.inputs:
        where = f"input {i.name!r}"
        dims = [d for d in (*i.shape, *i.example_shape) if isinstance(d, int)]
        item = math.prod(d for d in i.shape[1:] if isinstance(d, int))
        if any(d < 0 for d in dims) or max(item, math.prod(i.example_shape)) > MAX_ITEM_ELEMENTS:
            problems.append(f"{where}: shape {list(i.shape)} / example_shape {list(i.example_shape)} is out of range")
        if i.default is not None and not _fits(i.default, i.dtype):
            problems.append(f"{where}: default {i.default!r} is not a finite {i.dtype} value")
        for _, target, name in sorted(f for f in fed if f[0] == i.name):
            t = tensors.get((target, name))
            if t is not None and (t.dtype != i.dtype or not _same_dims(t.shape, i.shape)):
                problems.append(
                    f"{where} is {i.dtype} {list(i.shape)} but feeds {target}.{name}, {t.dtype} {list(t.shape)}"
                )
        problems += [f"{where}: {p}" for p in _preprocess_problems(i)]
    return problems


def _fits(value: float, dtype: str) -> bool:
    """Whether ``value`` is finite and representable in ``dtype`` (so filling or scaling with it cannot overflow)."""
    import numpy as np

    if dtype not in DTYPES:
        return True  # reported as an unknown dtype
    info = np.finfo(dtype) if np.dtype(dtype).kind == "f" else np.iinfo(dtype) if dtype != "bool" else None
    if not math.isfinite(value):
        return False
    if info is None:
        return value in (0, 1)
    return float(info.min) <= value <= float(info.max) and (np.dtype(dtype).kind == "f" or value == int(value))


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
        ]
    elif isinstance(pre, AudioPreprocess):
        length = i.shape[-1] if i.shape and isinstance(i.shape[-1], int) else None
        seconds_ok = math.isfinite(pre.max_seconds) and 1 <= pre.sample_rate * pre.max_seconds <= MAX_ITEM_ELEMENTS
        checks = [
            (1 <= pre.sample_rate <= 10**7, f"sample_rate {pre.sample_rate} Hz is out of range"),
            (length is not None or seconds_ok, f"max_seconds {pre.max_seconds!r} gives no usable length"),
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


# ---------------------------------------------------------------------------------------------
# loading


def load_bundle(path: str | os.PathLike[str], *, check_hashes: bool = True) -> Bundle:
    """Read and validate a bundle directory.

    Checks the format version, that every file is present, confined to the bundle and not a
    symlink, that sha256 hashes match (unless ``check_hashes=False``), and that each ONNX graph's
    inputs and outputs match the manifest. Raises :class:`BundleError` naming the file and the fix.
    """
    root = Path(path)
    manifest_path = root / MANIFEST_NAME
    if not root.is_dir():
        raise BundleError(f"bundle directory {root} does not exist; pass the folder `mmedge export` wrote")
    if not manifest_path.is_file():
        raise BundleError(f"{root} has no {MANIFEST_NAME}; it is not an mmedge bundle (run `mmedge export`)")
    if manifest_path.is_symlink():
        raise BundleError(f"{manifest_path} is a symlink; bundles must contain plain files")
    size = manifest_path.stat().st_size
    if size > MAX_MANIFEST_BYTES:
        raise BundleError(f"{manifest_path} is {size} bytes, over the {MAX_MANIFEST_BYTES}-byte limit")
    try:
        data = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:  # ValueError: bad JSON, 5000-digit numbers
        raise BundleError(f"{manifest_path} is not valid JSON ({type(e).__name__}: {e}); re-export the bundle") from e
    manifest = manifest_from_dict(data)
    problems: list[str] = []
    for name, rel, digest in _files(manifest):
        problems += _file_problems(root, name, rel, digest if check_hashes else None)
    if not problems:
        for c in manifest.components:
            if c.format == "onnx":
                problems += _onnx_io_problems(root / c.file, c)
    if problems:
        raise BundleError(f"bundle {root} failed validation:\n  - " + "\n  - ".join(problems))
    return Bundle(path=root, manifest=manifest)


def _files(m: Manifest) -> list[tuple[str, str, str]]:
    return [(f"component {c.name!r}", c.file, c.sha256) for c in m.components] + [
        (f"asset {a.name!r}", a.file, a.sha256) for a in m.assets
    ]


def _file_problems(root: Path, what: str, rel: str, digest: str | None) -> list[str]:
    p = Path(rel)
    if not rel or p.is_absolute() or ".." in p.parts or rel.startswith(("/", "\\")):
        return [f"{what}: path {rel!r} leaves the bundle directory; paths must be relative and inside it"]
    full = root / p
    if full.is_symlink():
        return [f"{what}: {rel} is a symlink; bundles must contain plain files (copy the file in)"]
    try:
        full.resolve().relative_to(root.resolve())
    except ValueError:
        return [f"{what}: path {rel!r} leaves the bundle directory (through a linked folder)"]
    if not full.is_file():
        return [f"{what}: file {rel} is missing; copy the whole bundle directory or re-export it"]
    if digest is not None and sha256_file(full) != digest:
        return [
            f"{what}: {rel} does not match its sha256 in the manifest; the file was modified or "
            "corrupted. Re-export or re-copy the bundle."
        ]
    return []


_ONNX_DTYPES = {1: "float32", 10: "float16", 11: "float64", 7: "int64", 6: "int32", 3: "int8", 2: "uint8", 9: "bool"}


def _onnx_io_problems(path: Path, component: Component) -> list[str]:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - any parse failure means the file is not usable ONNX
        return [f"component {component.name!r}: {path.name} is not a readable ONNX file ({e})"]
    graph = model.graph
    initializers = {i.name for i in graph.initializer}

    def specs(values: Sequence[Any]) -> list[TensorSpec]:
        out = []
        for v in values:
            if v.name in initializers:
                continue
            t = v.type.tensor_type
            dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim)
            out.append(TensorSpec(v.name, _ONNX_DTYPES.get(t.elem_type, f"onnx:{t.elem_type}"), dims))
        return out

    return check_io(component, specs(graph.input), specs(graph.output))


def check_io(component: Component, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> list[str]:
    """Differences between a component's declared IO and what its graph or session really has.

    Shared by bundle loading (ONNX graphs) and the runtime (ORT sessions, including .ort files).
    A dim the manifest declares symbolic but the graph fixes is reported: it means a stage lost
    a dynamic axis.
    """
    problems: list[str] = []
    for kind, declared, actual in (("input", component.inputs, inputs), ("output", component.outputs, outputs)):
        found = {t.name: t for t in actual}
        if [t.name for t in declared] != [t.name for t in actual]:
            problems.append(
                f"component {component.name!r}: graph {kind}s are {[t.name for t in actual]}, "
                f"manifest declares {[t.name for t in declared]}"
            )
        for t in declared:
            a = found.get(t.name)
            if a is None:
                continue
            if a.dtype != t.dtype:
                problems.append(
                    f"component {component.name!r}: {kind} {t.name!r} is {a.dtype} in the graph, manifest says {t.dtype}"
                )
            if len(a.shape) != len(t.shape):
                problems.append(
                    f"component {component.name!r}: {kind} {t.name!r} has rank {len(a.shape)} in the graph, manifest says {len(t.shape)}"
                )
                continue
            for axis, (want, got) in enumerate(zip(t.shape, a.shape, strict=True)):
                if isinstance(want, int) and isinstance(got, int) and want != got:
                    problems.append(
                        f"component {component.name!r}: {kind} {t.name!r} dim {axis} is {got}, manifest says {want}"
                    )
                elif isinstance(want, str) and isinstance(got, int):
                    problems.append(
                        f"component {component.name!r}: {kind} {t.name!r} dim {axis} ({want!r}) is declared "
                        f"dynamic but the graph fixes it to {got}; a stage lost the dynamic axis"
                    )
    return problems


# ---------------------------------------------------------------------------------------------
# writing


def write_manifest(directory: str | os.PathLike[str], manifest: Manifest) -> Manifest:
    """Write ``manifest.json`` into ``directory``, filling in sha256 and size of every file.

    Returns the completed manifest. The files it names must already be in ``directory``.
    """
    root = Path(directory)
    problems = [p for name, rel, _ in _files(manifest) for p in _file_problems(root, name, rel, None)]
    if problems:
        raise BundleError("cannot write the manifest:\n  - " + "\n  - ".join(problems))
    components = tuple(
        dataclasses.replace(c, sha256=sha256_file(root / c.file), size_bytes=(root / c.file).stat().st_size)
        for c in manifest.components
    )
    assets = tuple(
        dataclasses.replace(a, sha256=sha256_file(root / a.file), size_bytes=(root / a.file).stat().st_size)
        for a in manifest.assets
    )
    done = dataclasses.replace(manifest, components=components, assets=assets)
    problems = _consistency_problems(done)
    if problems:
        raise BundleError("refusing to write an inconsistent manifest:\n  - " + "\n  - ".join(problems))
    text = json.dumps(manifest_to_dict(done), indent=2, sort_keys=False) + "\n"
    tmp = root / f".{MANIFEST_NAME}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, root / MANIFEST_NAME)
    return done


@contextmanager
def staged_bundle(out: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty staging directory beside ``out``; on success it replaces ``out`` atomically.

    The block writes the component files and calls :func:`write_manifest` on the staging
    directory. On any exception (or a crash) ``out`` is untouched: it keeps the previous complete
    bundle, or stays absent. An existing ``out`` is replaced only if it is a bundle or empty, so a
    typo cannot delete unrelated data. Where the OS can swap two directories in one step (Linux),
    ``out`` is never absent, not even for an instant. Work directories that killed processes left
    beside ``out`` are removed first.
    """
    dest = Path(out)
    if dest.exists():
        _check_replaceable(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(dest)
    stage = _work_dir(dest, "partial")
    stage.mkdir()
    try:
        yield stage
        load_bundle(stage)  # never publish something that would not load
        _fsync_dir(stage)
        if dest.exists():
            _swap(stage, dest)  # the stage now holds the previous bundle, removed below
        else:
            os.replace(stage, dest)
        _fsync_dir(dest.parent)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)


def _work_dir(dest: Path, kind: str) -> Path:
    """A hidden sibling of ``dest`` whose name records the process that owns it."""
    return dest.parent / f".{dest.name}.{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _remove_stale(dest: Path) -> None:
    """Remove ``dest``'s work directories whose process is gone (killed while writing)."""
    for path in dest.parent.glob(f".{glob.escape(dest.name)}.*-*-*"):
        kind, _, rest = path.name[len(dest.name) + 2 :].partition("-")
        pid = rest.partition("-")[0]
        if kind in ("partial", "old") and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _swap(stage: Path, dest: Path) -> None:
    """Exchange ``stage`` and ``dest``: in one step where supported, else by three renames."""
    if _exchange(stage, dest):
        return
    old = _work_dir(dest, "old")
    os.replace(dest, old)  # a crash here leaves dest absent and the previous bundle in old
    os.replace(stage, dest)
    os.replace(old, stage)


def _exchange(a: Path, b: Path) -> bool:
    """Linux ``renameat2(RENAME_EXCHANGE)``; False where the C library or file system lacks it."""
    import ctypes

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError, TypeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def _check_replaceable(dest: Path) -> None:
    if not dest.is_dir() or dest.is_symlink():
        raise BundleError(f"output {dest} exists and is not a directory; choose another --out")
    if any(dest.iterdir()) and not (dest / MANIFEST_NAME).is_file():
        raise BundleError(
            f"output {dest} is a non-empty directory that is not an mmedge bundle; refusing to "
            "replace it. Choose an empty or new --out directory."
        )


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
