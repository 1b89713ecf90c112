"""``benchmarks/peers.py``'s verdict against the fastest equal-accuracy peer: an interval that spans 1× is no verdict."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from peers import equal_accuracy


def _variant(name: str, kind: str, p50: float, top1: float) -> dict[str, Any]:
    return {
        "name": name,
        "kind": kind,
        "batches": [{"latency": {"p50_ms": p50, "min_ms": p50 * 0.8}}],
        "agreement": [{"metric": "top1", "value": top1}],
    }


@pytest.mark.parametrize(
    ("interval", "verdict"),
    [
        ((0.90, 1.08), "is level with it: 0.98×, 95% interval 0.90–1.08× over the rounds, which spans 1×"),
        ((0.93, 0.99), "is **slower**: 0.98×, 95% interval 0.93–0.99× over the rounds"),
        (None, "is **slower** by 0.98× (below 1.25×)"),
    ],
)
def test_p50_verdict_follows_the_interval(interval: tuple[float, float] | None, verdict: str) -> None:
    report = {
        "subject": "split INT8",
        "variants": [
            _variant("split INT8", "split", 5.0, 0.995),
            _variant("ort-int8", "peer", 4.0, 0.50),  # faster, but not equally accurate: not the one compared
            _variant("openvino-int8-keepfe", "peer", 4.9, 0.99),
        ],
        "comparisons": [
            {"baseline": "openvino-int8-keepfe", "batch": 1, "speedup": 0.98, "speedup_interval": interval}
        ],
    }
    lines = equal_accuracy(report)
    p50 = next(line for line in lines if line.startswith("- p50"))
    assert "`openvino-int8-keepfe` (99.0%) 4.90 ms" in p50
    assert p50.endswith(verdict)


def test_the_warm_runs_get_a_verdict_of_their_own() -> None:
    def variant(name: str, kind: str, p50: float, warm: float) -> dict[str, Any]:
        return {**_variant(name, kind, p50, 1.0), "batches": [{**_variant(name, kind, p50, 1.0)["batches"][0],
                                                                "warm_latency": {"p50_ms": warm}}]}  # fmt: skip

    report = {
        "subject": "split INT8",
        "variants": [variant("split INT8", "split", 5.0, 2.0), variant("openvino-int8-keepfe", "peer", 4.0, 3.0)],
        "comparisons": [],
    }
    warm = next(line for line in equal_accuracy(report) if line.startswith("- warm p50"))
    assert warm.endswith("3.00 ms; split INT8 is faster by 1.50× (meets ≥ 1.25×)")


def test_a_subject_below_equal_accuracy_is_said_to_be() -> None:
    report = {
        "subject": "split INT8",
        "variants": [_variant("split INT8", "split", 5.0, 0.98), _variant("openvino-fp32", "peer", 6.0, 1.0)],
        "comparisons": [],
    }
    lines = equal_accuracy(report)
    assert "- split INT8 itself is below it (98.0%): what follows is not an equal-accuracy comparison" in lines
    assert "- split INT8 itself" not in "\n".join(equal_accuracy({**report, "variants": [
        _variant("split INT8", "split", 5.0, 0.99), _variant("openvino-fp32", "peer", 6.0, 1.0)]}))  # fmt: skip
