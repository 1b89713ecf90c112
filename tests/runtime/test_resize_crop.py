"""Image recipes as torchvision, timm and Hugging Face write them: the shorter side resized, the
center cropped (``Resize(256)`` + ``CenterCrop(224)``), bilinear or bicubic.

The filters are held to Pillow's float resize; the whole recipe to torchvision's transforms on
the same photos (Pillow's 8-bit passes round, and clip between them, so within two levels of 255); the crop's geometry to
torchvision's own, exactly. Real sizes: 640×480 both ways, 1080p and a 12-MP JPEG.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor, nn

from mmedge.bundle import ImagePreprocess, InputSpec, load_bundle
from mmedge.errors import MMEdgeError
from mmedge.export import export_model
from mmedge.runtime import Pipeline
from mmedge.runtime._signal import resize
from mmedge.runtime.preprocess import prepare, resize_plan

T = pytest.importorskip("torchvision.transforms", reason="torchvision is the reference")

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
FILTERS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}
MODES = {"bilinear": T.InterpolationMode.BILINEAR, "bicubic": T.InterpolationMode.BICUBIC}


def _no_tokenizer() -> None:
    raise AssertionError("no strings here")


def _photo(height: int, width: int, *, edges: bool = True) -> np.ndarray:
    """Gradients, a fine stripe pattern (aliases unless the resize averages) and sharp edges (bicubic
    overshoots; a JPEG rings around them, differently at each decode scale)."""
    y, x = np.ogrid[0:height, 0:width]
    u, v = x / width, y / height
    r = 120 + 90 * np.sin(7 * u + 3 * v) + 20 * np.sin(0.9 * x)
    block = (u > 0.3) & (u < 0.6) & (v > 0.2)
    g = (np.where(block, 250.0, 10.0) if edges else 120 + 80 * np.cos(9 * v - 2 * u)) + 0 * y
    b = 250 * (u + v) / 2 + 0 * y
    return np.clip(np.stack(np.broadcast_arrays(r, g, b), axis=-1), 0, 255).astype(np.uint8)


def _pillow_float(image: np.ndarray, size: tuple[int, int], kernel: str) -> np.ndarray:
    """Pillow's resize of each channel in mode "F" (no rounding between passes, no clipping)."""
    bands = [Image.fromarray(image[:, :, c].astype(np.float32), mode="F") for c in range(image.shape[2])]
    return np.stack([np.asarray(b.resize(size[::-1], FILTERS[kernel])) for b in bands], axis=-1)


def _spec(interpolation: str, size: int = 224, resize: int | tuple[int, int] | None = 256) -> InputSpec:
    pre = ImagePreprocess(size=(size, size), resize=resize, interpolation=interpolation)
    return InputSpec("image", "image", "float32", ("batch", 3, size, size), preprocess=pre)


def _torchvision(interpolation: str, size: int = 224, resize: int | tuple[int, int] = 256) -> object:
    mode = MODES[interpolation]
    return T.Compose([T.Resize(resize, mode), T.CenterCrop(size), T.ToTensor(), T.Normalize(MEAN, STD)])


@pytest.mark.parametrize("kernel", ["bilinear", "bicubic"])
@pytest.mark.parametrize(
    ("shape", "size"), [((480, 640, 3), (224, 224)), ((37, 53, 3), (64, 90)), ((9, 300, 1), (20, 7))]
)
def test_both_filters_are_pillows(kernel: str, shape: tuple[int, ...], size: tuple[int, int]) -> None:
    image = _photo(*shape[:2])[:, :, : shape[2]]
    np.testing.assert_allclose(resize(image, size, kernel=kernel), _pillow_float(image, size, kernel), atol=1e-4)


@pytest.mark.parametrize("kernel", ["bilinear", "bicubic"])
@pytest.mark.parametrize(
    ("shape", "resized", "offset", "size"),
    [
        pytest.param((480, 640, 3), (256, 341), (16, 58), (224, 224), id="shrink"),
        pytest.param((480, 640, 3), (480, 640), (128, 208), (224, 224), id="crop-only"),
        pytest.param((40, 30, 3), (341, 256), (58, 16), (224, 224), id="grow"),
    ],
)
def test_a_window_of_the_resize_is_computed_alone_as_in_the_full_resize(
    kernel: str, shape: tuple[int, ...], resized: tuple[int, int], offset: tuple[int, int], size: tuple[int, int]
) -> None:
    image = _photo(*shape[:2])
    window = resize(image, size, resized=resized, offset=offset, kernel=kernel)
    full = resize(image, resized, kernel=kernel)
    top, left = offset
    np.testing.assert_allclose(window, full[top : top + size[0], left : left + size[1]], atol=1e-4)


@pytest.mark.parametrize(
    ("height", "width"), [(480, 640), (640, 480), (480, 641), (375, 500), (1080, 1920), (3000, 4000), (7, 900)]
)
def test_the_crop_is_torchvisions_to_the_pixel(height: int, width: int) -> None:
    """The resized size and center-crop offsets, read back from torchvision's transforms on an image
    whose pixels are their own coordinates (nearest-neighbour resize, so nothing is blended)."""
    pre = ImagePreprocess(size=(224, 224), resize=256)
    resized, (top, left) = resize_plan(height, width, pre)
    canvas = Image.new("L", (width, height))
    assert T.Resize(256)(canvas).size == resized[::-1]
    index = torch.arange(resized[0] * resized[1], dtype=torch.float64).reshape(1, *resized)
    corner = int(T.CenterCrop(224)(index)[0, 0, 0])
    assert divmod(corner, resized[1]) == (top, left)


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
@pytest.mark.parametrize(
    ("width", "height", "resize"),
    [(640, 480, 256), (480, 640, 256), (1920, 1080, 256), (640, 480, (256, 256)), (1920, 1080, (240, 300))],
)
def test_photos_match_torchvisions_resize_and_center_crop(
    interpolation: str, width: int, height: int, resize: int | tuple[int, int]
) -> None:
    photo = Image.fromarray(_photo(height, width))
    want = _torchvision(interpolation, resize=resize)(photo).numpy()
    got = prepare(_spec(interpolation, resize=resize), photo, _no_tokenizer)[0]
    levels = np.abs(got - want) * np.array(STD, np.float32)[:, None, None] * 255
    # Pillow rounds each 8-bit pass (the clipping of bicubic's overshoot between them is followed)
    assert levels.max() <= 1.5
    assert levels.mean() <= 0.35


def test_a_12mp_jpeg_decoded_at_reduced_scale_stays_within_two_levels(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    Image.fromarray(_photo(3000, 4000, edges=False)).save(path, quality=90)
    with Image.open(path) as photo:
        photo.load()
        want = _torchvision("bicubic")(photo).numpy()
    got = prepare(_spec("bicubic"), str(path), _no_tokenizer)[0]  # decoded at 1/2: 2000x1500 for a 256 side
    levels = np.abs(got - want) * np.array(STD, np.float32)[:, None, None] * 255
    assert levels.max() <= 2.0
    assert levels.mean() <= 0.35


def test_bicubic_overshoot_is_clipped_to_the_pixel_range() -> None:
    """Sharp edges overshoot 255 and 0 in a bicubic float resize; 8-bit pipelines clip, so does the recipe."""
    edges = np.zeros((480, 640, 3), np.uint8)
    edges[:, 320:] = 255
    spec = InputSpec(
        "image", "image", "float32", ("batch", 3, 224, 224),
        preprocess=ImagePreprocess(size=(224, 224), mean=(0, 0, 0), std=(1, 1, 1), resize=256, interpolation="bicubic"),
    )  # fmt: skip
    assert resize(edges, (224, 224), kernel="bicubic").max() > 255  # the filter alone overshoots
    for pixels in (edges, edges / np.float32(255)):  # uint8 and float [0, 1] arrays
        out = prepare(spec, pixels, _no_tokenizer)
        assert out.min() == 0.0
        assert out.max() == 1.0


class _Classifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.image_encoder = nn.Sequential(nn.Conv2d(3, 8, 5, 4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(8, 4)

    def forward(self, image: Tensor) -> Tensor:
        return self.head(self.image_encoder(image))


@pytest.mark.parametrize("resize", [256, (256, 256)])
def test_a_bundle_takes_photos_as_its_torchvision_eval_transform(tmp_path: Path, resize: int | tuple[int, int]) -> None:
    """A model evaluated with Resize(256) + CenterCrop(224) (or DeiT's Resize((256, 256))), bicubic: the
    manifest keeps the recipe and photos of either orientation reach the model as torchvision hands them."""
    torch.manual_seed(0)
    model = _Classifier().eval()
    pre = ImagePreprocess(size=(224, 224), mean=MEAN, std=STD, resize=resize, interpolation="bicubic")
    result = export_model(model, {"image": torch.randn(2, 3, 224, 224)}, preprocess={"image": pre}, out=tmp_path / "b")
    assert load_bundle(result.path).manifest.input("image").preprocess == pre
    pipeline = Pipeline(result.path)
    for height, width in ((480, 640), (640, 480)):
        photo = Image.fromarray(_photo(height, width))
        with torch.no_grad():
            want = model(_torchvision("bicubic", resize=resize)(photo)[None]).numpy()
        np.testing.assert_allclose(pipeline.run({"image": photo})["logits"], want, atol=2e-3)


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"interpolation": "nearest"}, "interpolation 'nearest' is not one of 'bilinear', 'bicubic'"),
        ({"crop_rounding": "ceil"}, "crop_rounding 'ceil' is not one of 'round', 'floor'"),
        ({"resize": 200}, "resize 200 must be at least the crop's largest side"),
        ({"resize": (256, 200)}, r"resize \(256, 200\) must be at least the crop's largest side"),
        ({"resize": 10**5}, "at most 8192"),
    ],
)
def test_a_recipe_the_runtime_cannot_follow_is_refused(tmp_path: Path, fields: dict, problem: str) -> None:
    pre = ImagePreprocess(size=(224, 224), **fields)
    with pytest.raises(MMEdgeError, match=problem):
        export_model(
            _Classifier().eval(), {"image": torch.randn(2, 3, 224, 224)}, preprocess={"image": pre}, out=tmp_path / "b"
        )
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize(
    ("height", "width", "size"), [(480, 640, (224, 224)), (480, 640, (50, 400)), (37, 53, (90, 64))]
)
def test_clipped_bicubic_is_pillows_8_bit_resize(height: int, width: int, size: tuple[int, int]) -> None:
    """Horizontal pass first and each pass clipped, as Pillow's Resample.c: within its rounding of each
    pass (about a level) even at sharp edges, where the float resize clipped once is several levels off.
    (Pillow 13 evidently takes the vertical pass first for some shapes, 640x480 to 100x300 say: there the
    sharp synthetic edges are 5 levels apart; real photos through the processors stay within 1.5.)"""
    image = _photo(height, width)
    want = np.asarray(Image.fromarray(image).resize(size[::-1], Image.Resampling.BICUBIC)).astype(np.float32)
    assert np.abs(resize(image, size, kernel="bicubic", clip=255.0) - want).max() <= 1.5
    assert np.abs(np.clip(resize(image, size, kernel="bicubic"), 0, 255) - want).max() > 2.0
