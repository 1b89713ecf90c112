"""A timm backbone tells its evaluation transform (``pretrained_cfg``): the export writes it as the
image recipe, and a 640×480 photo then reaches the model as timm's own ``create_transform`` hands it
over (within 8-bit rounding). Random init: the config is what matters, not the weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor, nn

from mmedge.bundle import ImagePreprocess, load_bundle
from mmedge.export import export_model
from mmedge.export._timm_recipe import _recipe
from mmedge.runtime import Pipeline

timm = pytest.importorskip("timm", reason="needs the test extra: pip install -e '.[test]'")


class _Tagger(nn.Module):
    """A timm backbone (random init) and a linear head, as users fine-tune them."""

    def __init__(self, architecture: str) -> None:
        super().__init__()
        self.backbone = timm.create_model(architecture, pretrained=False, num_classes=0)
        self.head = nn.Linear(self.backbone.num_features, 4)

    def forward(self, image: Tensor) -> Tensor:
        return self.head(self.backbone(image))


def _photo(height: int, width: int) -> Image.Image:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x / width * 255, y / height * 255, (x + y) / (width + height) * 255], axis=-1)
    return Image.fromarray(np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8))


@pytest.mark.parametrize(
    ("architecture", "resize", "interpolation"),
    [
        ("resnet18", 235, "bicubic"),
        ("convnext_atto", 256, "bicubic"),
        ("resnet18.tv_in1k", 256, "bilinear"),
        ("vit_tiny_patch16_224", 248, "bicubic"),
    ],
)
def test_a_timm_backbone_gives_the_recipe_of_its_eval_transform(
    tmp_path: Path, architecture: str, resize: int, interpolation: str
) -> None:
    torch.manual_seed(0)
    model = _Tagger(architecture).eval()
    result = export_model(model, {"image": torch.randn(2, 3, 224, 224)}, out=tmp_path / "b")
    recipe = load_bundle(result.path).manifest.input("image").preprocess
    assert (recipe.resize, recipe.interpolation) == (resize, interpolation)
    assert any("pretrained_cfg" in n and architecture.split(".", maxsplit=1)[0] in n for n in result.warnings)
    config = timm.data.resolve_data_config(model=model.backbone)
    transform = timm.data.create_transform(**config)
    with Pipeline(result.path) as pipeline:
        for photo in (_photo(480, 640), _photo(640, 480)):
            with torch.no_grad():
                want = model(transform(photo)[None]).numpy()
            got = pipeline.run({"image": photo})["logits"]
            np.testing.assert_allclose(got, want, atol=0.02 * float(np.abs(want).max()))


def test_a_given_recipe_wins_over_the_timm_config(tmp_path: Path) -> None:
    torch.manual_seed(0)
    given = ImagePreprocess(size=(224, 224), mean=(0.5,) * 3, std=(0.5,) * 3)
    result = export_model(
        _Tagger("resnet18").eval(),
        {"image": torch.randn(2, 3, 224, 224)},
        preprocess={"image": given},
        out=tmp_path / "b",
    )
    assert load_bundle(result.path).manifest.input("image").preprocess == given
    assert not any("pretrained_cfg" in n for n in result.warnings)


@pytest.mark.parametrize(
    ("config", "size", "expected"),
    [
        ({"crop_pct": 1.0, "crop_mode": "center"}, (224, 224), 224),  # shorter side to 224, then the center
        ({"crop_pct": 0.9, "crop_mode": "squash"}, (224, 224), (248, 248)),
        ({"crop_pct": 1.0, "crop_mode": "squash"}, (224, 224), None),  # squash to the size itself: a stretch
        ({"crop_pct": 0.875}, (160, 160), 182),  # a model fine-tuned at another size keeps the proportion
    ],
)
def test_crop_modes_and_sizes_follow_timms_eval_transform(
    config: dict, size: tuple[int, int], expected: object
) -> None:
    recipe = _recipe({"mean": (0.5,) * 3, "std": (0.5,) * 3, "interpolation": "bicubic", **config}, size)
    assert recipe is not None
    assert recipe.resize == expected


@pytest.mark.parametrize(
    "config",
    [
        {"crop_mode": "border"},
        {"interpolation": "nearest"},
        {"crop_mode": "center", "crop_pct": 0.9, "size": (224, 160)},
    ],
)
def test_transforms_the_recipe_cannot_follow_are_not_guessed(config: dict) -> None:
    size = config.pop("size", (224, 224))
    assert _recipe({"mean": (0.5,) * 3, "std": (0.5,) * 3, **config}, size) is None
