"""quantize_bundle on the tiny bundle: a valid INT8 bundle, its records and report, recipes, refusals."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest

from mmedge.bundle import load_bundle, staged_bundle, write_manifest
from mmedge.errors import BundleError, QuantizationError
from mmedge.quantize import QuantizationReport, Recipe, quantize_bundle
from mmedge.quantize.report import REPORT_JSON, REPORT_MD

Samples = Callable[..., list[dict[str, np.ndarray]]]


def _ops(path: Path) -> Counter:
    return Counter(n.op_type for n in onnx.load(str(path)).graph.node)


@pytest.fixture(scope="module")
def quantized(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, QuantizationReport, list[str]]:
    """The tiny bundle quantized once with the auto recipes (shared: the checks only read it)."""
    from tinybundle import build_tiny_bundle, tiny_inputs

    root = tmp_path_factory.mktemp("quantized")
    src = build_tiny_bundle(root / "fp32")
    messages: list[str] = []
    samples = [tiny_inputs(batch=2, seed=i) for i in range(40)]
    report = quantize_bundle(  # speed check off: the recipe rules, on any CPU (the check: test_speed.py)
        src, root / "int8", calibration=samples, progress=messages.append, speed_check=False
    )
    return src, root / "int8", report, messages


def test_int8_bundle_is_valid_and_records_precision(quantized: tuple) -> None:
    _, out, report, _ = quantized
    bundle = load_bundle(out)  # hashes, files, graph IO incl. dynamic dims
    precision = {c.name: c.precision for c in bundle.manifest.components}
    assert precision == dict.fromkeys(["text_encoder", "image_encoder", "audio_encoder", "fusion_head"], "int8")
    modes = {c.name: c.quantization["recipe"]["mode"] for c in bundle.manifest.components}
    assert modes == {
        "text_encoder": "dynamic",
        "image_encoder": "static",
        "audio_encoder": "static",
        "fusion_head": "static",
    }
    head = bundle.manifest.component("fusion_head")
    assert head.quantization["calibration_samples"] == 32
    assert head.quantization["method"] == "minmax"
    assert "quant_pre_process" in head.optimizations
    (v,) = head.verification
    assert (v.stage, v.reference, v.passed, v.dynamic_dims_ok) == ("quantize", "fp32-bundle", True, True)
    assert report.met
    assert report.agreement >= 0.99


def test_static_components_are_qdq_with_per_channel_weights(quantized: tuple) -> None:
    _, out, _, _ = quantized
    image = onnx.load(str(out / "image_encoder.onnx"))
    # input, Relu output (Relu folded into the QDQ), pool output, features: a Q/DQ pair each;
    # the weight and the bias: one DequantizeLinear each.
    assert _ops(out / "image_encoder.onnx") == Counter(
        {"DequantizeLinear": 6, "QuantizeLinear": 4, "Conv": 1, "GlobalAveragePool": 1, "Flatten": 1}
    )
    weight_scales = [i for i in image.graph.initializer if i.name.startswith("w") and i.name.endswith("scale")]
    assert [tuple(s.dims) for s in weight_scales] == [(4,)]  # one scale per output channel
    assert _ops(out / "fusion_head.onnx")["QuantizeLinear"] == 5  # 3 features, concat, logits
    assert _ops(out / "text_encoder.onnx")["DequantizeLinear"] == 1  # the INT8 embedding table


def test_chained_calibration_is_recorded(quantized: tuple) -> None:
    _, _, report, _ = quantized
    by_name = {c.name: c for c in report.components}
    assert by_name["image_encoder"].calibrated_on == "raw inputs"
    assert by_name["fusion_head"].calibrated_on == (
        "outputs of audio_encoder (quantized), image_encoder (quantized), text_encoder (quantized)"
    )
    assert by_name["text_encoder"].calibrated_on == ""  # dynamic: no calibration


def test_report_files_are_assets_and_match_the_report(quantized: tuple) -> None:
    src, out, report, _ = quantized
    bundle = load_bundle(out)
    assert {a.file for a in bundle.manifest.assets} == {"vocab.txt", REPORT_JSON, REPORT_MD}
    written = json.loads((out / REPORT_JSON).read_text())
    assert written == json.loads(json.dumps(report.to_dict()))
    assert written["holdout_samples"] == 8
    assert "held out and not calibrated on" in written["holdout_source"]
    assert written["size_before"] == sum(c.size_bytes for c in load_bundle(src).manifest.components)
    assert written["size_after"] == sum(c.size_bytes for c in bundle.manifest.components)
    md = (out / REPORT_MD).read_text()
    for heading in ("# Quantization report: tiny", "## Components", "## Component outputs vs FP32", "## End to end"):
        assert heading in md


def test_report_compares_every_component_output(quantized: tuple) -> None:
    _, _, report, _ = quantized
    for c in report.components:
        (t,) = c.outputs
        assert t.cosine > 0.95, c.name
        assert t.sqnr_db > 10, c.name
    (logits,) = report.outputs
    assert (logits.metric, logits.kind) == ("top1", "logits")
    assert logits.agreement == report.agreement


def test_progress_is_reported(quantized: tuple) -> None:
    *_, messages = quantized
    assert messages[0] == "reading calibration samples"
    assert "quantizing components (chained calibration)" in messages
    assert any(m.startswith("writing ") for m in messages)


def test_quantizing_an_int8_bundle_again_fails(quantized: tuple, tmp_path: Path, tiny_samples: Samples) -> None:
    _, out, _, _ = quantized
    with pytest.raises(QuantizationError, match=r"is already quantized \(text_encoder: already int8.*export"):
        quantize_bundle(out, tmp_path / "again", calibration=tiny_samples(4))


def test_graph_with_quantization_ops_counts_as_quantized(
    quantized: tuple, marked_bundle: Callable, tmp_path: Path, tiny_samples: Samples
) -> None:
    _, out, _, _ = quantized
    fp32 = marked_bundle("fp32")
    bundle = load_bundle(fp32)
    mixed = tmp_path / "mixed"
    with staged_bundle(mixed) as stage:
        for c in bundle.manifest.components:
            shutil.copyfile((out if c.name == "image_encoder" else fp32) / c.file, stage / c.file)
        shutil.copyfile(fp32 / "vocab.txt", stage / "vocab.txt")
        write_manifest(stage, bundle.manifest)
    report = quantize_bundle(mixed, tmp_path / "out", calibration=tiny_samples(10))
    image = next(c for c in report.components if c.name == "image_encoder")
    assert image.recipe == {}
    assert "graph already has quantization ops (DequantizeLinear, QuantizeLinear)" in image.reason
    assert (tmp_path / "out" / "image_encoder.onnx").read_bytes() == (out / "image_encoder.onnx").read_bytes()


def test_manifest_marked_int8_is_refused(marked_bundle: Callable, tmp_path: Path, tiny_samples: Samples) -> None:
    with pytest.raises(QuantizationError, match="already quantized"):
        quantize_bundle(marked_bundle("int8"), tmp_path / "out", calibration=tiny_samples(4))


def test_missing_component_file_is_a_bundle_error(tiny_bundle: Path, tmp_path: Path, tiny_samples: Samples) -> None:
    (tiny_bundle / "audio_encoder.onnx").unlink()
    with pytest.raises(BundleError, match=r"audio_encoder\.onnx is missing"):
        quantize_bundle(tiny_bundle, tmp_path / "out", calibration=tiny_samples(4))


def test_per_component_recipes(tiny_bundle: Path, tmp_path: Path, tiny_samples: Samples) -> None:
    report = quantize_bundle(
        tiny_bundle,
        tmp_path / "out",
        calibration=tiny_samples(10),
        recipe={
            "text_encoder": "fp32",
            "image_encoder": Recipe("static", exclude_op_types=("Conv",)),
            "audio_encoder": Recipe("dynamic", exclude_op_types=("Conv",)),
            "fusion_head": "dynamic",
        },
    )
    by_name = {c.name: c for c in report.components}
    out = load_bundle(tmp_path / "out")
    precision = {c.name: c.precision for c in out.manifest.components}
    assert precision == {
        "text_encoder": "fp32",
        "image_encoder": "int8",
        "audio_encoder": "fp32",
        "fusion_head": "int8",
    }
    # fp32: the source file, byte for byte, with the recipe recorded
    assert (tmp_path / "out" / "text_encoder.onnx").read_bytes() == (tiny_bundle / "text_encoder.onnx").read_bytes()
    assert out.manifest.component("text_encoder").quantization["recipe"]["mode"] == "fp32"
    # an excluded op type keeps its node in float: the Conv still reads the FP32 weight
    assert [(e.name, e.reason) for e in by_name["image_encoder"].excluded] == [
        ("image_encoder/Conv_0", "op type Conv kept FP32")
    ]
    conv = next(n for n in onnx.load(str(tmp_path / "out" / "image_encoder.onnx")).graph.node if n.op_type == "Conv")
    assert conv.input[:2] == ["image", "w"]
    # dynamic INT8 with its only Conv excluded has nothing left: FP32 file, and the report says why
    assert "stays FP32" in by_name["audio_encoder"].reason
    assert (tmp_path / "out" / "audio_encoder.onnx").read_bytes() == (tiny_bundle / "audio_encoder.onnx").read_bytes()
    assert _ops(tmp_path / "out" / "fusion_head.onnx")["MatMulInteger"] == 1  # dynamic Gemm


def test_fp16_recipe_keeps_float32_io(tiny_bundle: Path, tmp_path: Path, tiny_samples: Samples) -> None:
    report = quantize_bundle(tiny_bundle, tmp_path / "out", calibration=tiny_samples(6), recipe="fp16")
    out = load_bundle(tmp_path / "out")  # IO dtypes still match the (float32) manifest
    assert {c.precision for c in out.manifest.components} == {"fp16"}
    assert _ops(tmp_path / "out" / "image_encoder.onnx")["Cast"] >= 2
    assert all(t.cosine > 0.999 for c in report.components for t in c.outputs)


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_calibration_methods(method: str, tiny_bundle: Path, tmp_path: Path, tiny_samples: Samples) -> None:
    report = quantize_bundle(
        tiny_bundle,
        tmp_path / "out",
        calibration=tiny_samples(20),
        method=method,
        max_fallback_rounds=0,
        min_agreement=0.0,
    )
    assert report.method == method
    assert load_bundle(tmp_path / "out").manifest.component("image_encoder").quantization["method"] == method
    assert all(t.cosine > 0.9 for c in report.components for t in c.outputs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        pytest.param({"method": "kl"}, "method 'kl' is not one of", id="method"),
        pytest.param({"min_agreement": 99.0}, r"min_agreement must be a fraction", id="agreement-percent"),
        pytest.param({"max_fallback_rounds": -1}, "max_fallback_rounds must be >= 0", id="rounds"),
        pytest.param(
            {"recipe": {"image_encoder": Recipe("static", exclude_nodes=("nope",))}},
            r"excludes nodes \['nope'\]",
            id="unknown-node",
        ),
    ],
)
def test_bad_options(kwargs: dict, match: str, tiny_bundle: Path, tmp_path: Path, tiny_samples: Samples) -> None:
    with pytest.raises(QuantizationError, match=match):
        quantize_bundle(tiny_bundle, tmp_path / "out", calibration=tiny_samples(4), **kwargs)
    assert not (tmp_path / "out").exists()


def test_recipe_for_an_already_quantized_component_is_refused(
    quantized: tuple, tmp_path: Path, tiny_samples: Samples
) -> None:
    _, out, _, _ = quantized
    with pytest.raises(QuantizationError, match="already"):
        quantize_bundle(out, tmp_path / "again", calibration=tiny_samples(4), recipe={"image_encoder": "static"})


def test_labels_add_task_accuracy(tiny_bundle: Path, tmp_path: Path, tiny_samples: Samples) -> None:
    held = tiny_samples(5, seed=7)
    labels = np.arange(10) % 3
    report = quantize_bundle(
        tiny_bundle, tmp_path / "out", calibration=tiny_samples(12), holdout=held, labels=labels, min_agreement=0.0
    )
    (logits,) = report.outputs
    assert 0.0 <= logits.fp32_accuracy <= 1.0
    assert 0.0 <= logits.quantized_accuracy <= 1.0
    assert report.holdout_samples == 5
    with pytest.raises(QuantizationError, match="labels has 3 entries but the held-out samples give 10 predictions"):
        quantize_bundle(tiny_bundle, tmp_path / "out2", calibration=tiny_samples(12), holdout=held, labels=labels[:3])
