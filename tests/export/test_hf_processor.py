"""Recipes from Hugging Face processors: ``mmedge export --processor DIR`` reads the
preprocessor_config.json an image processor or feature extractor saved, and the bundle then prepares
a 640×480 photo (or a 10-s clip) as that processor does, checked against the processor itself."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmedge.bundle import AudioPreprocess, ImagePreprocess, InputSpec, load_bundle
from mmedge.errors import ExportError
from mmedge.export._hf_processor import load_processor, processor_preprocess
from mmedge.runtime.preprocess import Audio, prepare

transformers = pytest.importorskip("transformers", reason="needs the hf extra: pip install 'mmedge[hf]'")

IMAGE = {"pixel_values": (1, 3, 224, 224)}


def _no_tokenizer() -> None:
    raise AssertionError("no strings here")


def _photo(height: int = 480, width: int = 640) -> Image.Image:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x / width * 255, y / height * 255, (x + y) / (width + height) * 255], axis=-1)
    return Image.fromarray(np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8))


def _saved(processor: object, tmp_path: Path) -> dict:
    processor.save_pretrained(tmp_path)
    return load_processor(tmp_path)


_CONVNEXT = {"size": {"shortest_edge": 224}, "crop_pct": 0.875, "resample": 3}  # microsoft/resnet-50's
_CLIP = ImagePreprocess(
    size=(224, 224),
    mean=(0.48145466, 0.4578275, 0.40821073),
    std=(0.26862954, 0.26130258, 0.27577711),
    resize=224,
    interpolation="bicubic",
    crop_rounding="floor",  # the fast processor too: transformers' own center crop
)
PROCESSORS = {  # name: (processor, the recipe it gives)
    "vit": (
        lambda: transformers.ViTImageProcessor(size={"height": 224, "width": 224}),
        ImagePreprocess(size=(224, 224), mean=(0.5,) * 3, std=(0.5,) * 3, crop_rounding="floor"),
    ),
    "clip": (
        transformers.CLIPImageProcessor,
        _CLIP,
    ),
    "clip-fast": (
        transformers.CLIPImageProcessorFast,
        _CLIP,
    ),
    "convnext-crop-pct": (  # shortest edge 224 / 0.875 = 256, crop 224
        lambda: transformers.ConvNextImageProcessor(**_CONVNEXT),
        ImagePreprocess(size=(224, 224), mean=(0.5,) * 3, std=(0.5,) * 3, resize=256, interpolation="bicubic", crop_rounding="floor"),
    ),
    "convnext-fast": (  # its fast processor crops with torchvision's rounding
        lambda: transformers.ConvNextImageProcessorFast(**_CONVNEXT),
        ImagePreprocess(size=(224, 224), mean=(0.5,) * 3, std=(0.5,) * 3, resize=256, interpolation="bicubic"),
    ),
    "deit": (  # resize to 256x256, crop 224
        transformers.DeiTImageProcessor,
        ImagePreprocess(size=(224, 224), mean=(0.5,) * 3, std=(0.5,) * 3, resize=(256, 256), interpolation="bicubic", crop_rounding="floor"),
    ),
}  # fmt: skip


def _real_photos() -> list[Image.Image]:
    """Photos installed packages ship (a portrait, two 640x427 landscapes), else synthetic ones."""
    found = []
    for package, name in (
        ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
        ("sklearn", "datasets/images/flower.jpg"),
    ):
        try:
            path = Path(importlib.import_module(package).__file__).parent / name
        except ImportError:
            continue
        if path.is_file():
            found.append(Image.open(path).convert("RGB"))
    return found or [_photo(), _photo(640, 480)]


@pytest.mark.parametrize("name", PROCESSORS)
def test_image_processors_become_recipes_that_prepare_photos_as_they_do(name: str, tmp_path: Path) -> None:
    """Within about a level of 255 (Pillow rounds each 8-bit pass; the runtime clips bicubic's overshoot
    after each pass as Pillow does), 0.3 on average; a crop one pixel off is 170 levels at edges."""
    make, expected = PROCESSORS[name]
    processor = make()
    recipe = processor_preprocess(_saved(processor, tmp_path), IMAGE, {})
    assert recipe["pixel_values"] == expected
    spec = InputSpec("pixel_values", "image", "float32", ("batch", 3, 224, 224), preprocess=expected)
    for photo in (*_real_photos(), _photo(), _photo(640, 480)):
        want = np.asarray(processor(photo, return_tensors="pt")["pixel_values"])
        levels = np.abs(prepare(spec, photo, _no_tokenizer) - want) * np.array(expected.std)[:, None, None] * 255
        assert levels.max() <= 1.5
        assert levels.mean() <= 0.35


def test_a_wav2vec2_extractor_gives_rate_and_normalization_as_the_extractor_computes_them(tmp_path: Path) -> None:
    extractor = transformers.Wav2Vec2FeatureExtractor(
        sampling_rate=16000, do_normalize=True, return_attention_mask=True
    )
    recipe = processor_preprocess(_saved(extractor, tmp_path), {"input_values": (1, 160000)}, {})
    assert recipe == {"input_values": AudioPreprocess(sample_rate=16000, max_seconds=10.0, normalize=True, pad=False)}
    # padded: a fixed time axis (or pad = true) normalises over the clip's samples, then pads with zeros
    padded = AudioPreprocess(sample_rate=16000, max_seconds=10.0, normalize=True)
    spec = InputSpec("input_values", "audio", "float32", ("batch", 160000), preprocess=padded)
    rng = np.random.default_rng(0)
    seconds = np.arange(16000 * 4) / 16000
    clip = (0.3 * np.sin(2 * np.pi * 220 * seconds) + 0.05 * rng.normal(size=seconds.size) + 0.1).astype(np.float32)
    # 4 s into a 10-s input: normalised over its own samples, then zero-padded (the extractor with a mask)
    want = extractor(clip, sampling_rate=16000, padding="max_length", max_length=160000, return_tensors="np")
    np.testing.assert_allclose(prepare(spec, Audio(clip, 16000), _no_tokenizer), want["input_values"], atol=1e-5)


@pytest.mark.parametrize(
    ("make", "shapes", "modalities", "problem"),
    [
        (transformers.ASTFeatureExtractor, {"input_values": (1, 1024, 128)}, {},
         "computes 128 features per frame outside the model"),
        (lambda: transformers.ViTImageProcessor(resample=0), IMAGE, {}, "resample 'nearest' is not a filter"),
        (lambda: transformers.ViTImageProcessor(size={"height": 384, "width": 384}), IMAGE, {},
         "makes 384×384 images but the model's example takes 224×224"),
        (lambda: transformers.CLIPImageProcessor(do_center_crop=False), IMAGE, {}, "without a center crop"),
        (transformers.ViTImageProcessor, {"a": (1, 3, 224, 224), "b": (1, 3, 224, 224)},
         {"a": "image", "b": "image"}, "several input"),
    ],
)  # fmt: skip
def test_processors_the_recipe_cannot_follow_are_refused_with_the_way_out(
    make: object, shapes: dict, modalities: dict, problem: str, tmp_path: Path
) -> None:
    with pytest.raises(ExportError, match=problem):
        processor_preprocess(_saved(make(), tmp_path), shapes, modalities)


def test_a_missing_or_broken_processor_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"no preprocessor_config\.json there"):
        load_processor(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ExportError, match="not a readable JSON file"):
        load_processor(tmp_path)


TAGGER = """
import torch
from torch import nn


class Tagger(nn.Module):
    \"\"\"pixel_values and input_values, as transformers names them.\"\"\"

    def __init__(self):
        super().__init__()
        self.image_encoder = nn.Sequential(nn.Conv2d(3, 4, 8, 8), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.audio_encoder = nn.Sequential(nn.Conv1d(1, 4, 400, 160), nn.AdaptiveAvgPool1d(1), nn.Flatten())
        self.head = nn.Linear(8, 3)

    def forward(self, pixel_values, input_values):
        audio = self.audio_encoder(input_values[:, None])
        return self.head(torch.cat([self.image_encoder(pixel_values), audio], dim=-1))
"""


def test_export_reads_several_processors_from_export_toml_or_the_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mmedge.cli import main

    transformers.CLIPImageProcessor().save_pretrained(tmp_path / "clip")
    transformers.Wav2Vec2FeatureExtractor(do_normalize=True).save_pretrained(tmp_path / "w2v")
    (tmp_path / "taggers.py").write_text(TAGGER, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    config = tmp_path / "export.toml"
    config.write_text(
        "[inputs.pixel_values]\nshape = [1, 3, 224, 224]\n\n[inputs.input_values]\nshape = [1, 32000]\n\n"
        '[export]\nprocessor = ["clip", "w2v"]\n',
        encoding="utf-8",
    )
    export = ["export", "--model", "taggers:Tagger", "--config", str(config), "--out"]
    assert main([*export, str(tmp_path / "b")]) == 0
    assert main([*export, str(tmp_path / "c"), "--processor", str(tmp_path / "w2v")]) == 0
    manifest = load_bundle(tmp_path / "b").manifest
    assert manifest.input("pixel_values").preprocess.resize == 224
    assert manifest.input("input_values").preprocess == AudioPreprocess(16000, 2.0, normalize=True, pad=False)
    assert load_bundle(tmp_path / "c").manifest.input("pixel_values").preprocess is None  # the flag replaces the list
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["inputs"][0]["preprocess"]["resize"] == 224
