"""Image preprocessing read from a timm backbone's ``pretrained_cfg``.

A timm model carries the evaluation transform it was trained for: interpolation, ``crop_pct`` and
``crop_mode``, mean and std. For an image input the user gave no recipe, whose encoder holds one
timm model, the export writes what ``timm.data.create_transform(**resolve_data_config(model=m))``
does at the example's size: the shorter side resized to ``floor(size / crop_pct)`` and the center
cropped ("center"), or both sides resized so ("squash"). The export's notes say what was read and
how to override it (the model may have been fine-tuned with other transforms). timm is not imported:
the config is a plain dict on the module.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from mmedge.bundle import INTERPOLATIONS, ImagePreprocess
from mmedge.export._frontend import outermost
from mmedge.export._types import EncoderSpec

__all__ = ["infer_timm_preprocess"]

_DEFAULT_CROP_PCT = 0.875  # timm's when a config has none


def infer_timm_preprocess(
    model: Any,
    encoders: Sequence[EncoderSpec],
    modalities: Mapping[str, str],
    inputs: Mapping[str, Any],
    preprocess: Mapping[str, Any],
) -> tuple[dict[str, ImagePreprocess], list[str]]:
    """ImagePreprocess for each float NCHW image input without one whose encoder holds one timm model."""
    found: dict[str, ImagePreprocess] = {}
    notes: list[str] = []
    for name, modality in modalities.items():
        example = inputs.get(name)
        if modality != "image" or name in preprocess or example is None or example.dim() != 4:
            continue
        if not example.is_floating_point():
            continue
        path = next((e.path for e in encoders if name in e.inputs), None)
        configs = _configs(model.get_submodule(path)) if path is not None else {}
        if len(configs) != 1:
            continue
        where, config = next(iter(configs.items()))
        recipe = _recipe(config, (int(example.shape[2]), int(example.shape[3])))
        if recipe is None:
            continue
        found[name] = recipe
        resize = f"resize={recipe.resize}, " if recipe.resize is not None else ""
        notes.append(
            f"input {name!r}: image preprocessing taken from the timm model's pretrained_cfg "
            f"({where or '(the encoder)'}: {config.get('architecture', 'timm')}): {resize}size={recipe.size}, "
            f"interpolation={recipe.interpolation}, mean={recipe.mean}, std={recipe.std}, as timm's eval "
            f"transform (crop_pct {config.get('crop_pct') or _DEFAULT_CROP_PCT}, crop_mode "
            f"{config.get('crop_mode', 'center')}). Set [inputs.{name}.preprocess] (or preprocess=) if it was "
            "fine-tuned with other transforms"
        )
    return found, notes


def _configs(module: Any) -> dict[str, Mapping[str, Any]]:
    """Path → pretrained_cfg of the outermost timm models in ``module`` ("" for the module itself)."""
    configs = {
        path: m.pretrained_cfg
        for path, m in module.named_modules()
        if isinstance(getattr(m, "pretrained_cfg", None), Mapping) and {"mean", "std"} <= m.pretrained_cfg.keys()
    }
    if "" in configs:
        return {"": configs[""]}
    return {path: configs[path] for path in outermost(configs)}


def _recipe(config: Mapping[str, Any], size: tuple[int, int]) -> ImagePreprocess | None:
    """timm's transforms_imagenet_eval at ``size``; None for what the recipe cannot follow (crop_mode
    "border", a filter other than bilinear/bicubic)."""
    interpolation = config.get("interpolation", "bilinear")
    mode = config.get("crop_mode", "center") or "center"
    if interpolation not in INTERPOLATIONS or mode not in ("center", "squash"):
        return None
    crop_pct = float(config.get("crop_pct") or _DEFAULT_CROP_PCT)
    scale = (math.floor(size[0] / crop_pct), math.floor(size[1] / crop_pct))
    if mode == "center" and scale[0] != scale[1]:
        return None  # timm's ResizeKeepRatio for a non-square crop: not a recipe the runtime has
    resize: int | tuple[int, int] = scale if mode == "squash" else scale[0]
    return ImagePreprocess(
        size=size,
        mean=tuple(float(v) for v in config["mean"]),
        std=tuple(float(v) for v in config["std"]),
        resize=None if resize == size else resize,
        interpolation=interpolation,
    )
