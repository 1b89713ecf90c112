"""Deploy bundles carry only what inference needs: INT8 and mobile bundles made from an FP32 bundle
with a monolithic ``model.onnx`` leave it out, their reports quote the size they have on disk,
and ``mmedge bench`` finds the monolithic baseline in the FP32 bundle given with ``--compare``."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import onnx
import pytest
from tinybundle import tiny_inputs

from mmedge.bench import bench
from mmedge.bundle import (
    MANIFEST_NAME,
    MONOLITHIC_ASSET,
    Asset,
    deploy_bytes,
    directory_bytes,
    load_bundle,
    staged_bundle,
    write_manifest,
)
from mmedge.mobile import package_mobile
from mmedge.quantize import quantize_bundle
from mmedge.quantize.report import REPORT_JSON


def _files(root: Path) -> dict[str, int]:
    return {p.relative_to(root).as_posix(): p.stat().st_size for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def mono_weights_bundle(mono_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bench tests' bundle with its whole model as ``model.onnx``, weights in ``model.onnx.data``."""
    source = load_bundle(mono_bundle)
    out = tmp_path_factory.mktemp("deploy") / "fp32"
    with staged_bundle(out) as stage:
        for f in [c.file for c in source.manifest.components] + [a.file for a in source.manifest.assets]:
            shutil.copy(mono_bundle / f, stage / f)
        onnx.save(
            onnx.load(str(source.asset_path(MONOLITHIC_ASSET))),
            stage / "model.onnx",
            save_as_external_data=True,
            location="model.onnx.data",
            size_threshold=100,  # weights only: ORT reads shape constants (Unsqueeze axes) inline
        )
        assets = (*source.manifest.assets, Asset(name="monolithic_weights", file="model.onnx.data"))
        write_manifest(stage, dataclasses.replace(source.manifest, assets=assets))
    return out


@pytest.fixture(scope="module")
def int8_bundle(mono_weights_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("int8") / "int8"
    samples = [tiny_inputs(batch=2, seed=i) for i in range(10)]
    report = quantize_bundle(mono_weights_bundle, out, calibration=samples, speed_check=False)
    return out, report


def test_the_fp32_source_carries_the_monolith(mono_weights_bundle: Path) -> None:
    assert {"model.onnx", "model.onnx.data"} <= set(_files(mono_weights_bundle))
    assert load_bundle(mono_weights_bundle).manifest.asset(MONOLITHIC_ASSET).file == "model.onnx"


def test_an_int8_bundle_leaves_the_monolith_and_its_weights_out(int8_bundle: tuple[Path, object]) -> None:
    out, _ = int8_bundle
    files = _files(out)
    assert "model.onnx" not in files
    assert "model.onnx.data" not in files
    manifest = load_bundle(out).manifest
    assert {a.name for a in manifest.assets} == {"vocab", "quantization_report", "quantization_report_md"}
    assert set(files) == {MANIFEST_NAME, *(c.file for c in manifest.components), *(a.file for a in manifest.assets)}


def test_the_int8_report_quotes_the_size_on_disk(mono_weights_bundle: Path, int8_bundle: tuple[Path, object]) -> None:
    out, report = int8_bundle
    on_disk = sum(_files(out).values())
    assert report.bundle_size_after == on_disk == directory_bytes(out)
    written = json.loads((out / REPORT_JSON).read_text(encoding="utf-8"))
    assert written["bundle_size_after"] == on_disk  # the file states the size it is part of
    # the FP32 side: what inference on the source reads, without model.onnx and its weights
    source = _files(mono_weights_bundle)
    assert report.bundle_size_before == sum(source.values()) - source["model.onnx"] - source["model.onnx.data"]
    assert report.bundle_size_before == deploy_bytes(load_bundle(mono_weights_bundle))
    from mmedge.quantize.report import REPORT_MD

    markdown = (out / REPORT_MD).read_text(encoding="utf-8")
    assert f"{on_disk / 1e6:.2f} MB (this bundle, all files)" in markdown


def test_a_mobile_bundle_leaves_the_monolith_out_and_quotes_its_size_on_disk(
    mono_weights_bundle: Path, tmp_path: Path
) -> None:
    report = package_mobile(mono_weights_bundle, tmp_path / "mobile", target="generic")
    files = _files(tmp_path / "mobile")
    assert not {"model.onnx", "model.onnx.data"} & set(files)
    assert MONOLITHIC_ASSET not in {a.name for a in load_bundle(tmp_path / "mobile").manifest.assets}
    assert report.bundle_size_after == sum(files.values())
    written = json.loads((tmp_path / "mobile" / "mobile_report.json").read_text(encoding="utf-8"))
    assert written["bundle_size_after"] == sum(files.values())
    assert report.bundle_size_before == deploy_bytes(load_bundle(mono_weights_bundle))


def test_a_mobile_bundle_made_from_the_int8_bundle_is_lean_too(
    int8_bundle: tuple[Path, object], tmp_path: Path
) -> None:
    out, _ = int8_bundle
    report = package_mobile(out, tmp_path / "mobile", target="generic")
    files = _files(tmp_path / "mobile")
    assert "model.onnx" not in files
    assert report.bundle_size_after == sum(files.values())


def test_bench_finds_the_monolith_through_compare(mono_weights_bundle: Path, int8_bundle: tuple[Path, object]) -> None:
    out, _ = int8_bundle
    options = {"iterations": 2, "warmup": 0, "threads": 1, "profile": False}
    alone = bench(out, **options)
    assert [v.name for v in alone.variants] == ["split INT8"]
    compared = bench(out, compare=[mono_weights_bundle], **options)
    assert [v.name for v in compared.variants] == ["split INT8", "split FP32", "monolithic FP32"]
    assert {c.baseline for c in compared.comparisons} == {"split FP32", "monolithic FP32"}


@pytest.fixture(scope="module")
def external_encoder_bundle(mono_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bench tests' bundle with the image encoder's weights in ``image_encoder.onnx.data``."""
    source = load_bundle(mono_bundle)
    out = tmp_path_factory.mktemp("deploy") / "external"
    with staged_bundle(out) as stage:
        for f in [c.file for c in source.manifest.components] + [a.file for a in source.manifest.assets]:
            shutil.copy(mono_bundle / f, stage / f)
        onnx.save(
            onnx.load(str(source.component_path("image_encoder"))),
            stage / "image_encoder.onnx",
            save_as_external_data=True,
            location="image_encoder.onnx.data",
            size_threshold=100,
        )
        assets = (*source.manifest.assets, Asset(name="image_encoder_weights", file="image_encoder.onnx.data"))
        write_manifest(stage, dataclasses.replace(source.manifest, assets=assets))
    return out


def test_weights_go_where_a_graph_reads_them(external_encoder_bundle: Path, tmp_path: Path) -> None:
    """An image encoder kept FP32 still reads its external weights; an .ort file holds its own."""
    samples = [tiny_inputs(batch=2, seed=i) for i in range(6)]
    quantize_bundle(
        external_encoder_bundle,
        tmp_path / "int8",
        calibration=samples,
        recipe={"image_encoder": "fp32", "text_encoder": "auto", "audio_encoder": "auto", "fusion_head": "auto"},
        speed_check=False,
    )
    kept = load_bundle(tmp_path / "int8")
    assert kept.manifest.asset("image_encoder_weights").file == "image_encoder.onnx.data"
    assert "model.onnx" not in _files(tmp_path / "int8")
    package_mobile(external_encoder_bundle, tmp_path / "mobile", target="generic")
    files = _files(tmp_path / "mobile")
    assert not {"image_encoder.onnx.data", "model.onnx"} & set(files)
    assert "image_encoder_weights" not in {a.name for a in load_bundle(tmp_path / "mobile").manifest.assets}
