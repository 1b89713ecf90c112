"""Fixtures of the mobile tests: the tiny bundle packaged for each target, and ORT-format runs."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from mmedge.bundle import RAW_INPUTS, Bundle
from mmedge.mobile.api import MobileReport, package_mobile


@pytest.fixture
def packaged(tiny_bundle: Path, tmp_path: Path) -> Callable[..., tuple[Path, MobileReport]]:
    """``packaged(target, **options)`` → (mobile bundle dir, report) of the tiny bundle."""

    def make(target: str = "android", **options: object) -> tuple[Path, MobileReport]:
        out = tmp_path / f"mobile-{target}"
        return out, package_mobile(tiny_bundle, out, target=target, **options)

    return make


Outputs = dict[str, dict[str, np.ndarray]]


@pytest.fixture
def run_components() -> Callable[[Bundle, Mapping[str, np.ndarray]], Outputs]:
    """``run_components(bundle, raw inputs)``: every component's outputs, running each file (ONNX
    or ORT format) directly with onnxruntime, in wiring order."""
    return _run_components


def _run_components(bundle: Bundle, inputs: Mapping[str, np.ndarray]) -> Outputs:
    values: dict[str, dict[str, np.ndarray]] = {}
    pending = list(bundle.manifest.components)
    while pending:
        for c in list(pending):
            edges = bundle.manifest.edges_into(c.name)
            if any(e.source != RAW_INPUTS and e.source not in values for e in edges):
                continue
            feeds = {e.input: inputs[e.output] if e.source == RAW_INPUTS else values[e.source][e.output] for e in edges}
            session = ort.InferenceSession(bundle.component_path(c.name), providers=["CPUExecutionProvider"])
            names = [o.name for o in session.get_outputs()]
            values[c.name] = dict(zip(names, session.run(names, feeds), strict=True))
            pending.remove(c)
    return values
