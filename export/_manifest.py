"""Pieces of the bundle manifest that come from the model rather than from the export itself:
input specs with preprocessing metadata, the vocabulary asset, model outputs with labels, provenance.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mmedge.bundle import (
    AudioPreprocess,
    ImagePreprocess,
    InputSpec,
    ModelInfo,
    OutputSpec,
    TensorSpec,
    TextPreprocess,
    derived_inputs,
)
from mmedge.errors import ExportError
from mmedge.export._axes import symbolic_shape
from mmedge.export._image_layout import image_layout, image_size

__all__ = [
    "VOCAB_FILE",
    "created_by",
    "dtype_name",
    "input_specs",
    "model_info",
    "output_specs",
    "resolve_preprocess",
    "tensor_spec",
    "write_vocab",
]

VOCAB_FILE = "vocab.txt"
_PREPROCESS_TYPES = (TextPreprocess, ImagePreprocess, AudioPreprocess)
_KIND_BY_NAME = {
    "logits": "logits",
    "embedding": "embedding",
    "embeddings": "embedding",
    "features": "embedding",
    "scores": "scores",
    "similarity": "scores",
    "logits_per_image": "scores",
    "logits_per_text": "scores",
}


def dtype_name(t: Any) -> str:
    return str(t.dtype).removeprefix("torch.")


def tensor_spec(name: str, t: Any, axes: Mapping[int, str]) -> TensorSpec:
    return TensorSpec(name=name, dtype=dtype_name(t), shape=symbolic_shape(tuple(t.shape), axes))


def resolve_preprocess(
    given: Mapping[str, Any] | None, model: Any, inputs: Mapping[str, Any], vocab: Sequence[str] | None
) -> dict[str, Any]:
    """Preprocessing per raw input (argument, else ``model.preprocess``), checked against the examples.

    Text inputs without a vocabulary file get the bundle's ``vocab.txt`` when a vocabulary is given.
    """
    source = given if given is not None else getattr(model, "preprocess", None) or {}
    if not isinstance(source, Mapping):
        raise ExportError(f"preprocess must map input names to preprocessing specs, found {type(source).__name__}")
    unknown = sorted(set(source) - set(inputs))
    if unknown:
        raise ExportError(
            f"preprocess names {unknown}, which are not inputs of the model; its inputs are {list(inputs)}"
        )
    resolved: dict[str, Any] = {}
    for name, given_spec in source.items():
        spec = given_spec
        if not isinstance(spec, _PREPROCESS_TYPES):
            raise ExportError(
                f"preprocess[{name!r}] is a {type(spec).__name__}; use mmedge.bundle.{{Text,Image,Audio}}Preprocess"
            )
        if isinstance(spec, ImagePreprocess):
            _check_image_size(name, spec, tuple(inputs[name].shape))
        if isinstance(spec, TextPreprocess) and vocab and spec.vocab_file is None and spec.tokenizer_file is None:
            spec = dataclasses.replace(spec, vocab_file=VOCAB_FILE)
        resolved[name] = spec
    return resolved


def _check_image_size(name: str, spec: ImagePreprocess, shape: tuple[int, ...]) -> None:
    example = image_size(shape, spec.layout) if len(shape) == 4 else tuple(shape[-2:])
    if example != tuple(spec.size):
        other = image_layout(shape)
        raise ExportError(
            f"preprocess[{name!r}].size is {tuple(spec.size)} but the example {spec.layout} image is "
            f"{example[0]}×{example[1]} (shape {list(shape)}); export with an example of the size the runtime will "
            "feed" + ("" if other == spec.layout else f', or set layout = "{other}"')
        )


def write_vocab(directory: Path, vocab: Sequence[str]) -> str:
    """Write one token per line (line index = id) and return the file name."""
    bad = [t for t in vocab if not isinstance(t, str) or "\n" in t or "\r" in t]
    if bad:
        raise ExportError(f"vocabulary tokens must be strings without line breaks; found {bad[:3]}")
    (directory / VOCAB_FILE).write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return VOCAB_FILE


def _preprocess_example(name: str, modality: str, t: Any) -> str:
    """The fields the modality's preprocessing needs, with the example's sizes where they tell them."""
    shape = tuple(t.shape)
    if modality == "text" and "mask" in name.lower():
        return (
            f"if it is the attention mask of the token ids, export with a tokenizer (--tokenizer, tokenizer=), "
            f'which fills it from the same strings, or set mask_input = "{name}" in the ids\' preprocessing'
        )
    if modality == "image" and len(shape) == 4:
        layout = image_layout(shape)
        height, width = image_size(shape, layout)
        where = ', layout = "NHWC"' if layout == "NHWC" else ""
        return (
            f"size = [{height}, {width}]{where}, the mean and std the model was trained with, and resize = 256 "
            f"(and interpolation) where its eval transform resized the shorter side before a center crop; or "
            "--processor with a Hugging Face model's preprocessor_config.json"
        )
    if modality == "audio" and len(shape) == 3 and shape[1] > 2:
        return (
            f"for Whisper's log-mel features ({shape[1]} bins × {shape[2]} frames), --processor with the "
            'WhisperFeatureExtractor\'s preprocessor_config.json (or features = "whisper_log_mel", n_mels = '
            f"{shape[1]}, sample_rate = 16000, max_seconds = {shape[2]} × hop_length / sample_rate); for other "
            "spectrogram features, compute them inside the model (e.g. torchaudio.transforms.MelSpectrogram at "
            "the start of the audio encoder, which mmedge exports as convolutions) and export again; for a wave, "
            f"sample_rate = the rate the model was trained at, max_seconds = {shape[2]} / sample_rate and mono = false"
        )
    if modality == "audio":
        return (
            f"sample_rate = the rate the model was trained at, and max_seconds = {shape[-1]} / sample_rate "
            f"(the example's {shape[-1]} samples); normalize = true and pad = false for wav2vec2-style encoders "
            "(or --processor with their preprocessor_config.json)"
        )
    if modality == "text":
        return f"max_length = {shape[-1]} and a vocab_file, or export with a tokenizer (--tokenizer, tokenizer=)"
    return "see mmedge.bundle's ImagePreprocess, AudioPreprocess and TextPreprocess"


def input_specs(
    inputs: Mapping[str, Any],
    modalities: Mapping[str, str],
    axes: Mapping[str, Mapping[int, str]],
    preprocess: Mapping[str, Any],
    defaults: Mapping[str, float] | None = None,
) -> tuple[tuple[InputSpec, ...], list[str]]:
    """One InputSpec per raw input (``defaults``: fill values of inputs that may be omitted), and a warning
    for each media input without preprocessing."""
    specs, warnings = [], []
    defaults = defaults or {}
    derived = derived_inputs(preprocess.values())
    for name, t in inputs.items():
        if modalities[name] != "other" and name not in preprocess and name not in derived | defaults.keys():
            warnings.append(
                f"input {name!r} ({modalities[name]}) has no preprocessing metadata; the runtime will only accept "
                f"ready tensors for it, not files or strings (pass preprocess={{...}}, set model.preprocess, or add "
                f"[inputs.{name}.preprocess] to export.toml: {_preprocess_example(name, modalities[name], t)})"
            )
        spec = tensor_spec(name, t, axes[name])
        specs.append(
            InputSpec(
                name=name,
                modality=modalities[name],
                dtype=spec.dtype,
                shape=spec.shape,
                example_shape=tuple(int(d) for d in t.shape),
                preprocess=preprocess.get(name),
                default=defaults.get(name),
            )
        )
    return tuple(specs), warnings


def output_specs(
    outputs: Sequence[tuple[str, str, TensorSpec]], labels: Sequence[str] | None
) -> tuple[tuple[OutputSpec, ...], list[str]]:
    """Model outputs, each (its name, the component computing it, that component's tensor): the kind
    follows a known name; otherwise a single output is logits."""
    specs, warnings = [], []
    for name, component, t in outputs:
        kind = _KIND_BY_NAME.get(name.lower(), "logits" if len(outputs) == 1 else "other")
        attached: tuple[str, ...] = ()
        if kind == "logits" and labels:
            if t.shape and t.shape[-1] == len(labels):
                attached = tuple(labels)
            else:
                warnings.append(
                    f"output {name!r} has {t.shape[-1] if t.shape else 1} classes but {len(labels)} labels were given; labels not attached"
                )
        specs.append(OutputSpec(name=name, component=component, tensor=t.name, kind=kind, labels=attached))
    return tuple(specs), warnings


def model_info(model: Any, given: ModelInfo | None) -> ModelInfo:
    if given is not None:
        return given
    cls = type(model)
    return ModelInfo(name=cls.__name__, class_path=f"{cls.__module__}:{cls.__qualname__}")


def created_by(opset: int) -> dict[str, str]:
    import onnx
    import onnxruntime
    import onnxscript
    import torch

    from mmedge import __version__

    return {
        "mmedge": __version__,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxscript": onnxscript.__version__,
        "onnxruntime": onnxruntime.__version__,
        "opset": str(opset),
    }
