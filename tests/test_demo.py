"""`mmedge demo --quick`: the newcomer's first command, end to end as CI runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmedge.bundle import load_bundle
from mmedge.cli import main


@pytest.mark.slow
def test_quick_demo_writes_everything_and_int8_tracks_fp32(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)

    for name in ("checkpoint", "quantization_report", "bench_report", "bench_chart"):
        assert Path(summary["files"][name]).is_file(), name
    fp32 = load_bundle(out / "bundle-fp32").manifest
    int8 = load_bundle(out / "bundle-int8").manifest
    mobile = load_bundle(out / "bundle-mobile").manifest
    assert {c.precision for c in fp32.components} == {"fp32"}
    assert "int8" in {c.precision for c in int8.components}
    assert {c.format for c in mobile.components} == {"ort"}

    assert summary["fp32_accuracy"] > 0.5  # 8 classes: chance is 0.125
    assert abs(summary["int8_accuracy"] - summary["fp32_accuracy"]) <= 0.06
    assert summary["int8_agreement"] >= 0.9
    assert summary["size_int8"] <= 0.3 * summary["size_fp32"]
    assert summary["export_max_abs_error"] <= 1e-4
    assert len(summary["examples"]) == 4
    assert set(summary["speedups"]) == {"PyTorch eager FP32", "monolithic FP32", "split FP32"}
