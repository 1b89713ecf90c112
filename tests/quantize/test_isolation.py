"""Failure isolation: a step that fails on one component is retried without it or kept FP32; the
rest of the bundle is quantized, the report and the manifest say why, and ``strict`` raises instead."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mmedge.quantize._apply as apply_module
from mmedge.bundle import load_bundle
from mmedge.cli import main
from mmedge.errors import QuantizationError
from mmedge.quantize import quantize_bundle

Samples = Callable[..., list[dict[str, np.ndarray]]]
NO_PRE_PROCESS = "quantized without quant_pre_process"
NO_SYMBOLIC_SHAPES = "pre-processed without symbolic shape inference"


def _quantize(bundle: Path, out: Path, samples: Samples, **options: Any):
    return quantize_bundle(
        bundle, out, calibration=samples(12), holdout=samples(6, seed=1), speed_check=False, **options
    )


def _fail_for(component: str, real: Callable[..., Any], error: Exception) -> Callable[..., Any]:
    """``real``, except that it raises ``error`` when any argument names ``component``'s file."""

    def step(*args: Any, **kwargs: Any) -> Any:
        if any(Path(str(a)).name.startswith(f"{component}.") for a in args if isinstance(a, str | Path)):
            raise error
        return real(*args, **kwargs)

    return step


def test_pre_processing_failure_quantizes_that_component_without_it(
    tiny_bundle: Path, tmp_path: Path, tiny_samples: Samples, monkeypatch: pytest.MonkeyPatch
) -> None:
    from onnxruntime.quantization import shape_inference

    real = shape_inference.quant_pre_process
    monkeypatch.setattr(shape_inference, "quant_pre_process", _fail_for("image_encoder", real, KeyError("")))
    report = _quantize(tiny_bundle, tmp_path / "out", tiny_samples)
    by_name = {c.name: c for c in report.components}
    image = by_name["image_encoder"]
    assert image.precision == "int8"  # quantized all the same, from the named graph
    ((failure,),) = {name: c.failures for name, c in by_name.items() if c.failures}.values()
    assert failure.step == "pre-processing"
    assert failure.error == "pre-processing component 'image_encoder' (onnxruntime quant_pre_process): KeyError: ''"
    assert failure.action.startswith(NO_PRE_PROCESS)
    assert NO_PRE_PROCESS in image.reason
    manifest = load_bundle(tmp_path / "out").manifest
    assert [f["step"] for f in manifest.component("image_encoder").quantization["failures"]] == ["pre-processing"]
    assert "quant_pre_process" not in manifest.component("image_encoder").optimizations
    assert "quant_pre_process" in manifest.component("fusion_head").optimizations
    assert manifest.component("fusion_head").quantization["failures"] == []
    assert "Steps that failed" in (tmp_path / "out" / "quantization_report.md").read_text(encoding="utf-8")


def test_calibration_failure_retries_as_dynamic(
    tiny_bundle: Path, tmp_path: Path, tiny_samples: Samples, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        apply_module, "_calibrate", _fail_for("fusion_head", apply_module._calibrate, RuntimeError("no ranges"))
    )
    report = _quantize(tiny_bundle, tmp_path / "out", tiny_samples)
    head = next(c for c in report.components if c.name == "fusion_head")
    assert (head.precision, head.recipe["mode"]) == ("int8", "dynamic")
    assert [(f.step, f.error) for f in head.failures] == [
        ("calibration", "calibrating 'fusion_head' (minmax ranges, onnxruntime calibrator): RuntimeError: no ranges")
    ]
    assert "needs no calibration" in head.failures[0].action
    assert "static calibration failed" in head.reason
    assert next(c for c in report.components if c.name == "image_encoder").recipe["mode"] == "static"
    record = load_bundle(tmp_path / "out").manifest.component("fusion_head").quantization
    assert record["recipe"]["mode"] == "dynamic"
    assert record["failures"][0]["step"] == "calibration"


@pytest.mark.parametrize(
    "case",
    [
        pytest.param((("_static",), ["quantization"]), id="static-quantizer"),
        pytest.param((("_calibrate", "_dynamic"), ["calibration", "quantization"]), id="calibration-then-dynamic"),
    ],
)
def test_quantizer_failure_keeps_the_component_fp32(
    case: tuple[tuple[str, ...], list[str]],
    tiny_bundle: Path,
    tmp_path: Path,
    tiny_samples: Samples,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    patched, steps = case
    for name in patched:
        real = getattr(apply_module, name)
        monkeypatch.setattr(apply_module, name, _fail_for("fusion_head", real, ValueError(f"{name} broke")))
    report = _quantize(tiny_bundle, tmp_path / "out", tiny_samples)
    by_name = {c.name: c for c in report.components}
    head = by_name["fusion_head"]
    assert head.precision == "fp32"
    assert [f.step for f in head.failures] == steps
    assert head.failures[-1].action == "kept FP32"
    assert head.reason.startswith("quantization failed (quantizing 'fusion_head' (")
    assert f"ValueError: {patched[-1]} broke" in head.reason
    assert head.op_counts == {}
    assert by_name["image_encoder"].precision == "int8"  # the rest of the bundle is quantized
    manifest = load_bundle(tmp_path / "out").manifest
    assert manifest.component("fusion_head").precision == "fp32"
    assert [f["step"] for f in manifest.component("fusion_head").quantization["failures"]] == steps


def test_a_quantized_graph_that_does_not_run_is_kept_fp32(
    tiny_bundle: Path, tmp_path: Path, tiny_samples: Samples, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mmedge.quantize._samples import SampleExecutor

    real = SampleExecutor.run

    def run(self: SampleExecutor, component: str, path: Path, feed: dict) -> dict:
        if component == "fusion_head" and path.parent.name.startswith("mmedge-quantize-"):
            raise QuantizationError(f"running component {component!r} ({path.name}): Fail: no kernel")
        return real(self, component, path, feed)

    monkeypatch.setattr(SampleExecutor, "run", run)
    report = _quantize(tiny_bundle, tmp_path / "out", tiny_samples)
    head = next(c for c in report.components if c.name == "fusion_head")
    assert head.precision == "fp32"
    ((step, error),) = [(f.step, f.error) for f in head.failures]
    assert step == "quantization"
    assert error.startswith("quantizing 'fusion_head': the quantized graph does not run: running component")


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(("shape_inference", "quant_pre_process", "pre-processing component 'image_encoder'"), id="pre"),
        pytest.param(("apply", "_calibrate", "calibrating 'fusion_head'"), id="calibrate"),
        pytest.param(("apply", "_static", "quantizing 'fusion_head' \\(static\\)"), id="quantize"),
    ],
)
def test_strict_raises_instead_and_writes_nothing(
    case: tuple[str, str, str],
    tiny_bundle: Path,
    tmp_path: Path,
    tiny_samples: Samples,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from onnxruntime.quantization import shape_inference

    target, name, match = case
    module = shape_inference if target == "shape_inference" else apply_module
    component = "image_encoder" if target == "shape_inference" else "fusion_head"
    real = getattr(module, name)
    monkeypatch.setattr(module, name, _fail_for(component, real, RuntimeError("boom")))
    with pytest.raises(QuantizationError, match=f"{match}.*RuntimeError: boom. strict=True makes this an error") as e:
        _quantize(tiny_bundle, tmp_path / "out", tiny_samples, strict=True)
    assert f"recipe={{{component!r}: 'fp32'}}" in str(e.value)
    assert not (tmp_path / "out").exists()


def test_strict_pre_processing_is_skipped_for_a_component_kept_fp32(
    tiny_bundle: Path, tmp_path: Path, tiny_samples: Samples, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fix the strict error gives (recipe fp32) works: nothing reads that component's prepared graph."""
    from onnxruntime.quantization import shape_inference

    real = shape_inference.quant_pre_process
    monkeypatch.setattr(shape_inference, "quant_pre_process", _fail_for("image_encoder", real, KeyError("")))
    report = _quantize(tiny_bundle, tmp_path / "out", tiny_samples, strict=True, recipe={"image_encoder": "fp32"})
    image = next(c for c in report.components if c.name == "image_encoder")
    assert (image.precision, image.failures) == ("fp32", ())


# ---------------------------------------------------------------------------------------------
# a real model whose text encoder is an nn.EmbeddingBag (quant_pre_process raises KeyError: '')

VOCAB, SEQ, IMAGE, CLASSES = 100, 8, 32, 5


def _bag_model():
    import torch
    from torch import nn

    class ImageEncoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = nn.Sequential(
                nn.Conv2d(3, 16, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(16, 32, 3, padding=1),
                nn.ReLU(),
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(),
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.layers(x)

    class TextEncoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bag = nn.EmbeddingBag(VOCAB, 16, mode="mean")

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.bag(ids)

    class BagNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.image_encoder = ImageEncoder()
            self.text_encoder = TextEncoder()
            self.head = nn.Linear(48, CLASSES)

        def forward(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
            return self.head(torch.cat([self.image_encoder(image), self.text_encoder(text)], dim=1))

    torch.manual_seed(0)
    return BagNet().eval()


def _bag_samples(n: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [
        {
            "image": rng.standard_normal((2, 3, IMAGE, IMAGE)).astype(np.float32),
            "text": rng.integers(0, VOCAB, (2, SEQ)).astype(np.int64),
        }
        for _ in range(n)
    ]


@pytest.fixture(scope="module")
def bag_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from mmedge.export import export_model

    out = tmp_path_factory.mktemp("bag") / "fp32"
    example = {"image": torch.randn(2, 3, IMAGE, IMAGE), "text": torch.randint(0, VOCAB, (2, SEQ))}
    export_model(_bag_model(), example, out=out)
    return out


def test_embedding_bag_text_encoder_does_not_fail_the_bundle(bag_bundle: Path, tmp_path: Path) -> None:
    from mmedge.runtime import Pipeline

    out = tmp_path / "int8"
    report = quantize_bundle(
        bag_bundle,
        out,
        calibration=_bag_samples(12, seed=0),
        holdout=_bag_samples(6, seed=1),
        speed_check=False,
    )
    by_name = {c.name: c for c in report.components}
    assert by_name["image_encoder"].precision == "int8"
    assert by_name["image_encoder"].failures == ()
    text = by_name["text_encoder"]
    # symbolic shape inference cannot type the EmbeddingBag's sequence ops; pre-processed without it,
    # dynamic INT8 stores the table
    assert [(f.step, f.action.startswith(NO_SYMBOLIC_SHAPES)) for f in text.failures] == [
        ("symbolic shape inference", True)
    ]
    assert "KeyError" in text.failures[0].error
    assert NO_SYMBOLIC_SHAPES in text.reason
    assert (text.precision, text.recipe["mode"]) == ("int8", "dynamic")  # the embedding table stored as INT8
    manifest = load_bundle(out).manifest
    assert manifest.component("image_encoder").precision == "int8"
    assert manifest.component("text_encoder").quantization["failures"][0]["step"] == "symbolic shape inference"
    assert "quant_pre_process" in manifest.component("text_encoder").optimizations
    sample = _bag_samples(1, seed=2)[0]
    fp32 = Pipeline(bag_bundle).run(sample)
    int8 = Pipeline(out).run(sample)
    ((name, logits),) = int8.items()
    assert logits.shape == (2, CLASSES)
    np.testing.assert_allclose(logits, fp32[name], rtol=0.1, atol=0.1)


def test_cli_strict_reports_the_failing_step(bag_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "calib"
    folder.mkdir()
    for i, s in enumerate(_bag_samples(6, seed=0)):
        np.savez(folder / f"{i:03d}.npz", **s)
    args = ["quantize", str(bag_bundle), "--out", str(tmp_path / "out"), "--calibration", str(folder)]
    assert main([*args, "--no-speed-check", "--strict"]) != 0
    err = capsys.readouterr().err
    assert "pre-processing component 'text_encoder' (onnxruntime quant_pre_process): KeyError" in err
    assert "--recipe text_encoder=fp32" in err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()
    assert main([*args, "--no-speed-check"]) == 0
    assert "text_encoder: pre-processing component 'text_encoder'" in capsys.readouterr().err
