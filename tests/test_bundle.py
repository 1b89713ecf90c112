"""The bundle contract: round trip, and every way a bundle can be refused at load."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import onnx
import pytest
from tinybundle import build_tiny_bundle, tiny_manifest

from mmedge.bundle import (
    MANIFEST_NAME,
    Bundle,
    Verification,
    load_bundle,
    manifest_from_dict,
    manifest_to_dict,
    staged_bundle,
    write_manifest,
)
from mmedge.errors import BundleError


def _edit_manifest(bundle: Path, edit) -> None:
    path = bundle / MANIFEST_NAME
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def test_round_trip_keeps_every_field(tiny_bundle: Path) -> None:
    b = load_bundle(tiny_bundle)
    again = manifest_from_dict(json.loads(json.dumps(manifest_to_dict(b.manifest))))
    assert again == b.manifest
    assert b.manifest.input("image").preprocess.size == (8, 8)
    assert all(len(c.sha256) == 64 and c.size_bytes > 0 for c in b.manifest.components)
    assert b.asset_path("vocab").read_text().split()[2] == "bright"


def test_verification_records_round_trip(tmp_path: Path) -> None:
    check = Verification("export", "pytorch", True, 1e-6, 1e-5, 1e-4, 1e-3, shapes=(((1, 6),), ((3, 9),)))
    m = tiny_manifest()
    m = dataclasses.replace(
        m, components=(dataclasses.replace(m.components[0], verification=(check,)), *m.components[1:])
    )
    assert manifest_from_dict(json.loads(json.dumps(manifest_to_dict(m)))).components[0].verification == (check,)


def _flip_byte(bundle: Path) -> None:
    p = bundle / "image_encoder.onnx"
    data = bytearray(p.read_bytes())
    data[-1] ^= 0xFF
    p.write_bytes(bytes(data))


def _symlink_component(bundle: Path) -> None:
    target = bundle.parent / "elsewhere.onnx"
    (bundle / "text_encoder.onnx").rename(target)
    os.symlink(target, bundle / "text_encoder.onnx")


def _set(path: list, value) -> callable:
    def edit(data: dict) -> None:
        node = data
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return edit


def _fix_output_dim(bundle: Path) -> None:
    """Rewrite a graph so a dim the manifest calls dynamic is fixed (what a broken stage does)."""
    p = bundle / "text_encoder.onnx"
    model = onnx.load(p)
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 6
    onnx.save(model, p)
    _edit_manifest(bundle, lambda d: None)  # manifest untouched, hash now wrong → rehash below
    b = json.loads((bundle / MANIFEST_NAME).read_text())
    from mmedge.bundle import sha256_file

    b["components"][0]["sha256"] = sha256_file(p)
    (bundle / MANIFEST_NAME).write_text(json.dumps(b))


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        pytest.param(_flip_byte, "does not match its sha256", id="changed-byte"),
        pytest.param(lambda b: (b / "audio_encoder.onnx").unlink(), "is missing", id="missing-file"),
        pytest.param(lambda b: (b / "vocab.txt").write_text("x\n"), "asset 'vocab'", id="changed-asset"),
        pytest.param(_symlink_component, "symlink", id="symlink"),
        pytest.param(lambda b: _edit_manifest(b, _set(["format_version"], 99)), "format_version 99", id="version"),
        pytest.param(
            lambda b: _edit_manifest(b, _set(["components", 0, "file"], "../escape.onnx")),
            "leaves the bundle",
            id="dotdot-path",
        ),
        pytest.param(
            lambda b: _edit_manifest(b, _set(["components", 0, "file"], "/etc/passwd")),
            "leaves the bundle",
            id="absolute-path",
        ),
        pytest.param(
            lambda b: _edit_manifest(b, _set(["components", 3, "inputs", 0, "name"], "renamed")),
            "fed by nothing",
            id="edited-manifest-io",
        ),
        pytest.param(
            lambda b: _edit_manifest(b, _set(["components", 1, "outputs", 0, "dtype"], "int64")),
            "is float32 in the graph, manifest says int64",
            id="dtype-mismatch",
        ),
        pytest.param(_fix_output_dim, "declared dynamic but the graph fixes it to 6", id="lost-dynamic-dim"),
        pytest.param(
            lambda b: _edit_manifest(b, _set(["wiring", 0, "source"], "nope")), "unknown component", id="wiring"
        ),
        pytest.param(lambda b: _edit_manifest(b, _set(["inputs", 0, "modality"], "smell")), "modality", id="modality"),
        pytest.param(lambda b: _edit_manifest(b, _set(["components"], "x")), "malformed", id="malformed"),
        pytest.param(lambda b: (b / MANIFEST_NAME).write_text("{not json"), "not valid JSON", id="not-json"),
        pytest.param(lambda b: (b / MANIFEST_NAME).unlink(), "not an mmedge bundle", id="no-manifest"),
        pytest.param(
            lambda b: (b / MANIFEST_NAME).write_bytes(b" " * (5 * 1024 * 1024)), "byte limit", id="huge-manifest"
        ),
        pytest.param(lambda b: (b / "fusion_head.onnx").write_bytes(b"garbage"), "sha256", id="garbage-onnx"),
    ],
)
def test_tampered_bundle_is_refused(tiny_bundle: Path, tamper, message: str) -> None:
    tamper(tiny_bundle)
    with pytest.raises(BundleError, match=message):
        load_bundle(tiny_bundle)


def test_unreadable_onnx_named_when_hashes_skipped(tiny_bundle: Path) -> None:
    (tiny_bundle / "fusion_head.onnx").write_bytes(b"garbage")
    with pytest.raises(BundleError, match="not a readable ONNX file"):
        load_bundle(tiny_bundle, check_hashes=False)


def test_missing_directory_is_a_bundle_error(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="does not exist"):
        load_bundle(tmp_path / "nope")


def test_failed_write_leaves_previous_bundle(tiny_bundle: Path) -> None:
    before = (tiny_bundle / MANIFEST_NAME).read_bytes()
    with pytest.raises(RuntimeError, match="crash"), staged_bundle(tiny_bundle) as stage:
        (stage / "half.onnx").write_bytes(b"partial")
        raise RuntimeError("crash")
    assert (tiny_bundle / MANIFEST_NAME).read_bytes() == before
    assert sorted(p.name for p in tiny_bundle.parent.iterdir()) == ["tiny"]


def test_invalid_staged_bundle_is_never_published(tmp_path: Path) -> None:
    with pytest.raises(BundleError), staged_bundle(tmp_path / "out") as stage:
        (stage / MANIFEST_NAME).write_text("{}")
    assert not (tmp_path / "out").exists()
    assert list(tmp_path.iterdir()) == []


def test_rewrite_replaces_existing_bundle(tiny_bundle: Path) -> None:
    old = load_bundle(tiny_bundle).manifest.components[0].sha256
    build_tiny_bundle(tiny_bundle, seed=1)
    assert load_bundle(tiny_bundle).manifest.components[0].sha256 != old


def test_refuses_to_replace_unrelated_directory(tmp_path: Path) -> None:
    precious = tmp_path / "photos"
    precious.mkdir()
    (precious / "cat.jpg").write_bytes(b"meow")
    with pytest.raises(BundleError, match="not an mmedge bundle; refusing to replace"):
        build_tiny_bundle(precious)
    assert (precious / "cat.jpg").read_bytes() == b"meow"


def test_write_manifest_refuses_inconsistent_manifest(tmp_path: Path, tiny_bundle: Path) -> None:
    m = load_bundle(tiny_bundle).manifest
    broken = dataclasses.replace(m, wiring=m.wiring[1:])
    with pytest.raises(BundleError, match="fed by nothing"):
        write_manifest(tiny_bundle, broken)


def test_lookup_errors_name_known_entries(tiny_bundle: Path) -> None:
    b: Bundle = load_bundle(tiny_bundle)
    with pytest.raises(BundleError, match="it has: text_encoder, image_encoder"):
        b.manifest.component("video_encoder")
    with pytest.raises(BundleError, match="it has: text, image, audio"):
        b.manifest.input("video")


def test_sized_shape_takes_batch_and_example_sizes() -> None:
    spec = tiny_manifest().inputs[0]  # text: ("batch", "seq"), example (1, 6)
    assert spec.sized_shape(4) == (4, 6)
    assert dataclasses.replace(spec, example_shape=()).sized_shape(4) is None
    image = tiny_manifest().inputs[1]
    assert image.sized_shape(3) == (3, 3, 8, 8)
