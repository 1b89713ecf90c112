"""The manifest's types: frozen dataclasses for every entry, and the vocabularies they draw from."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from mmedge.errors import BundleError

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
INTERPOLATIONS = ("bilinear", "bicubic")  # image resize filters, both antialiased as Pillow's
CROP_ROUNDINGS = ("round", "floor")  # of an image recipe's center crop offsets
# What an audio recipe feeds: the waveform, or Whisper's log-mel spectrogram computed from it
AUDIO_FEATURES = ("waveform", "whisper_log_mel")
DTYPES = ("float32", "float16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool")
OUTPUT_KINDS = ("logits", "embedding", "scores", "token_ids", "other")
RANKED_KINDS = ("logits", "scores")  # output kinds whose top-1 is the prediction (agreement counts it)

Dim = int | str  # a fixed size, or a symbolic name such as "batch"


BATCH = "batch"  # the batch symbol every input shares, unless each modality has its own


def modality_batch(modality: str) -> str:
    """A modality's own batch symbol (``text_batch``): inputs of a model that scores every item of one
    modality against every item of another (CLIP's ``logits_per_image``) take their own numbers of items."""
    return f"{modality}_{BATCH}"


def is_batch_symbol(dim: Dim) -> bool:
    """Whether ``dim`` counts items: ``batch`` or a modality's own batch symbol."""
    return isinstance(dim, str) and (dim == BATCH or dim.endswith(f"_{BATCH}"))


def own_items(spec: InputSpec) -> bool:
    """Whether an input counts its items by its modality's own batch symbol (``text_batch``), apart from the
    other inputs: it feeds an output that scores every item against every item of another input."""
    return bool(spec.shape) and is_batch_symbol(spec.shape[0]) and spec.shape[0] != BATCH


def has_batch_axis(shape: Sequence[Dim]) -> bool:
    """Whether a tensor's first axis is symbolic and its rows are independent items: the batch, along
    which rows are split and stacked (serve merges requests along it, the one OpenVINO graph runs
    batches in chunks along it). Not where a batch symbol sizes another axis too: a ``(batch, batch)``
    or ``(image_batch, text_batch)`` output pairs every row with every item of the call (a CLIP
    similarity matrix), so rows of one call are not the rows of the calls it could be cut into."""
    return (
        bool(shape)
        and isinstance(shape[0], str)
        and shape[0] not in shape[1:]
        and not (is_batch_symbol(shape[0]) and any(map(is_batch_symbol, shape[1:])))
    )


@dataclass(frozen=True)
class TensorSpec:
    """One tensor at a component boundary."""

    name: str
    dtype: str  # numpy dtype name, e.g. "float32", "int64"
    shape: tuple[Dim, ...]  # symbolic dims are strings ("batch", "seq")


@dataclass(frozen=True)
class ImagePreprocess:
    """How raw images become the encoder's NCHW (or NHWC) tensor."""

    size: tuple[int, int]  # (height, width) the encoder was exported for
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)  # in the model's channel order
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    scale: float = 1.0 / 255.0  # applied to uint8 pixels before mean/std
    layout: str = "NCHW"
    # "BGR" for models trained on OpenCV-decoded images: images (decoded, or arrays, as RGB) are
    # reversed to blue, green, red before mean/std (mmcv's to_rgb=False, OpenVINO's reverse_input_channels)
    channel_order: str = "RGB"
    # What the image is resized to before the center ``size`` is cropped, as torchvision's Resize(resize)
    # + CenterCrop(size): an int resizes the shorter side to it, keeping the aspect ratio (torchvision's
    # Resize(256), timm's crop_pct, Hugging Face's shortest_edge); (height, width) resizes to exactly
    # that (DeiT's 256x256 before a 224 crop). None resizes the whole image to ``size``.
    resize: int | tuple[int, int] | None = None
    interpolation: str = "bilinear"  # one of INTERPOLATIONS: "bicubic" for CLIP, timm and most ViTs
    # How a center crop's odd margin is split, one of CROP_ROUNDINGS: "round" half to even, as
    # torchvision's CenterCrop (timm, transformers' fast processors); "floor", (size - crop) // 2, as
    # transformers' PIL-based image processors. One pixel apart, which at sharp edges is many levels.
    crop_rounding: str = "round"

    @property
    def resize_sides(self) -> tuple[int, ...]:
        """The lengths ``resize`` names: ``(shorter side,)``, ``(height, width)``, or none."""
        return () if self.resize is None else self.resize if isinstance(self.resize, tuple) else (self.resize,)


@dataclass(frozen=True)
class AudioPreprocess:
    """How raw waveforms become the encoder's (batch, samples) float tensor."""

    sample_rate: int
    max_seconds: float  # waveforms are padded with zeros or cropped to this length
    mono: bool = True
    # Each clip scaled to zero mean and unit variance over its own samples, before padding (the
    # feature extractor's do_normalize of wav2vec2, HuBERT, WavLM): (x - mean) / sqrt(var + 1e-7).
    normalize: bool = False
    # False: where the input's time axis is dynamic, each clip keeps its own length (cropped at
    # max_seconds) and a batch runs clip by clip, so no clip's result depends on another's padding, as
    # transformers' audio pipelines run wav2vec2-style encoders; True pads every clip to max_seconds
    # (models trained on fixed-length clips). A fixed time axis always pads.
    pad: bool = True
    # One of AUDIO_FEATURES. "whisper_log_mel": the prepared wave becomes a (n_mels, frames) log-mel
    # spectrogram as transformers' WhisperFeatureExtractor computes it (a centered, reflect-padded STFT
    # with a periodic Hann window of n_fft samples every hop_length, power, Slaney mel filters up to
    # 8 kHz, log10 floored at 1e-10 and at the clip's maximum - 8, then (x + 4) / 4; the last frame is
    # dropped), so the input takes (batch, n_mels, samples // hop_length) features, and sound files.
    features: str = "waveform"
    n_fft: int = 400
    hop_length: int = 160
    n_mels: int = 80

    @property
    def spectral(self) -> bool:
        """Whether the recipe feeds spectrogram frames rather than samples along the input's time axis."""
        return self.features != "waveform"

    def frames(self, samples: int) -> int:
        """The length along the input's time axis of a prepared clip of ``samples`` samples."""
        return samples // self.hop_length if self.spectral else samples


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
    # The raw input that takes the token type (segment) ids the tokenizer gives a text pair (0 for the
    # first text, 1 for the second: BERT's token_type_ids); derived from the same items, 0 for one text.
    type_ids_input: str | None = None

    @property
    def derived(self) -> tuple[str, ...]:
        """The inputs the runtime fills from this text: ``mask_input`` and ``type_ids_input``, where set."""
        return tuple(name for name in (self.mask_input, self.type_ids_input) if name is not None)


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

    @property
    def keeps_length(self) -> bool:
        """Whether each audio clip keeps its own length: the recipe says ``pad=False`` and the time axis
        is dynamic (a batch of mixed lengths then runs clip by clip; see :class:`AudioPreprocess`)."""
        pre = self.preprocess
        return isinstance(pre, AudioPreprocess) and not pre.pad and bool(self.shape) and isinstance(self.shape[-1], str)

    @property
    def spectral(self) -> bool:
        """Whether the input takes spectrogram features the runtime computes from waves (its recipe's
        ``features``): a raw item is then a wave, not an item of the input's shape."""
        return isinstance(self.preprocess, AudioPreprocess) and self.preprocess.spectral

    def sized_shape(self, batch: int, sizes: Mapping[str, int] | None = None) -> tuple[int, ...] | None:
        """The shape with symbolic dims from ``sizes`` (symbol → size, e.g. what another input of the same
        call binds ``seq`` or ``text_batch`` to), else ``batch`` on axis 0 and ``example_shape`` elsewhere.

        None when a symbolic dim has no size to take (callers say what to pass instead).
        """
        shape = []
        for axis, dim in enumerate(self.shape):
            if isinstance(dim, int):
                shape.append(dim)
            elif sizes and dim in sizes:
                shape.append(sizes[dim])
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
    # ops the model's forward ran on the raw inputs before this encoder, exported inside it (mmedge.export)
    folded: tuple[str, ...] = ()


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
    # mmedge quantize's check of the components as one OpenVINO graph (mmedge.quantize.whole_graph);
    # read by the runtime, which runs them so where the check chose it
    whole_graph: Mapping[str, Any] | None = None

    @cached_property
    def _index(self) -> _Index:
        # lookups by name are asked once per component or input while loading and running: a scan
        # each time would make a large manifest quadratic. The first entry of a name wins (loading
        # refuses duplicates anyway).
        by_target: dict[str, list[Edge]] = {}
        for e in self.wiring:
            by_target.setdefault(e.target, []).append(e)
        tensors = {(c.name, t.name): t.shape for c in self.components for t in c.outputs}
        shapes: dict[str, tuple[Dim, ...]] = {}
        for o in self.outputs:
            if (o.component, o.tensor) in tensors:
                shapes.setdefault(o.name, tensors[(o.component, o.tensor)])
        return _Index(
            components=_first_by_name(self.components),
            inputs=_first_by_name(self.inputs),
            assets=_first_by_name(self.assets),
            edges_into={target: tuple(edges) for target, edges in by_target.items()},
            output_shapes=shapes,
        )

    def component(self, name: str) -> Component:
        found = self._index.components.get(name)
        if found is None:
            known = ", ".join(c.name for c in self.components)
            raise BundleError(f"no component named {name!r} in the bundle; it has: {known}")
        return found

    def input(self, name: str) -> InputSpec:
        found = self._index.inputs.get(name)
        if found is None:
            known = ", ".join(i.name for i in self.inputs)
            raise BundleError(f"no input named {name!r} in the bundle; it has: {known}")
        return found

    def asset(self, name: str) -> Asset:
        found = self._index.assets.get(name)
        if found is None:
            raise BundleError(f"no asset named {name!r} in the bundle")
        return found

    def edges_into(self, component: str) -> tuple[Edge, ...]:
        return self._index.edges_into.get(component, ())

    def output_shape(self, name: str) -> tuple[Dim, ...]:
        """A model output's shape, as the component computing it declares it (() if it names none)."""
        return tuple(self._index.output_shapes.get(name, ()))

    def paired_outputs(self) -> tuple[str, ...]:
        """Model outputs whose rows pair with one another: a batch axis whose symbol sizes another axis
        too (a ``(batch, batch)`` similarity matrix), so a row depends on the whole call's batch."""
        return tuple(
            o.name
            for o in self.outputs
            if (shape := self.output_shape(o.name)) and isinstance(shape[0], str) and not has_batch_axis(shape)
        )

    def column_inputs(self, output: str) -> tuple[str, ...]:
        """The inputs whose items an output's columns score: an ``(image_batch, text_batch)`` similarity
        matrix's columns are the texts, so a zero-shot call's label texts name them."""
        shape = self.output_shape(output)
        if len(shape) != 2 or not is_batch_symbol(shape[1]) or shape[1] == shape[0]:
            return ()
        return tuple(i.name for i in self.inputs if i.shape[:1] == (shape[1],))


@dataclass(frozen=True)
class _Index:
    """A manifest's entries by name (see ``Manifest._index``)."""

    components: Mapping[str, Component]
    inputs: Mapping[str, InputSpec]
    assets: Mapping[str, Asset]
    edges_into: Mapping[str, tuple[Edge, ...]]
    output_shapes: Mapping[str, tuple[Dim, ...]]  # model output -> its component tensor's shape


def _first_by_name(entries: Sequence[Any]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for entry in entries:
        found.setdefault(entry.name, entry)
    return found


@dataclass(frozen=True)
class Bundle:
    """A loaded, validated bundle: its directory and manifest."""

    path: Path
    manifest: Manifest
    # whether files are checked against their sha256: at load, and again when a session opens one
    check_hashes: bool = True
    # component → the asset files its ONNX graph keeps external weights in, as found at load;
    # None for a Bundle built by hand (then a session opening a component looks again)
    external_data: Mapping[str, tuple[str, ...]] | None = None

    def component_path(self, name: str) -> Path:
        return self.path / self.manifest.component(name).file

    def asset_path(self, name: str) -> Path:
        return self.path / self.manifest.asset(name).file

    def openvino_path(self, name: str) -> Path:
        """The file OpenVINO runs of component ``name``: its OpenVINO build where the bundle carries one
        (asset :func:`openvino_build_asset`, written by mmedge quantize where the component runs on
        OpenVINO: :mod:`mmedge.quantize.openvino_build`), else the component's own file."""
        return self.path / self._openvino_entry(name).file

    def openvino_sha256(self, name: str) -> str:
        """The sha256 the manifest records for :meth:`openvino_path`'s file ("" where none is recorded);
        :func:`load_bundle` checked the file against it unless ``check_hashes`` is False."""
        return self._openvino_entry(name).sha256

    def _openvino_entry(self, name: str) -> Asset | Component:
        build = openvino_build_asset(name)
        return next((a for a in self.manifest.assets if a.name == build), None) or self.manifest.component(name)


OPENVINO_BUILD_PREFIX = "openvino_build:"


def openvino_build_asset(component: str) -> str:
    """The asset name of ``component``'s OpenVINO build (see :meth:`Bundle.openvino_path`)."""
    return OPENVINO_BUILD_PREFIX + component


def derived_inputs(recipes: Iterable[Any]) -> frozenset[str]:
    """The inputs the runtime fills from a text input given as strings: its attention mask and segment
    ids (``TextPreprocess.mask_input``, ``type_ids_input``), of the preprocessing recipes ``recipes``."""
    return frozenset(name for pre in recipes if isinstance(pre, TextPreprocess) for name in pre.derived)


def required_inputs(inputs: Sequence[InputSpec]) -> tuple[InputSpec, ...]:
    """The inputs a caller must pass: those without a default, except those the runtime derives from
    their text input (:func:`derived_inputs`)."""
    derived = derived_inputs(i.preprocess for i in inputs)
    return tuple(i for i in inputs if i.default is None and i.name not in derived)
