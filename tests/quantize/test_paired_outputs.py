"""A CLIP-style output pairs every row with every other: scored one one-example sample at a time it
is a 1×1 matrix whose top-1 always agrees, so quantize would report 100% whatever INT8 did. The
samples are calibrated and scored as one batch instead: each image's top-1 among all the texts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tinymodels import Similarity

from mmedge.bundle import load_bundle
from mmedge.export import export_model
from mmedge.quantize import quantize_bundle
from mmedge.quantize.api import _paired_batches


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    example = {"text": torch.randint(0, 50, (2, 6)), "image": torch.randn(2, 3, 16, 16)}
    out = tmp_path_factory.mktemp("paired") / "b"
    export_model(Similarity().eval(), example, modalities={"text": "other"}, out=out)
    return out


def _samples(n: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [
        {"text": rng.integers(0, 50, (1, 6)), "image": rng.normal(size=(1, 3, 16, 16)).astype(np.float32)}
        for _ in range(n)
    ]


def test_one_example_samples_are_scored_as_one_batch(bundle: Path) -> None:
    manifest = load_bundle(bundle).manifest
    assert manifest.paired_outputs() == ("logits",)
    calib, held, note = _paired_batches(manifest, _samples(6, 0), _samples(4, 1))
    assert [s["image"].shape[0] for s in calib] == [6]
    assert [s["text"].shape[0] for s in held] == [4]
    assert "the 4 held-out examples are scored as one batch" in note
    uneven = [*_samples(2, 2), {"text": np.zeros((1, 6), np.int64), "image": np.zeros((1, 3, 8, 8), np.float32)}]
    calib, held, note = _paired_batches(manifest, _samples(3, 0), uneven)
    assert len(held) == 3
    assert "scored one at a time" in note


def test_the_report_scores_each_image_against_every_held_out_text(
    bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mmedge.quantize import _chain

    scored: list[tuple[int, ...]] = []
    real = _chain.agreement

    def spied(kind: str, ref: list[np.ndarray], test: list[np.ndarray]) -> float:
        scored.extend(r.shape for r in ref)
        return real(kind, ref, test)

    monkeypatch.setattr(_chain, "agreement", spied)
    report = quantize_bundle(
        bundle, tmp_path / "q", calibration=_samples(12, 0), holdout=_samples(8, 1), speed_check=False
    )
    assert "scored as one batch" in report.holdout_source
    assert report.outputs[0].metric == "top1"
    assert (8, 8) in scored  # the held-out batch: each image ranks all eight texts
    assert (1, 1) not in scored
