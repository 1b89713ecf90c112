"""`mmedge inspect`: people get tables, machines get the manifest as JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmedge.cli import main


def test_inspect_json_lists_components(tiny_bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(tiny_bundle), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [c["name"] for c in data["components"]] == ["text_encoder", "image_encoder", "audio_encoder", "fusion_head"]
    assert data["total_bytes"] == sum(c["size_bytes"] for c in data["components"]) + data["assets"][0]["size_bytes"]


def test_inspect_table_shows_shapes_and_hashes(tiny_bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(tiny_bundle)]) == 0
    err = capsys.readouterr().err
    assert "[batch, seq]" in err
    assert "fusion_head" in err


def test_inspect_tampered_bundle_prints_error(tiny_bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tiny_bundle / "image_encoder.onnx").write_bytes(b"x")
    assert main(["inspect", str(tiny_bundle)]) == 1
    assert capsys.readouterr().err.startswith("ERROR bundle")
