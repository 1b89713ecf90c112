"""Calibration sources (npz folder, iterable, reader) and their validation against the manifest."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from onnxruntime.quantization import CalibrationDataReader

from mmedge.bundle import load_bundle
from mmedge.errors import QuantizationError
from mmedge.quantize import SampleReader, collect_samples, quantize_bundle, synthetic_calibration

Samples = Callable[..., list[dict[str, np.ndarray]]]


class _Reader:
    """A user's CalibrationDataReader-style object: only ``get_next``."""

    def __init__(self, samples: list[dict[str, np.ndarray]]) -> None:
        self._it = iter(samples)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def _write_npz(folder: Path, samples: list[dict[str, np.ndarray]]) -> Path:
    folder.mkdir()
    for i, s in enumerate(samples):
        np.savez(folder / f"{i:04d}.npz", **s)
    return folder


@pytest.mark.parametrize("form", ["list", "generator", "reader", "npz-folder"])
def test_sources_give_the_same_samples(form: str, tiny_bundle: Path, tiny_samples: Samples, tmp_path: Path) -> None:
    samples = tiny_samples(3)
    source = {
        "list": lambda: samples,
        "generator": lambda: (s for s in samples),
        "reader": lambda: _Reader(samples),
        "npz-folder": lambda: _write_npz(tmp_path / "calib", samples),
    }[form]()
    got = collect_samples(source, load_bundle(tiny_bundle).manifest)
    assert len(got) == 3
    for a, b in zip(got, samples, strict=True):
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])


def test_limit_caps_the_samples_read(tiny_bundle: Path, tiny_samples: Samples) -> None:
    assert len(collect_samples(_Reader(tiny_samples(5)), load_bundle(tiny_bundle).manifest, limit=2)) == 2


def test_sample_reader_is_an_onnxruntime_calibration_reader(tiny_samples: Samples) -> None:
    reader = SampleReader(tiny_samples(2))
    assert isinstance(reader, CalibrationDataReader)
    assert [reader.get_next() is not None for _ in range(3)] == [True, True, False]
    reader.rewind()
    assert len(list(reader)) == 2


def _edit(sample: dict[str, np.ndarray], **changes: object) -> dict[str, np.ndarray]:
    out = {**sample, **changes}
    return {k: v for k, v in out.items() if v is not None}


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        pytest.param(
            lambda s: _edit(s, image=s["image"][:, :, :4]),
            r"sample 1: input 'image' has shape \[2, 3, 4, 8\].*dim 2 must be 8",
            id="wrong-fixed-dim",
        ),
        pytest.param(
            lambda s: _edit(s, image=s["image"][0]),
            r"sample 1: input 'image' has shape \[3, 8, 8\] \(rank 3\)",
            id="wrong-rank",
        ),
        pytest.param(
            lambda s: _edit(s, text=s["text"].astype(np.int32)),
            r"sample 1: input 'text' has dtype int32, expected int64.*astype\(np.int64\)",
            id="wrong-dtype",
        ),
        pytest.param(lambda s: _edit(s, audio=None), r"sample 1: input 'audio' is missing", id="missing-input"),
        pytest.param(lambda s: _edit(s, video=s["image"]), r"sample 1: unknown input 'video'", id="unknown-input"),
        pytest.param(
            lambda s: _edit(s, audio=s["audio"][:1]),
            r"sample 1: input 'audio' dim 0 \('batch'\) is 1 but input 'text' has 'batch'=2",
            id="batch-mismatch",
        ),
        pytest.param(
            lambda s: [s["image"]], r"sample 1: expected a dict of input name -> array, found list", id="not-a-dict"
        ),
        pytest.param(
            lambda s: _edit(s, image=s["image"].tolist()),
            r"sample 1: input 'image' is a list, expected a numpy array",
            id="not-an-array",
        ),
    ],
)
def test_bad_samples_are_named(
    edit: Callable, match: str, tiny_bundle: Path, tiny_samples: Samples, tmp_path: Path
) -> None:
    samples = tiny_samples(3)
    samples[1] = edit(samples[1])
    with pytest.raises(QuantizationError, match=match):
        quantize_bundle(tiny_bundle, tmp_path / "out", calibration=samples)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "source",
    [
        pytest.param([], id="empty-list"),
        pytest.param(_Reader([]), id="empty-reader"),
        pytest.param("empty-folder", id="empty-folder"),
    ],
)
def test_empty_calibration_is_an_error(source: object, tiny_bundle: Path, tmp_path: Path) -> None:
    if source == "empty-folder":
        source = tmp_path / "none"
        source.mkdir()
    with pytest.raises(QuantizationError, match="calibration data is empty"):
        quantize_bundle(tiny_bundle, tmp_path / "out", calibration=source)


def test_bad_holdout_is_named_as_holdout(tiny_bundle: Path, tiny_samples: Samples, tmp_path: Path) -> None:
    held = tiny_samples(2, seed=1)
    held[0] = _edit(held[0], image=held[0]["image"].astype(np.float64))
    with pytest.raises(
        QuantizationError, match=r"(?s)holdout data does not match.*sample 0: input 'image' has dtype float64"
    ):
        quantize_bundle(tiny_bundle, tmp_path / "out", calibration=tiny_samples(4), holdout=held)


@pytest.mark.parametrize(
    ("source", "match"),
    [
        pytest.param("missing-folder", "does not exist", id="missing-folder"),
        pytest.param(42, "must be a directory of .npz files, an iterable", id="not-a-source"),
        pytest.param({"image": np.zeros(1)}, "must be a directory of .npz files, an iterable", id="a-single-dict"),
    ],
)
def test_unusable_sources(source: object, match: str, tiny_bundle: Path, tmp_path: Path) -> None:
    if source == "missing-folder":
        source = tmp_path / "missing"
    with pytest.raises(QuantizationError, match=match):
        collect_samples(source, load_bundle(tiny_bundle).manifest)


def test_unreadable_npz_is_named(tiny_bundle: Path, tmp_path: Path) -> None:
    folder = tmp_path / "calib"
    folder.mkdir()
    (folder / "0.npz").write_bytes(b"not a zip")
    with pytest.raises(QuantizationError, match=r"0.npz is not a readable .npz archive"):
        collect_samples(folder, load_bundle(tiny_bundle).manifest)


def test_one_sample_cannot_be_split_into_a_holdout(tiny_bundle: Path, tiny_samples: Samples, tmp_path: Path) -> None:
    with pytest.raises(QuantizationError, match="at least 2 calibration samples"):
        quantize_bundle(tiny_bundle, tmp_path / "out", calibration=tiny_samples(1))


def test_synthetic_needs_a_reference_model(tiny_bundle: Path) -> None:
    with pytest.raises(QuantizationError, match=r"no synthetic data for model 'tiny'.*TriModalNet"):
        synthetic_calibration(load_bundle(tiny_bundle).manifest, 4)


def test_a_sample_reader_is_replayed_not_drained(tiny_bundle: Path, tiny_samples: Samples) -> None:
    reader = SampleReader(tiny_samples(3))
    manifest = load_bundle(tiny_bundle).manifest
    assert len(collect_samples(reader, manifest)) == len(collect_samples(reader, manifest)) == 3
