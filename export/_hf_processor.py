"""Preprocessing read from a Hugging Face ``preprocessor_config.json`` (an image processor or an audio
feature extractor's ``save_pretrained``), so a bundle takes photos and sound files as the model's
own processor prepared them in training, without the user translating its fields.

An image processor (ViT, DeiT, CLIP, ConvNeXt, ResNet, ...) becomes an :class:`ImagePreprocess`:
``size`` as height/width or shortest edge, ``crop_size`` where it center-crops (ConvNeXt's
``crop_pct``), ``resample`` (bilinear or bicubic), ``rescale_factor``, ``image_mean``/``image_std``.
A raw-waveform feature extractor (wav2vec2, HuBERT, WavLM) becomes an :class:`AudioPreprocess`:
``sampling_rate`` and ``do_normalize``, the longest clip from the model's example, and clips kept at
their own length (``pad=False``) where the model's time axis is dynamic. Whisper's feature extractor
becomes the ``whisper_log_mel`` recipe (its ``n_fft``, ``hop_length``, ``feature_size`` mel bins,
clips padded to ``chunk_length`` seconds), so a Whisper encoder's bundle takes sound files. Other
extractors that compute spectrogram features outside the model (AST's Kaldi filterbanks, CLAP) are
refused with the way out: those features are not a recipe the runtime has.

transformers' processors crop at ``(size - crop) // 2`` where torchvision rounds the half margin to
even (its ConvNeXt and BridgeTower fast processors call torchvision's): ``crop_rounding`` follows the
saved processor type. One pixel apart is up to 170 of 255 levels at sharp edges of real photos.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mmedge.bundle import AudioPreprocess, ImagePreprocess
from mmedge.errors import ExportError

__all__ = ["PROCESSOR_FILE", "load_processor", "processor_preprocess"]

PROCESSOR_FILE = "preprocessor_config.json"
_RESAMPLE = {2: "bilinear", 3: "bicubic"}  # PIL.Image.Resampling codes the recipe follows
_RESAMPLE_NAMES = {0: "nearest", 1: "lanczos", 4: "box", 5: "hamming"}
_NAMES = {"image": ("pixel_values",), "audio": ("input_values", "input_features")}  # transformers' input names
_WHISPER = "WhisperFeatureExtractor"
_SPECTRAL_KEYS = frozenset({"num_mel_bins", "n_fft", "hop_length", "frame_length", "mel_filters"})
# transformers' processors crop at (size - crop) // 2 (PIL-based and fast alike), except these fast ones,
# which call torchvision's center_crop (half the margin rounded to even)
_TORCHVISION_CROP = frozenset({"ConvNextImageProcessorFast", "BridgeTowerImageProcessorFast"})
_CONVNEXT_CROP_BELOW = 384  # ConvNeXt's processor crops (by crop_pct) below this shortest edge, else only resizes


def load_processor(path: str | Path) -> dict[str, Any]:
    """The JSON of ``path``: a preprocessor_config.json, or the folder holding one."""
    path = Path(path)
    file = path / PROCESSOR_FILE if path.is_dir() else path
    if not file.is_file():
        raise ExportError(
            f"--processor {path}: no {PROCESSOR_FILE} there; give the file, or the folder an image processor's or "
            "feature extractor's save_pretrained() wrote"
        )
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ExportError(f"--processor {file}: not a readable JSON file ({e})") from e
    if not isinstance(config, dict):
        raise ExportError(f"--processor {file}: expected a JSON object, found {type(config).__name__}")
    return config


def processor_preprocess(
    config: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]], modalities: Mapping[str, str]
) -> dict[str, ImagePreprocess | AudioPreprocess]:
    """The recipe ``config`` describes, for the model input it belongs to: the input named as transformers
    names it (pixel_values, input_values), else the one input of that modality. ``shapes`` are the
    example inputs' shapes, ``modalities`` the ones the user gave."""
    kind = "image" if "image_mean" in config or "crop_size" in config or "image_processor_type" in config else "audio"
    name = _input(kind, shapes, modalities)
    if kind == "image":
        return {name: _image(config, shapes[name], name)}
    return {name: _audio(config, shapes[name], name)}


def _input(kind: str, shapes: Mapping[str, tuple[int, ...]], modalities: Mapping[str, str]) -> str:
    known = [n for n in _NAMES[kind] if n in shapes]
    if len(known) == 1:
        return known[0]
    named = [n for n, m in modalities.items() if m == kind]
    if len(named) == 1:
        return named[0]
    raise ExportError(
        f"--processor describes {kind} preprocessing, but the model has no input named {' or '.join(map(repr, _NAMES[kind]))} and "
        f"{'several' if named else 'no'} input(s) with modality = {kind!r} in export.toml ({', '.join(named) or '-'}); "
        f'set modality = "{kind}" on the one input it is for'
    )


def _image(config: Mapping[str, Any], shape: tuple[int, ...], name: str) -> ImagePreprocess:
    where = f"--processor ({config.get('image_processor_type', 'image processor')}) for {name!r}"
    if len(shape) != 4:
        raise ExportError(f"{where}: the input's example has shape {list(shape)}, not (batch, 3, height, width)")
    model_size = (int(shape[2]), int(shape[3]))
    resample = config.get("resample", 2)
    if resample not in _RESAMPLE:
        raise ExportError(
            f"{where}: resample {_RESAMPLE_NAMES.get(resample, resample)!r} is not a filter the runtime has "
            f"(bilinear or bicubic); set [inputs.{name}.preprocess] in export.toml with the closest one"
        )
    resize, crop = _geometry(config, where) if config.get("do_resize", True) else (None, None)
    size = crop or (resize if isinstance(resize, tuple) else None) or model_size
    if size != model_size:
        raise ExportError(
            f"{where}: the processor makes {size[0]}×{size[1]} images but the model's example takes "
            f"{model_size[0]}×{model_size[1]}; export with the processor's size, or give the matching processor"
        )
    normalize = config.get("do_normalize", True)
    return ImagePreprocess(
        size=size,
        mean=tuple(float(v) for v in config.get("image_mean", (0.5, 0.5, 0.5))) if normalize else (0.0, 0.0, 0.0),
        std=tuple(float(v) for v in config.get("image_std", (0.5, 0.5, 0.5))) if normalize else (1.0, 1.0, 1.0),
        scale=float(config.get("rescale_factor", 1 / 255)) if config.get("do_rescale", True) else 1.0,
        resize=None if crop is None else resize,
        interpolation=_RESAMPLE[resample],
        crop_rounding="round" if config.get("image_processor_type") in _TORCHVISION_CROP else "floor",
    )


def _geometry(config: Mapping[str, Any], where: str) -> tuple[int | tuple[int, int] | None, tuple[int, int] | None]:
    """(what the image is resized to, the center crop or None), as the processor computes them."""
    crop = _pair(config.get("crop_size")) if config.get("do_center_crop") else None
    size = config.get("size")
    if isinstance(size, int):  # older configs: a shortest edge where the processor crops, else a square
        size = {"shortest_edge": size} if crop else {"height": size, "width": size}
    if not isinstance(size, Mapping):
        raise ExportError(f"{where}: size {size!r} is not a form the recipe has (height/width or shortest_edge)")
    if "height" in size and "width" in size:
        return (int(size["height"]), int(size["width"])), crop
    if set(size) == {"shortest_edge"}:
        edge = int(size["shortest_edge"])
        if "crop_pct" in config:  # ConvNeXt: below 384, resize to edge / crop_pct, crop edge x edge
            if edge >= _CONVNEXT_CROP_BELOW:
                return (edge, edge), None
            return int(edge / float(config["crop_pct"])), (edge, edge)
        if crop is None:
            raise ExportError(
                f"{where}: resizing the shortest edge to {edge} without a center crop gives images of every "
                "size; the bundle's model takes one, so the recipe needs crop_size (do_center_crop)"
            )
        return edge, crop
    raise ExportError(
        f"{where}: size {dict(size)} (longest_edge) keeps images of varying size; give the recipe in "
        "[inputs.NAME.preprocess] of export.toml"
    )


def _pair(value: Any) -> tuple[int, int]:
    if isinstance(value, Mapping):
        return int(value["height"]), int(value["width"])
    return int(value), int(value)


def _audio(config: Mapping[str, Any], shape: tuple[int, ...], name: str) -> AudioPreprocess:
    extractor = config.get("feature_extractor_type", "feature extractor")
    where = f"--processor ({extractor}) for {name!r}"
    if extractor == _WHISPER:
        return _whisper(config, shape, where)
    bins = config.get("num_mel_bins", config.get("feature_size", "?"))  # AST keeps feature_size 1 beside its bins
    spectral = bins != 1 or any(k in config for k in _SPECTRAL_KEYS) or (len(shape) == 3 and shape[1] > 2)
    if spectral or "sampling_rate" not in config:
        raise ExportError(
            f"{where}: the extractor computes {bins} features per frame outside the model "
            "(a spectrogram); the runtime computes Whisper's log-mel features, and takes sound files for models "
            "that compute theirs in forward (a torchaudio MelSpectrogram, exported as convolutions). Export "
            "without --processor and feed the features as arrays, or move the feature computation into the model"
        )
    rate = int(config["sampling_rate"])
    return AudioPreprocess(
        sample_rate=rate,
        max_seconds=int(shape[-1]) / rate,
        normalize=bool(config.get("do_normalize", False)),
        pad=False,  # the extractor pads only when asked: one clip at its own length, as transformers' pipelines
    )


def _whisper(config: Mapping[str, Any], shape: tuple[int, ...], where: str) -> AudioPreprocess:
    """WhisperFeatureExtractor's log-mel features of clips padded to ``chunk_length`` seconds (its default
    ``padding="max_length"``, which Whisper's encoder requires), for a (batch, feature_size, frames) input."""
    rate = int(config.get("sampling_rate", 16000))
    seconds = float(config.get("chunk_length", 30))
    recipe = AudioPreprocess(
        sample_rate=rate,
        max_seconds=seconds,
        normalize=bool(config.get("do_normalize", False)),
        features="whisper_log_mel",
        n_fft=int(config.get("n_fft", 400)),
        hop_length=int(config.get("hop_length", 160)),
        n_mels=int(config.get("feature_size", 80)),
    )
    frames = recipe.frames(round(rate * seconds))
    if len(shape) != 3 or (int(shape[1]), int(shape[2])) != (recipe.n_mels, frames):
        raise ExportError(
            f"{where}: the extractor makes (batch, {recipe.n_mels}, {frames}) features ({seconds:g}-s clips at "
            f"{rate} Hz, hop_length {recipe.hop_length}), but the model's example is {list(shape)}; export "
            "with the extractor's shape, or give the matching extractor"
        )
    if float(config.get("dither", 0.0)) != 0.0:
        raise ExportError(
            f"{where}: dither {config['dither']} adds random noise to every clip, so the bundle's outputs would "
            "differ run to run; set dither to 0.0 in the preprocessor_config.json for inference"
        )
    return recipe
