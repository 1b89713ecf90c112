"""TriModalNet (small config) through export → INT8 → mobile.

Its torchaudio MelSpectrogram is swapped for the convolution front-end at export
(``audio_frontend="conv"``), so the audio encoder has no STFT; the report then states precisely
what still keeps each EP from the whole audio encoder. The mobile bundles run in ``Pipeline``
like their sources.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from tinymodels import TINY_CONFIGS

from mmedge.export import export_model
from mmedge.mobile.api import MobileReport, package_mobile
from mmedge.models import TriModalNet
from mmedge.quantize import quantize_bundle
from mmedge.runtime import Pipeline

pytestmark = pytest.mark.slow

# a user's model with torchaudio's MelSpectrogram (an STFT op in ONNX)
SMALL = dataclasses.replace(TINY_CONFIGS["TriModalNet"], audio_frontend="torchaudio")
STFT_OPS = {"ai.onnx:STFT", "ai.onnx:DFT", "ai.onnx:MelWeightMatrix"}


def _raw(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    samples = round(SMALL.sample_rate * SMALL.audio_seconds)
    return {
        "text": rng.integers(0, len(SMALL.vocab), (1, SMALL.max_text_length)).astype(np.int64),
        "image": rng.standard_normal((1, 3, SMALL.image_size, SMALL.image_size)).astype(np.float32),
        "audio": rng.uniform(-0.5, 0.5, (1, samples)).astype(np.float32),
    }


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("trimodal")
    torch.manual_seed(0)
    model = TriModalNet(SMALL).eval()
    export_model(model, model.example_inputs(), out=root / "fp32", audio_frontend="conv")
    quantize_bundle(root / "fp32", root / "int8", calibration=[_raw(i) for i in range(8)], min_agreement=0.0)
    return {"fp32": root / "fp32", "int8": root / "int8"}


@pytest.fixture(scope="module")
def android_int8(bundles: dict[str, Path]) -> tuple[Path, MobileReport]:
    out = bundles["int8"].parent / "int8-android"
    return out, package_mobile(bundles["int8"], out, target="android")


def _run(bundle: Path, inputs: dict) -> np.ndarray:
    with Pipeline(bundle, "cpu", threads=1) as pipe:
        return pipe.run(inputs)["logits"]


def test_int8_mobile_bundle_runs_in_pipeline_like_its_source(
    bundles: dict[str, Path], android_int8: tuple[Path, MobileReport]
) -> None:
    out, report = android_int8
    inputs = {**_raw(100), "text": ["a bright cat"]}
    want, got = _run(bundles["int8"], inputs), _run(out, inputs)
    # The .ort keeps float Q/DQ (what NNAPI takes); the source's CPU run fuses int8 kernels that
    # round differently: a few output quantization steps, which the report states per component.
    atol = 0.1 * float(np.abs(want).max())
    np.testing.assert_allclose(got, want, atol=atol, rtol=0)
    # The same top class, unless the source itself scores others within that difference of its best
    # (an untrained model's INT8 logits can tie exactly, as 0.3425 for two classes once did).
    assert got.argmax() in np.flatnonzero(want.ravel() >= want.max() - atol), (got, want)
    assert all(c.verification.passed and c.verification.max_abs_error <= 1e-4 for c in report.components)
    assert 0 <= report.component("fusion_head").difference_from_default <= atol


def test_fp32_mobile_bundle_matches_its_source(bundles: dict[str, Path]) -> None:
    out = bundles["fp32"].parent / "fp32-ios"
    package_mobile(bundles["fp32"], out, target="ios")
    inputs = _raw(7)
    np.testing.assert_allclose(_run(out, inputs), _run(bundles["fp32"], inputs), rtol=1e-4, atol=1e-5)


def test_conv_frontend_leaves_no_stft_and_the_report_says_what_remains(
    bundles: dict[str, Path], android_int8: tuple[Path, MobileReport]
) -> None:
    out = bundles["fp32"].parent / "fp32-generic"
    every_dim = {"batch": 1, "seq": SMALL.max_text_length, "samples": round(SMALL.sample_rate * SMALL.audio_seconds)}
    report = package_mobile(bundles["fp32"], out, target="generic", fixed_shapes=every_dim, optimization="basic")
    audio = report.component("audio_encoder")
    assert not STFT_OPS & set(audio.ops)
    assert not any("--audio-frontend" in b.fix for b in audio.blockers)
    eps = {e.ep: e for e in audio.eps}
    # NNAPI has a kernel for every op left; only caveats remain: the front-end's Conv1d (NNAPI
    # convolves in 2-D only) and its reflect padding (NNAPI pads with constants only).
    assert {u.op for u in eps["NNAPI"].unsupported} <= {"ai.onnx:Conv", "ai.onnx:Pad"}
    assert all(u.reason != "no kernel for this op" for u in eps["NNAPI"].unsupported)
    # CoreML (MLProgram) convolves in 1-D too; it lacks only kernels for Pad, Log and Flatten.
    assert {u.op for u in eps["CoreML"].unsupported} <= {"ai.onnx:Pad", "ai.onnx:Log", "ai.onnx:Flatten"}
    # XNNPACK takes convolutions, pools and matrix products, but only 2-D convolutions.
    conv = [u for u in eps["XNNPACK"].unsupported if u.op == "ai.onnx:Conv"]
    assert [u.reason for u in conv] == ["only 2-D Conv is supported; the input has rank 3"]
    # the same holds for the INT8 bundle's audio encoder packaged for android
    int8_audio = android_int8[1].component("audio_encoder")
    assert not STFT_OPS & set(int8_audio.ops)
