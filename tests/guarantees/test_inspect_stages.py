"""The manifest keeps one verification per component per stage, and `mmedge inspect` shows them."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
from tinybundle import tiny_inputs

from mmedge.bundle import Verification, load_bundle, staged_bundle, write_manifest
from mmedge.cli import main
from mmedge.console import console


def test_quantize_then_mobile_record_a_check_each_and_inspect_lists_them(
    tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from mmedge.mobile import package_mobile
    from mmedge.quantize import quantize_bundle

    quantize_bundle(
        tiny_bundle, tmp_path / "int8", calibration=[tiny_inputs(seed=i) for i in range(10)], speed_check=False
    )
    package_mobile(tmp_path / "int8", tmp_path / "mobile", target="generic")
    m = load_bundle(tmp_path / "mobile").manifest
    stages = {c.name: [(v.stage, v.reference, v.dynamic_dims_ok) for v in c.verification] for c in m.components}
    assert stages["text_encoder"] == [("quantize", "fp32-bundle", True), ("mobile", "source-bundle", True)]
    monkeypatch.setattr(console, "width", 250)  # one table row per line
    assert main(["inspect", str(tmp_path / "mobile")]) == 0
    err = capsys.readouterr().err
    assert "Verification per stage" in err
    assert "2x6 / 3x5" in err  # the text encoder's example and second shape


def test_inspect_explains_a_failed_check(tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bundle = load_bundle(tiny_bundle)
    lost = Verification("optimize", "unfused-onnx", False, 0.0, 0.0, 1e-4, 1e-3, (((2, 6),), ((3, 5),)), False, "boom")
    components = tuple(
        dataclasses.replace(c, verification=(lost,)) if c.name == "text_encoder" else c
        for c in bundle.manifest.components
    )
    with staged_bundle(tmp_path / "edited") as stage:
        for f in [*(c.file for c in components), *(a.file for a in bundle.manifest.assets)]:
            shutil.copyfile(tiny_bundle / f, stage / f)
        write_manifest(stage, dataclasses.replace(bundle.manifest, components=components))
    assert main(["inspect", str(tmp_path / "edited")]) == 0
    err = capsys.readouterr().err
    assert "LOST" in err
    assert "FAIL text_encoder after optimize (vs unfused-onnx): boom" in err
