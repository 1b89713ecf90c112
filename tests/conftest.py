"""Fixtures shared by every test area."""

from __future__ import annotations

from pathlib import Path

import pytest
from tinybundle import build_tiny_bundle


@pytest.fixture
def tiny_bundle(tmp_path: Path) -> Path:
    """A fresh tiny tri-modal FP32 bundle (pure onnx.helper, no torch) in a temp dir."""
    return build_tiny_bundle(tmp_path / "tiny")
