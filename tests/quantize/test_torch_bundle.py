"""A torch-exported conv + LSTM + MLP bundle: auto recipes, agreement, size, Pipeline, dynamic axes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest

from mmedge.bundle import load_bundle
from mmedge.errors import QuantizationError
from mmedge.quantize import QuantizationReport, quantize_bundle
from mmedge.runtime import Pipeline

Samples = Callable[[int, int], list[dict[str, np.ndarray]]]


@pytest.fixture(scope="module")
def quantized(
    torch_bundle: Path, torch_samples: Samples, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, QuantizationReport]:
    out = tmp_path_factory.mktemp("torch-int8") / "int8"
    report = quantize_bundle(
        torch_bundle,
        out,
        calibration=torch_samples(64, 0),
        holdout=torch_samples(200, 1),
        speed_check=False,  # the recipe rules and the fallback, on any CPU (the speed check: test_speed.py)
    )
    return out, report


def _ops(path: Path) -> Counter:
    return Counter(n.op_type for n in onnx.load(str(path)).graph.node)


def test_auto_recipes_meet_the_agreement_target(quantized: tuple[Path, QuantizationReport]) -> None:
    out, report = quantized
    assert {c.name: c.recipe["mode"] for c in report.components} == {
        "text_encoder": "dynamic",
        "image_encoder": "static",
        "fusion_head": "static",
    }
    # Untrained logits are close together: INT8 flips about 2 of 200 predictions (on this CPU kind
    # or that: the kernels round differently); the fallback keeps tensors FP32 until 99% agree.
    assert report.met
    assert report.agreement >= 0.99
    if report.fallback:
        assert report.fallback[0].agreement_before < 0.99
        assert report.fallback[-1].agreement_after == report.agreement
    excluded = {c.name: {e.name: e.reason for e in c.excluded} for c in report.components}
    for r in report.fallback:
        assert all(excluded[r.component][n].startswith(f"fallback round {r.index}:") for n in r.nodes)
    lstm_kept = "/lstm/LSTM" in excluded["text_encoder"]
    assert _ops(out / "text.onnx")["DynamicQuantizeLSTM"] == (0 if lstm_kept else 1)
    image = _ops(out / "image.onnx")
    assert image["Conv"] == 2  # BatchNorm folded into the first Conv by quant_pre_process
    assert "BatchNormalization" not in image
    assert image["QuantizeLinear"] >= 3


def test_sizes_shrink(quantized: tuple[Path, QuantizationReport]) -> None:
    _, report = quantized
    image = next(c for c in report.components if c.name == "image_encoder")
    assert image.size_after <= 0.37 * image.size_before  # the first conv (27 values per output) stays FP32
    assert report.size_after < 0.7 * report.size_before  # the first conv, and what the fallback keeps, stay FP32


def test_int8_bundle_runs_in_pipeline_with_other_sequence_lengths(
    quantized: tuple[Path, QuantizationReport], torch_bundle: Path
) -> None:
    out, _ = quantized
    for seq in (3, 12, 20):  # dynamic axis kept: shorter and longer than at export
        rng = np.random.default_rng(seq)
        inputs = {
            "text": rng.integers(1, 40, (4, seq)).astype(np.int64),
            "image": rng.standard_normal((4, 3, 16, 16)).astype(np.float32),
        }
        with Pipeline(torch_bundle, "cpu", threads=1) as fp32, Pipeline(out, "cpu", threads=1) as int8:
            want, got = fp32.run(inputs)["logits"], int8.run(inputs)["logits"]
        assert got.shape == want.shape == (4, 5)
        cosine = np.sum(want * got, axis=1) / (np.linalg.norm(want, axis=1) * np.linalg.norm(got, axis=1))
        assert cosine.min() > 0.99
    assert load_bundle(out).manifest.component("text_encoder").inputs[0].shape == ("batch", "seq")


def test_fp16_is_refused_for_the_lstm_encoder(torch_bundle: Path, tmp_path: Path, torch_samples: Samples) -> None:
    with pytest.raises(
        QuantizationError, match=r"fp16 is not supported for 'text_encoder': it has LSTM.*text_encoder=dynamic"
    ):
        quantize_bundle(torch_bundle, tmp_path / "out", calibration=torch_samples(4, 0), recipe="fp16")
    report = quantize_bundle(
        torch_bundle,
        tmp_path / "mixed",
        calibration=torch_samples(8, 0),
        recipe={"text_encoder": "dynamic", "image_encoder": "fp16", "fusion_head": "fp16"},
        min_agreement=0.0,
    )
    assert [c.precision for c in report.components] == ["int8", "fp16", "fp16"]
