"""Every reference model, exported with mmedge.export, quantized with every recipe.

Small configs (torchvision's ResNets keep their fixed architecture), untrained weights and
synthetic data. Untrained logits are near-ties (FP32 accuracy is at chance), so quantization
noise that leaves every component's output at cosine > 0.97 still flips some predictions: the
auto recipe's agreement target here is 70%, not the 99% the benchmark measures on a trained
TriModalNet with 1,000 samples (training in a test costs ~1 min per model on 2 cores). The
per-component cosine with FP32 is the bound every recipe must keep.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from tinymodels import TINY_CONFIGS, quantize_on_synthetic, tiny_model

torch = pytest.importorskip("torch")

from mmedge.bundle import load_bundle  # noqa: E402
from mmedge.data import REFERENCE_SETS  # noqa: E402
from mmedge.export import export_model  # noqa: E402
from mmedge.models import (  # noqa: E402
    REFERENCE_MODELS,
)
from mmedge.quantize import QuantizationReport, synthetic_calibration  # noqa: E402
from mmedge.quantize.recipes import RECURRENT_OPS  # noqa: E402
from mmedge.runtime import Pipeline  # noqa: E402

pytestmark = pytest.mark.slow

BUILDERS = {name: functools.partial(tiny_model, name) for name in TINY_CONFIGS}
# Auto recipe per component: what the op-type rules must pick for each reference model.
AUTO = {
    "TextImageNet": {"text_encoder": "dynamic", "image_encoder": "static", "fusion_head": "static"},
    "TriModalNet": {
        "text_encoder": "dynamic",
        "image_encoder": "static",
        "audio_encoder": "static",
        "fusion_head": "static",
    },
    # the data-flow split takes the caption tokens' embedding as the text encoder; the LSTM decoder mixes both
    "CaptionNet": {"image_encoder": "static", "text_encoder": "dynamic", "fusion_head": "dynamic"},
    "ResNetBertNet": {"text_encoder": "dynamic", "image_encoder": "static", "fusion_head": "static"},
}
# Minimum cosine of each component's outputs with FP32 (FP32 inputs), by the component's mode.
MIN_COSINE = {"static": 0.97, "dynamic": 0.95, "fp16": 0.999}
AUTO_AGREEMENT = 0.7


def test_every_reference_model_is_covered() -> None:
    assert set(BUILDERS) == set(AUTO) == set(REFERENCE_SETS) == set(REFERENCE_MODELS)


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    torch.manual_seed(0)
    model = BUILDERS[request.param]().eval()
    out = tmp_path_factory.mktemp(request.param) / "fp32"
    frontend = "conv" if request.param == "TriModalNet" else "keep"
    export_model(model, model.example_inputs(batch=2), out=out, audio_frontend=frontend)
    return request.param, out


def _recipe(name: str, bundle: Path) -> Any:
    """FP16 for every component onnxruntime can run in FP16; dynamic INT8 for recurrent ones."""
    src = load_bundle(bundle)
    return {
        c.name: "dynamic"
        if {n.op_type for n in onnx.load(str(src.component_path(c.name))).graph.node} & RECURRENT_OPS
        else "fp16"
        for c in src.manifest.components
    }


def _quantize(bundle: Path, out: Path, recipe: Any) -> QuantizationReport:
    return quantize_on_synthetic(
        bundle,
        out,
        calibration=32,
        holdout=64,
        recipe=recipe,
        min_agreement=AUTO_AGREEMENT if recipe == "auto" else 0.0,
        max_fallback_rounds=2 if recipe == "auto" else 0,
        speed_check=False,  # what the recipe rules choose, on any CPU (the speed check: test_speed.py)
    )


def _check_bounds(report: QuantizationReport) -> None:
    for c in report.components:
        for t in c.outputs:
            assert t.cosine >= MIN_COSINE[c.recipe["mode"]], (c.name, t)


def test_auto_recipe(exported: tuple[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    name, bundle = exported
    report = _quantize(bundle, tmp_path / "int8", "auto")
    assert "Unable to determine" not in caplog.text  # shape inference's harmless doubts stay off the terminal
    assert {c.name: c.recipe["mode"] for c in report.components} == AUTO[name]
    assert report.met
    _check_bounds(report)
    if name != "CaptionNet":  # the ResNet dominates: INT8 weights are a quarter of FP32
        assert report.size_ratio <= 0.30
    if name == "TriModalNet":  # the two-stage DFT front-end and the 1-channel 3x3 conv after it stay FP32
        audio = next(c for c in report.components if c.name == "audio_encoder")
        reasons = [e.reason for e in audio.excluded]
        assert sum("spectral front-end" in r for r in reasons) >= 3  # two DFT convs and the mel matmul at least
        assert sum(r.startswith("Conv over 9 values") for r in reasons) == 1
    for o in report.outputs:
        if name != "CaptionNet":
            assert o.fp32_accuracy is not None
            assert abs(o.quantized_accuracy - o.fp32_accuracy) <= 0.15
    manifest = load_bundle(tmp_path / "int8").manifest
    sample = synthetic_calibration(manifest, 2, seed=3).samples
    with Pipeline(tmp_path / "int8", "cpu", threads=1) as pipe:
        out = pipe.run({k: np.concatenate([s[k] for s in sample]) for k in sample[0]})
    assert out["logits"].shape[0] == 2


@pytest.mark.parametrize("recipe", ["static", "dynamic", "fp16"])
def test_forced_recipe(recipe: str, exported: tuple[str, Path], tmp_path: Path) -> None:
    name, bundle = exported
    given = _recipe(name, bundle) if recipe == "fp16" else recipe
    report = _quantize(bundle, tmp_path / recipe, given)
    load_bundle(tmp_path / recipe)
    expected = {"static": "int8", "dynamic": "int8"}.get(recipe)
    for c in report.components:
        assert c.precision == (expected or ("fp16" if given[c.name] == "fp16" else "int8")), c.name
    _check_bounds(report)
