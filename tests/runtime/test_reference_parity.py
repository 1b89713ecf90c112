"""Every reference model, exported with mmedge.export and run through Pipeline, matches PyTorch.

The test imports torch (to run the reference); the runtime under test does not. Each model is
exported once per module (the slow part, ~80 s for all four on 2 cores); raw-input tests check
that the runtime's tokenizer and image/audio preprocessing reproduce ``mmedge.data``'s training
tensors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mmedge.data import encode_text, normalize_images  # noqa: E402
from mmedge.export import export_model  # noqa: E402
from mmedge.models import (  # noqa: E402
    REFERENCE_MODELS,
    CaptionNet,
    ResNetBertConfig,
    ResNetBertNet,
    TextImageNet,
    TriModalNet,
)
from mmedge.runtime import Pipeline  # noqa: E402

pytestmark = pytest.mark.slow
RTOL, ATOL = 1e-4, 1e-4

# Small configs where the model has them; ResNet encoders keep torchvision's fixed architecture.
BUILDERS = {
    "TriModalNet": TriModalNet,
    "TextImageNet": TextImageNet,
    "CaptionNet": CaptionNet,
    "ResNetBertNet": lambda: ResNetBertNet(ResNetBertConfig(hidden=64, layers=1, heads=2, fusion_dim=32)),
}


def test_every_reference_model_is_covered() -> None:
    assert set(BUILDERS) == set(REFERENCE_MODELS)


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    torch.manual_seed(0)
    model = BUILDERS[request.param]().eval()
    out = tmp_path_factory.mktemp(request.param) / "bundle"
    export_model(model, model.example_inputs(batch=2), out=out)
    return model, out


def _torch(model: Any, tensors: dict[str, np.ndarray]) -> np.ndarray:
    with torch.no_grad():
        return model(**{k: torch.from_numpy(v) for k, v in tensors.items()}).numpy()


def test_pipeline_matches_pytorch_on_model_tensors(exported: tuple[Any, Path]) -> None:
    model, bundle = exported
    tensors = {k: v.numpy() for k, v in model.example_inputs(batch=3).items()}
    with Pipeline(bundle, "cpu") as pipe:
        out = pipe.run(tensors)
    (name,) = out
    np.testing.assert_allclose(out[name], _torch(model, tensors), rtol=RTOL, atol=ATOL)


def test_raw_inputs_are_preprocessed_like_the_training_data(exported: tuple[Any, Path]) -> None:
    """Strings, uint8 HWC images and variable-length waves give what the training tensors give."""
    model, bundle = exported
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (3, model.config.image_size, model.config.image_size, 3), dtype=np.uint8)
    raw: dict[str, Any] = {"image": list(pixels)}
    tensors = {"image": normalize_images(pixels)}
    if isinstance(model, CaptionNet):  # teacher-forced tokens start with <bos>: fed as id lists
        ids = [[model.bos_id, 5, 6], [model.bos_id, *range(7, 20)], [model.bos_id]]
        raw["tokens"] = ids
        length = model.config.max_caption_length
        tensors["tokens"] = np.array([(i + [model.pad_id] * length)[:length] for i in ids], np.int64)
    else:
        texts = ["a dark circle", "Bright square in the middle of a wide sky", "zebra"]
        length = model.config.max_text_length
        raw["text"] = texts
        tensors["text"] = np.stack([encode_text(t, vocab=model.vocab, max_length=length) for t in texts])
    if isinstance(model, TriModalNet):
        samples = round(model.config.sample_rate * model.config.audio_seconds)
        waves = [0.1 * rng.standard_normal(n).astype(np.float32) for n in (samples // 2, samples, samples + 100)]
        raw["audio"] = waves
        tensors["audio"] = np.stack([np.pad(w, (0, max(0, samples - len(w))))[:samples] for w in waves])
    with Pipeline(bundle, "cpu") as pipe:
        out = pipe.run(raw)
    (name,) = out
    np.testing.assert_allclose(out[name], _torch(model, tensors), rtol=RTOL, atol=ATOL)
