"""What an image input's example tells of its preprocessing: the layout, and raw pixels for integer inputs.

Models ported from Keras or TFLite take ``(batch, height, width, channels)``; models that
normalise inside ``forward`` take the uint8 pixels themselves. The first needs ``layout="NHWC"``
in its recipe (the export's hint says so), the second has only one sensible recipe — resize to
the example's size and feed the pixels unscaled — so the export writes it, with a note, and the
bundle takes photos as the model's own code expects them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mmedge.bundle import ImagePreprocess

__all__ = ["image_layout", "image_size", "infer_pixel_preprocess"]

_CHANNELS = (1, 3)  # gray and RGB: what the runtime makes of a photo


def image_layout(shape: tuple[int, ...]) -> str:
    """ "NHWC" when the last axis of a 4-D image looks like its channels and the second does not, else "NCHW"."""
    if len(shape) == 4 and shape[3] in (*_CHANNELS, 4) and shape[1] not in (*_CHANNELS, 4):
        return "NHWC"
    return "NCHW"


def image_size(shape: tuple[int, ...], layout: str) -> tuple[int, int]:
    """(height, width) of a 4-D image of ``layout``."""
    return (shape[1], shape[2]) if layout == "NHWC" else (shape[2], shape[3])


def infer_pixel_preprocess(
    modalities: Mapping[str, str], inputs: Mapping[str, Any], preprocess: Mapping[str, Any]
) -> tuple[dict[str, ImagePreprocess], list[str]]:
    """ImagePreprocess for each uint8 image input without one (raw pixels at the example's size), and a note each."""
    found: dict[str, ImagePreprocess] = {}
    notes: list[str] = []
    for name, modality in modalities.items():
        t = inputs[name]
        shape = tuple(int(d) for d in t.shape)
        if modality != "image" or name in preprocess or str(t.dtype) != "torch.uint8" or len(shape) != 4:
            continue
        layout = image_layout(shape)
        channels = shape[3] if layout == "NHWC" else shape[1]
        if channels not in _CHANNELS:
            continue
        size = image_size(shape, layout)
        found[name] = ImagePreprocess(
            size=size, mean=(0.0,) * channels, std=(1.0,) * channels, scale=1.0, layout=layout
        )
        notes.append(
            f"input {name!r}: uint8 {layout} pixels, so image files and arrays are resized to {size[0]}×{size[1]} "
            f"and fed as {'gray' if channels == 1 else 'RGB'} pixels 0–255, unscaled (the model normalises them "
            f"itself). Set [inputs.{name}.preprocess] (or preprocess=) to change it"
        )
    return found, notes
