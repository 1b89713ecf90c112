"""``mmedge quantize`` through ``mmedge.cli.main``: JSON, human output, recipes, errors, warnings."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from mmedge.bundle import load_bundle
from mmedge.cli import main
from mmedge.errors import QuantizationError
from mmedge.quantize.cli import parse_recipe

Samples = Callable[..., list[dict[str, np.ndarray]]]


@pytest.fixture
def npz_dir(tmp_path: Path, tiny_samples: Samples) -> Path:
    folder = tmp_path / "calib"
    folder.mkdir()
    for i, s in enumerate(tiny_samples(12)):
        np.savez(folder / f"{i:03d}.npz", **s)
    return folder


def test_json_report_on_stdout(tiny_bundle: Path, npz_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["quantize", str(tiny_bundle), "--out", str(tmp_path / "out"), "--calibration", str(npz_dir)]
    rc = main([*args, "--json", "--no-speed-check"])  # which components stay INT8 must not depend on timing
    out = capsys.readouterr().out
    assert rc == 0
    report = json.loads(out)
    assert report["model"] == "tiny"
    assert report["calibration_samples"] == 10  # 2 of the 12 held out
    assert {c["name"]: c["precision"] for c in report["components"]}["image_encoder"] == "int8"
    load_bundle(tmp_path / "out")


def test_human_output_keeps_stdout_clean(
    tiny_bundle: Path, npz_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    # entropy calibration: onnxruntime's histogram calibrators print progress on stdout
    args = ["quantize", str(tiny_bundle), "--out", str(tmp_path / "out"), "--calibration", str(npz_dir)]
    recipe = ["--recipe", "text_encoder=fp32,fusion_head=dynamic", "--no-speed-check"]
    rc = main([*args, "--method", "entropy", *recipe, "--min-agreement", "0"])
    captured = capsys.readouterr()
    assert rc == 0
    assert captured.out == ""
    assert "Components" in captured.err
    assert "quantization_report.md" in captured.err
    precision = {c.name: c.precision for c in load_bundle(tmp_path / "out").manifest.components}
    assert precision == {
        "text_encoder": "fp32",
        "image_encoder": "int8",
        "audio_encoder": "int8",
        "fusion_head": "int8",
    }


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        pytest.param(
            [],
            "model 'tiny' (there is for ['CaptionNet', 'ResNetBertNet', 'TextImageNet', 'TriModalNet']); "
            "pass calibration samples: `--calibration samples.jsonl`",
            id="synthetic-for-a-non-reference-model",
        ),
        pytest.param(["--calibration", "missing"], "calibration directory missing does not exist", id="missing-folder"),
        pytest.param(
            ["--calibration", "CALIB", "--recipe", "head:static"],
            "recipe for 'text_encoder' is 'head:static'",
            id="bad-recipe",
        ),
        pytest.param(
            ["--calibration", "CALIB", "--recipe", "nope=static"],
            "unknown components ['nope']",
            id="unknown-component",
        ),
    ],
)
def test_errors_are_one_line(
    extra: list[str], message: str, tiny_bundle: Path, npz_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    extra = [str(npz_dir) if a == "CALIB" else a for a in extra]
    rc = main(["quantize", str(tiny_bundle), "--out", str(npz_dir.parent / "out"), *extra])
    err = capsys.readouterr().err
    assert rc == 1
    assert err.startswith("ERROR ")
    assert message in err
    assert "Traceback" not in err


def test_missed_target_warns_and_strict_fails(
    planted_bundle: Path, npz_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    args = ["quantize", str(planted_bundle), "--calibration", str(npz_dir), "--max-rounds", "0", "--no-speed-check"]
    assert main([*args, "--out", str(tmp_path / "warned")]) == 0
    assert "WARNING quantized bundle agrees with FP32" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "strict"), "--strict"]) == 1
    assert "ERROR quantized bundle agrees with FP32" in capsys.readouterr().err
    assert not (tmp_path / "strict").exists()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("auto", "auto", id="auto"),
        pytest.param("static", "static", id="mode"),
        pytest.param("a=static, b=dynamic", {"a": "static", "b": "dynamic"}, id="per-component"),
    ],
)
def test_parse_recipe(text: str, expected: object) -> None:
    assert parse_recipe(text) == expected


def test_parse_recipe_rejects_half_pairs() -> None:
    with pytest.raises(QuantizationError, match="is not COMPONENT=MODE"):
        parse_recipe("a=static,b=")
