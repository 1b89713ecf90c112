"""Reference models: documented multimodal nn.Modules the rest of mmedge is built and tested on.

Each model has a frozen config dataclass, named encoder submodules (``text_encoder``,
``image_encoder``, ``audio_encoder``) feeding a ``head`` (or ``decoder``), ``example_inputs(batch)``
keyed like ``forward``'s arguments, and the attributes the exporter records in a bundle:
``preprocess`` (per input), ``labels`` (what each logit means) and ``vocab`` (id -> token).
All weights are randomly initialised; nothing is downloaded. Importing this package imports torch.
"""

from mmedge.export.mel import MelFrontend
from mmedge.models.caption import CaptionConfig, CaptionNet
from mmedge.models.resnet_bert import ResNetBertConfig, ResNetBertNet
from mmedge.models.textimage import TextImageConfig, TextImageNet
from mmedge.models.trimodal import TriModalConfig, TriModalNet

__all__ = [
    "REFERENCE_MODELS",
    "CaptionConfig",
    "CaptionNet",
    "MelFrontend",
    "ResNetBertConfig",
    "ResNetBertNet",
    "TextImageConfig",
    "TextImageNet",
    "TriModalConfig",
    "TriModalNet",
]

REFERENCE_MODELS: dict[str, type] = {
    "TextImageNet": TextImageNet,
    "TriModalNet": TriModalNet,
    "CaptionNet": CaptionNet,
    "ResNetBertNet": ResNetBertNet,
}
