"""Accuracy-aware fallback: a planted sensitive node is found, kept FP32, and agreement recovers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from mmedge.bundle import load_bundle
from mmedge.errors import QuantizationError
from mmedge.quantize import AccuracyWarning, quantize_bundle

Samples = Callable[..., list[dict[str, np.ndarray]]]
PLANTED = "planted_outlier"
# The speed check is off: these tests are about the fallback, not about what the check makes of a
# head this small on the machine at hand.


def test_fallback_keeps_the_planted_node_fp32(planted_bundle: Path, tmp_path: Path, tiny_samples: Samples) -> None:
    report = quantize_bundle(
        planted_bundle,
        tmp_path / "out",
        speed_check=False,
        calibration=tiny_samples(24),
        holdout=tiny_samples(12, seed=1),
    )
    head = next(c for c in report.components if c.name == "fusion_head")
    kept = {e.name: e.reason for e in head.excluded}
    assert PLANTED in kept
    assert kept[PLANTED].startswith("fallback round 1: keeping tensor 'm' FP32")
    (first, *_) = report.fallback
    assert (first.component, first.tensor) == ("fusion_head", "m")
    assert set(first.nodes) == {PLANTED, "classifier"}  # producer and consumer of the damaged tensor
    assert first.agreement_before < 0.5
    assert report.met
    assert report.agreement >= 0.99
    record = load_bundle(tmp_path / "out").manifest.component("fusion_head").quantization
    assert PLANTED in record["excluded_nodes"]
    assert record["fallback_rounds"] == [first.index]


def test_without_fallback_the_planted_node_destroys_agreement(
    planted_bundle: Path, tmp_path: Path, tiny_samples: Samples
) -> None:
    with pytest.warns(AccuracyWarning, match=r"below min_agreement 99\.00%.*after 0 fallback rounds"):
        report = quantize_bundle(
            planted_bundle,
            tmp_path / "out",
            speed_check=False,
            calibration=tiny_samples(24),
            holdout=tiny_samples(12, seed=1),
            max_fallback_rounds=0,
        )
    assert not report.met
    assert report.agreement < 0.5
    assert report.fallback == ()
    assert "after 0 fallback rounds" in report.notes[-1]
    assert load_bundle(tmp_path / "out").manifest.component("fusion_head").precision == "int8"  # still written


def test_strict_refuses_to_write_a_bundle_that_misses_the_target(
    planted_bundle: Path, tmp_path: Path, tiny_samples: Samples
) -> None:
    with pytest.raises(QuantizationError, match="below min_agreement"):
        quantize_bundle(
            planted_bundle,
            tmp_path / "out",
            speed_check=False,
            calibration=tiny_samples(24),
            max_fallback_rounds=0,
            strict=True,
        )
    assert not (tmp_path / "out").exists()


def test_when_no_round_helps_the_damaging_component_is_kept_fp32(
    planted_bundle: Path, tmp_path: Path, tiny_samples: Samples, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("mmedge.quantize.api.fallback_round", lambda *_: (None, "no candidate helped"))
    report = quantize_bundle(
        planted_bundle,
        tmp_path / "out",
        speed_check=False,
        calibration=tiny_samples(24),
        holdout=tiny_samples(12, seed=1),
    )
    precision = {c.name: c.precision for c in report.components}
    assert precision["fusion_head"] == "fp32"
    assert "int8" in precision.values()  # the other components keep their INT8
    head = next(c for c in report.components if c.name == "fusion_head")
    assert head.reason.startswith("keeping fusion_head FP32 lifts agreement on the calibration samples")
    assert report.met
    assert report.agreement >= 0.99
    assert "no candidate helped; then keeping fusion_head FP32" in report.notes[-1]
    assert load_bundle(tmp_path / "out").manifest.component("fusion_head").precision == "fp32"


def test_a_round_that_does_not_help_the_whole_chain_is_undone(
    planted_bundle: Path, tmp_path: Path, tiny_samples: Samples, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mmedge.quantize._chain import Chain

    real = Chain.rebuild

    def no_better(self: Chain, start: str | None = None) -> None:  # the round's file scores as the one before
        before = self.versions.get("fusion_head")
        real(self, start)
        if self.kept.get("fusion_head") and before is not None:
            self.versions["fusion_head"] = before

    monkeypatch.setattr(Chain, "rebuild", no_better)
    report = quantize_bundle(
        planted_bundle,
        tmp_path / "out",
        speed_check=False,
        calibration=tiny_samples(24),
        holdout=tiny_samples(12, seed=1),
    )
    assert report.fallback == ()
    assert "but not the whole chain's on the calibration samples" in report.notes[-1]
    assert "undone; then keeping fusion_head FP32" in report.notes[-1]
    head = next(c for c in report.components if c.name == "fusion_head")
    assert not any(e.reason.startswith("fallback round") for e in head.excluded)
