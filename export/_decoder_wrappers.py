"""The modules ``export_captioner`` exports: flat tensors in, a flat tuple out (one per graph IO).

Like the wrappers of ``export_model`` they take ``*xs`` only: the dynamo exporter is given one
tuple of dynamic shapes for that one varargs parameter.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

__all__ = ["DecoderInit", "DecoderStep", "ImageEncoder"]


class ImageEncoder(nn.Module):
    """``forward(image) = (model.image_encoder(image),)``."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.encoder = model.image_encoder

    def forward(self, *xs: Tensor) -> tuple[Tensor]:
        (image,) = xs
        return (self.encoder(image),)


class DecoderInit(nn.Module):
    """``forward(feature) = model.decoder.init_state(feature)``: the first recurrent state."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.decoder = model.decoder

    def forward(self, *xs: Tensor) -> tuple[Tensor, ...]:
        (feature,) = xs
        return tuple(self.decoder.init_state(feature))


class DecoderStep(nn.Module):
    """``forward(tokens, *state) = model.decoder.step(tokens, *state)``: (logits, *new state)."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.decoder = model.decoder

    def forward(self, *xs: Tensor) -> tuple[Tensor, ...]:
        tokens, *state = xs
        return tuple(self.decoder.step(tokens, *state))
