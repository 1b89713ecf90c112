"""Image models in other people's layouts: uint8 pixels normalised inside ``forward`` (the export
writes the raw-pixel recipe itself), channels-last (Keras-style) floats, and gray images; photos
of real size go through each bundle as the model's own code expects them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor, nn

from mmedge.bundle import ImagePreprocess, InputSpec, load_bundle
from mmedge.errors import ExportError, MMEdgeError
from mmedge.export import export_model, load_config
from mmedge.export._config import example_inputs
from mmedge.runtime import Pipeline
from mmedge.runtime.preprocess import prepare

SIZE = 64


class _Encoder(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(channels, 8, 3, 2), nn.ReLU(), nn.Conv2d(8, 16, 3, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class _Uint8ChannelsLast(nn.Module):
    """uint8 (batch, H, W, 3) in; the model scales and normalises the pixels itself."""

    def __init__(self) -> None:
        super().__init__()
        self.image_encoder, self.head = _Encoder(3), nn.Linear(16, 5)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))

    def forward(self, image: Tensor) -> Tensor:
        return self.head(self.image_encoder(image.permute(0, 3, 1, 2).float() / 255.0 - self.mean))


class _ChannelsLast(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.image_encoder, self.head = _Encoder(3), nn.Linear(16, 5)

    def forward(self, image: Tensor) -> Tensor:
        return self.head(self.image_encoder(image.permute(0, 3, 1, 2)))


def _photo() -> np.ndarray:
    """A 640×480 photo-like uint8 image: smooth gradients plus noise."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:480, 0:640]
    base = np.stack([x / 640 * 255, y / 480 * 255, (x + y) / 1120 * 255], axis=-1)
    return np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)


def _resized(photo: np.ndarray) -> np.ndarray:
    """Pillow's antialiased bilinear resize to SIZE² (the runtime's reference), as (H, W, C) uint8."""
    return np.array(Image.fromarray(photo).resize((SIZE, SIZE), Image.Resampling.BILINEAR))


def test_a_uint8_channels_last_model_gets_the_raw_pixel_recipe(tmp_path: Path) -> None:
    config = load_config(_toml(tmp_path, '[inputs.image]\nshape = [1, 64, 64, 3]\ndtype = "uint8"\n'))
    torch.manual_seed(0)
    model = _Uint8ChannelsLast().eval()
    example = example_inputs(model, config, batch=1)  # no "needs high": uint8 pixels span 0-255
    assert example["image"].dtype == torch.uint8
    assert int(example["image"].max()) > 200
    result = export_model(model, example, out=tmp_path / "b")
    spec = load_bundle(result.path).manifest.input("image")
    assert spec.preprocess == ImagePreprocess(
        size=(SIZE, SIZE), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), scale=1.0, layout="NHWC"
    )
    (note,) = [w for w in result.warnings if "uint8 NHWC pixels" in w]
    assert "[inputs.image.preprocess]" in note
    assert not any("no preprocessing metadata" in w for w in result.warnings)

    photo = _photo()
    got = Pipeline(result.path).run({"image": photo})["logits"]
    with torch.no_grad():
        want = model(torch.from_numpy(_resized(photo))[None]).numpy()
    np.testing.assert_allclose(got, want, atol=2e-3)  # pixels within one level of Pillow's
    path = tmp_path / "photo.jpg"
    Image.fromarray(photo).save(path, quality=95)
    from_file = Pipeline(result.path).run({"image": str(path)})["logits"]
    np.testing.assert_allclose(from_file, want, atol=0.05)  # JPEG's loss


def test_a_channels_last_float_model_is_hinted_and_takes_photos_with_its_layout(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = _ChannelsLast().eval()
    example = {"image": torch.randn(2, SIZE, SIZE, 3)}
    hinted = export_model(model, example, out=tmp_path / "hint")
    (hint,) = [w for w in hinted.warnings if "no preprocessing metadata" in w]
    assert f'size = [{SIZE}, {SIZE}], layout = "NHWC"' in hint

    with pytest.raises(ExportError, match='set layout = "NHWC"'):
        export_model(model, example, preprocess={"image": ImagePreprocess(size=(SIZE, SIZE))}, out=tmp_path / "x")
    assert not (tmp_path / "x").exists()

    pre = ImagePreprocess(size=(SIZE, SIZE), layout="NHWC")
    result = export_model(model, example, preprocess={"image": pre}, out=tmp_path / "b")
    photo = _photo()
    got = Pipeline(result.path).run({"image": photo})["logits"]
    pixels = (_resized(photo) / 255.0 - np.array(pre.mean)) / np.array(pre.std)
    with torch.no_grad():
        want = model(torch.from_numpy(pixels.astype(np.float32))[None]).numpy()
    np.testing.assert_allclose(got, want, atol=2e-3)


def test_a_preprocess_table_without_modality_takes_it_from_its_fields(tmp_path: Path) -> None:
    config = load_config(
        _toml(
            tmp_path,
            "[inputs.scan]\nshape = [1, 1, 32, 32]\n[inputs.scan.preprocess]\nsize = [32, 32]\nmean = [0.5]\nstd = [0.25]\n",
        )
    )
    assert config.inputs["scan"].modality == "image"
    assert config.inputs["scan"].preprocess == ImagePreprocess(size=(32, 32), mean=(0.5,), std=(0.25,))


def test_float_pixels_follow_a_custom_scale_as_uint8_pixels_do() -> None:
    """Floats in [0, 1] are uint8 / 255 under any recipe scale (here [-1, 1] models: scale 2/255, mean 1)."""
    pre = ImagePreprocess(size=(16, 16), mean=(1.0, 1.0, 1.0), std=(1.0, 1.0, 1.0), scale=2 / 255)
    spec = InputSpec("image", "image", "float32", ("batch", 3, 16, 16), preprocess=pre)
    pixels = _photo()[:64, :64]
    as_uint8 = prepare(spec, pixels, lambda: None)
    as_float = prepare(spec, pixels.astype(np.float32) / 255.0, lambda: None)
    np.testing.assert_allclose(as_float, as_uint8, atol=1e-5)
    assert as_uint8.min() >= -1.0
    assert as_uint8.max() <= 1.0


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "export.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_bgr_recipe_feeds_the_channels_reversed(tmp_path: Path) -> None:
    """An OpenCV-trained model (BGR, mean in its own order): photos and RGB arrays reach it as BGR."""
    torch.manual_seed(0)
    model = _ChannelsLast().eval()
    mean, std = (0.406, 0.456, 0.485), (0.225, 0.224, 0.229)  # blue, green, red
    pre = ImagePreprocess(size=(SIZE, SIZE), mean=mean, std=std, layout="NHWC", channel_order="BGR")
    result = export_model(
        model, {"image": torch.randn(2, SIZE, SIZE, 3)}, preprocess={"image": pre}, out=tmp_path / "b"
    )
    assert load_bundle(result.path).manifest.input("image").preprocess == pre  # the manifest keeps it
    photo = _photo()
    got = Pipeline(result.path).run({"image": photo})["logits"]
    bgr = _resized(photo)[:, :, ::-1] / 255.0
    with torch.no_grad():
        want = model(torch.from_numpy(((bgr - mean) / std).astype(np.float32))[None]).numpy()
    np.testing.assert_allclose(got, want, atol=2e-3)


@pytest.mark.parametrize(
    ("order", "mean", "problem"),
    [("GBR", (0.5, 0.5, 0.5), "channel_order 'GBR'"), ("BGR", (0.5,), "needs 3 channels")],
)
def test_a_channel_order_the_runtime_cannot_follow_is_refused(
    tmp_path: Path, order: str, mean: tuple[float, ...], problem: str
) -> None:
    model = _ChannelsLast().eval()
    pre = ImagePreprocess(size=(SIZE, SIZE), mean=mean, std=mean, layout="NHWC", channel_order=order)
    with pytest.raises(MMEdgeError, match=problem):
        export_model(model, {"image": torch.randn(2, SIZE, SIZE, 3)}, preprocess={"image": pre}, out=tmp_path / "b")
    assert not (tmp_path / "b").exists()
