"""Hardening of loading and publishing: linear-time checks, names and wiring refused at load,
external data checked by mmedge, files checked again when a lazy session opens them, and a
``--out`` that never deletes what is not an mmedge bundle's.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnx
import pytest
from onnx import TensorProto, helper
from tinybundle import build_tiny_bundle, tiny_inputs

from mmedge.bundle import (
    MANIFEST_NAME,
    Asset,
    load_bundle,
    manifest_from_dict,
    scratch_directory,
    sha256_file,
    staged_bundle,
    verify_component_file,
    write_manifest,
)
from mmedge.cli import main
from mmedge.errors import BundleError
from mmedge.quantize import quantize_bundle
from mmedge.runtime import Pipeline


def _refused(bundle: Path, message: str) -> None:
    """load_bundle and Pipeline both refuse ``bundle`` with a BundleError matching ``message``."""
    with pytest.raises(BundleError, match=message):
        load_bundle(bundle)
    with pytest.raises(BundleError, match=message):
        Pipeline(bundle, "cpu")


def _edit(bundle: Path, edit: Callable[[Any], None]) -> None:
    path = bundle / MANIFEST_NAME
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


# -- linear time ---------------------------------------------------------------------------------


def _wide_bundle(root: Path, n: int) -> Path:
    """A bundle whose one component concatenates ``n`` text inputs, each wired from a raw input.

    Written by hand as compact JSON, so that 20k inputs fit the manifest size limit.
    """
    root.mkdir()
    names = [f"t{i}" for i in range(n)]
    graph = helper.make_graph(
        [helper.make_node("Concat", names, ["y"], axis=0)],
        "wide",
        [helper.make_tensor_value_info(name, TensorProto.INT64, [4]) for name in names],
        [helper.make_tensor_value_info("y", TensorProto.INT64, [4 * n])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, root / "c.onnx")
    tensor = [{"name": name, "dtype": "int64", "shape": [4]} for name in names]
    data = {
        "format_version": 1,
        "created_by": {"mmedge": "test"},
        "model": {"name": "wide"},
        "inputs": [{**t, "modality": "text", "preprocess": {"max_length": 4}} for t in tensor],
        "components": [
            {
                "name": "c",
                "file": "c.onnx",
                "role": "head",
                "sha256": sha256_file(root / "c.onnx"),
                "inputs": tensor,
                "outputs": [{"name": "y", "dtype": "int64", "shape": [4 * n]}],
            }
        ],
        "wiring": [{"source": "inputs", "output": name, "target": "c", "input": name} for name in names],
        "outputs": [{"name": "y", "component": "c", "tensor": "y", "kind": "other"}],
    }
    (root / MANIFEST_NAME).write_text(json.dumps(data, separators=(",", ":")))
    return root


def test_a_manifest_with_20k_inputs_loads_in_linear_time(tmp_path: Path) -> None:
    """Quadratic checks took minutes here; linear ones take well under a second (bound generous for CI)."""
    bundle = _wide_bundle(tmp_path / "wide", 20_000)
    start = time.process_time()
    loaded = load_bundle(bundle)
    assert time.process_time() - start < 5.0
    assert len(loaded.manifest.inputs) == 20_000
    assert len(loaded.manifest.edges_into("c")) == 20_000


# -- names and wiring ------------------------------------------------------------------------------


def _append_copy(*path: Any) -> Callable[[Any], None]:
    def edit(data: Any) -> None:
        for key in path:
            data = data[key]
        data.append(json.loads(json.dumps(data[0])))

    return edit


def _add_edge(source: str, output: str, target: str, name: str) -> Callable[[Any], None]:
    return lambda data: data["wiring"].append({"source": source, "output": output, "target": target, "input": name})


def _cycle(data: Any) -> None:
    """text_encoder now reads the head's logits, and the head reads text_encoder: a cycle."""
    data["wiring"][0].update(source="fusion_head", output="logits")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        pytest.param(_append_copy("inputs"), "input 'text' is listed twice", id="duplicate-input"),
        pytest.param(_append_copy("outputs"), "output 'logits' is listed twice", id="duplicate-output"),
        pytest.param(_append_copy("assets"), "asset 'vocab' is listed twice", id="duplicate-asset"),
        pytest.param(_append_copy("components"), "component 'text_encoder' is listed twice", id="duplicate-component"),
        pytest.param(
            _append_copy("components", 3, "inputs"),
            "component 'fusion_head': input tensor 'text_features' is listed twice",
            id="duplicate-tensor",
        ),
        pytest.param(
            _add_edge("inputs", "text", "text_encoder", "text"),
            r"input 'text' of component 'text_encoder' is fed by two wiring edges \(inputs.text and inputs.text\)",
            id="same-edge-twice",
        ),
        pytest.param(
            _add_edge("image_encoder", "image_features", "fusion_head", "text_features"),
            "fed by two wiring edges \\(text_encoder.text_features and image_encoder.image_features\\); "
            "an input takes exactly one tensor",
            id="two-sources-one-input",
        ),
        pytest.param(_cycle, r"wiring has a cycle through components \['fusion_head', 'text_encoder'\]", id="cycle"),
        pytest.param(
            _add_edge("fusion_head", "logits", "fusion_head", "logits"),
            "unknown input 'logits' of 'fusion_head'",
            id="edge-to-an-unknown-input",
        ),
    ],
)
def test_names_and_wiring_are_refused_at_load(tiny_bundle: Path, edit: Callable[[Any], None], message: str) -> None:
    _edit(tiny_bundle, edit)
    _refused(tiny_bundle, message)


def test_a_component_fed_by_itself_is_a_cycle(tiny_bundle: Path) -> None:
    def edit(data: Any) -> None:
        data["components"][3]["outputs"].append({"name": "loop", "dtype": "float32", "shape": ["batch", 4]})
        data["wiring"][3].update(source="fusion_head", output="loop")

    _edit(tiny_bundle, edit)
    with pytest.raises(BundleError, match=r"cycle through components \['fusion_head'\]"):
        load_bundle(tiny_bundle, check_hashes=False)


# -- external data ---------------------------------------------------------------------------------

DATA = "text_encoder.onnx.data"


def _externalize(bundle: Path, *, listed: bool = True, location: str | None = None) -> None:
    """Move text_encoder's weights to ``DATA``, list it as an asset (or not), point the graph at ``location``."""
    path = bundle / "text_encoder.onnx"
    model = onnx.load(path)
    onnx.save_model(model, path, save_as_external_data=True, location=DATA, size_threshold=0)
    if location is not None:
        model = onnx.load(path, load_external_data=False)
        for tensor in model.graph.initializer:
            for entry in tensor.external_data:
                if entry.key == "location":
                    entry.value = location
        path.write_bytes(model.SerializeToString())
    if listed:
        manifest = manifest_from_dict(json.loads((bundle / MANIFEST_NAME).read_text()))
        write_manifest(bundle, dataclasses.replace(manifest, assets=(*manifest.assets, Asset("text_weights", DATA))))
    else:
        _edit(bundle, lambda d: d["components"][0].update(sha256=sha256_file(path)))


def test_external_data_in_a_hashed_asset_loads_and_runs(tiny_bundle: Path) -> None:
    _externalize(tiny_bundle)
    with Pipeline(tiny_bundle, "cpu") as pipe:
        assert pipe.run(tiny_inputs())["logits"].shape == (2, 3)
    assert load_bundle(tiny_bundle).external_data == {
        "text_encoder": (DATA,),
        "image_encoder": (),
        "audio_encoder": (),
        "fusion_head": (),
    }


@pytest.mark.parametrize(
    ("location", "message"),
    [
        pytest.param("/etc/passwd", "'/etc/passwd' .* is not a relative path inside the bundle", id="absolute"),
        pytest.param("C:\\weights.bin", "is not a relative path inside the bundle", id="windows-drive"),
        pytest.param("../outside.data", "'../outside.data' .* leaves the bundle directory", id="dotdot"),
        pytest.param("..\\outside.data", "leaves the bundle directory", id="windows-dotdot"),
        pytest.param("vocab.txt.data", "'vocab.txt.data' .* is not a hashed asset of the manifest", id="not-listed"),
        pytest.param("", "location '' .* is not a relative path", id="empty"),
    ],
)
def test_an_external_data_location_outside_the_hashed_assets_is_refused(
    tiny_bundle: Path, location: str, message: str
) -> None:
    _externalize(tiny_bundle, location=location)
    _refused(tiny_bundle, message)


def test_external_data_not_listed_as_an_asset_is_refused(tiny_bundle: Path) -> None:
    _externalize(tiny_bundle, listed=False)
    _refused(tiny_bundle, f"external data file '{DATA}' .* is not a hashed asset")
    with pytest.raises(BundleError, match="is not a hashed asset"):
        load_bundle(tiny_bundle, check_hashes=False)


def test_a_symlinked_external_data_file_is_refused(tiny_bundle: Path, tmp_path: Path) -> None:
    _externalize(tiny_bundle)
    (tiny_bundle / DATA).rename(tmp_path / "elsewhere.data")
    os.symlink(tmp_path / "elsewhere.data", tiny_bundle / DATA)
    _refused(tiny_bundle, f"asset 'text_weights': {DATA} is a symlink")


def test_external_data_of_a_node_attribute_is_checked(tiny_bundle: Path) -> None:
    """Tensors inside nodes (a Constant's value) are walked too, not only initializers."""
    path = tiny_bundle / "fusion_head.onnx"
    model = onnx.load(path)
    value = helper.make_tensor("c", TensorProto.FLOAT, [1], [0.0])
    value.data_location = TensorProto.EXTERNAL
    del value.float_data[:]
    value.external_data.add(key="location", value="../../etc/shadow")
    model.graph.node.append(helper.make_node("Constant", [], ["unused"], value=value))
    path.write_bytes(model.SerializeToString())
    _edit(tiny_bundle, lambda d: d["components"][3].update(sha256=sha256_file(path)))
    _refused(tiny_bundle, "'../../etc/shadow' of tensor 'c' leaves the bundle directory")


# -- files checked again when a session opens them ------------------------------------------------


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_lazy_pipeline_checks_a_file_changed_after_load(tiny_bundle: Path) -> None:
    with Pipeline(tiny_bundle, "cpu", lazy=True) as pipe:
        _flip_last_byte(tiny_bundle / "audio_encoder.onnx")
        with pytest.raises(BundleError, match=r"audio_encoder\.onnx does not match its sha256"):
            pipe.run(tiny_inputs())


def test_a_lazy_pipeline_checks_external_data_changed_after_load(tiny_bundle: Path) -> None:
    _externalize(tiny_bundle)
    with Pipeline(tiny_bundle, "cpu", lazy=True) as pipe:
        _flip_last_byte(tiny_bundle / DATA)
        with pytest.raises(BundleError, match=f"asset 'text_weights': {DATA} does not match its sha256"):
            pipe.run(tiny_inputs())


def test_verify_component_file_returns_the_checked_path(tiny_bundle: Path) -> None:
    bundle = load_bundle(tiny_bundle)
    assert verify_component_file(bundle, "fusion_head") == tiny_bundle / "fusion_head.onnx"
    (tiny_bundle / "fusion_head.onnx").unlink()
    with pytest.raises(BundleError, match=r"changed since the bundle was loaded:\n  - .*is missing"):
        verify_component_file(bundle, "fusion_head")


# -- --out ------------------------------------------------------------------------------------------


def _publish_copy(source: Path, out: Path, *, force: bool = False) -> None:
    """Publish a copy of the bundle at ``source`` to ``out`` through staged_bundle."""
    with staged_bundle(out, force=force) as stage:
        for f in source.iterdir():
            shutil.copy2(f, stage / f.name)


def test_an_unlisted_file_in_a_bundle_blocks_replacing_it(tiny_bundle: Path) -> None:
    (tiny_bundle / "notes.txt").write_text("mine")
    (tiny_bundle / "sub").mkdir()
    (tiny_bundle / "sub" / "results.csv").write_text("1,2")
    with pytest.raises(BundleError, match=r"files its manifest does not list \(notes.txt, sub/results.csv\).*--force"):
        build_tiny_bundle(tiny_bundle, seed=1)
    assert (tiny_bundle / "notes.txt").read_text() == "mine"
    assert (tiny_bundle / "sub" / "results.csv").read_text() == "1,2"
    assert [p.name for p in tiny_bundle.parent.iterdir()] == ["tiny"]  # no staging left behind


def test_a_file_put_into_out_while_a_stage_works_is_kept(tiny_bundle: Path, tmp_path: Path) -> None:
    source = build_tiny_bundle(tmp_path / "source", seed=1)
    with pytest.raises(BundleError, match=r"does not list \(late.txt\)"), staged_bundle(tiny_bundle) as stage:
        for f in source.iterdir():
            shutil.copy2(f, stage / f.name)
        (tiny_bundle / "late.txt").write_text("saved while the export ran")
    assert (tiny_bundle / "late.txt").read_text() == "saved while the export ran"
    assert load_bundle(tiny_bundle).manifest.components[0].sha256 != load_bundle(source).manifest.components[0].sha256


def test_a_staged_bundle_with_stray_files_is_never_published(tmp_path: Path) -> None:
    """What a stage leaves in its staging folder beside the bundle would block the next run's --out."""
    source = build_tiny_bundle(tmp_path / "source")
    stray = r"refusing to publish .*\(debug.onnx\); list them as assets"
    with pytest.raises(BundleError, match=stray), staged_bundle(tmp_path / "out") as stage:
        for f in source.iterdir():
            shutil.copy2(f, stage / f.name)
        (stage / "debug.onnx").write_bytes(b"x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["source"]


@pytest.mark.parametrize(
    ("prepare", "message"),
    [
        pytest.param(
            lambda d: _edit(d, lambda m: m.update(created_by={"othertool": "1.0"})),
            "holds a bundle that mmedge did not write",
            id="not-written-by-mmedge",
        ),
        pytest.param(
            lambda d: (d / MANIFEST_NAME).write_text("{"), "not an mmedge bundle.*unreadable manifest", id="bad-json"
        ),
        pytest.param(
            lambda d: _edit(d, lambda m: m.update(format_version=99)),
            "not an mmedge bundle.*format_version 99",
            id="other-version",
        ),
    ],
)
def test_a_folder_that_is_not_an_mmedge_bundle_is_not_replaced(
    tiny_bundle: Path, tmp_path: Path, prepare: Callable[[Path], None], message: str
) -> None:
    source = build_tiny_bundle(tmp_path / "source", seed=1)
    prepare(tiny_bundle)
    before = {p.name: p.read_bytes() for p in tiny_bundle.iterdir()}
    with pytest.raises(BundleError, match=message):
        _publish_copy(source, tiny_bundle)
    assert {p.name: p.read_bytes() for p in tiny_bundle.iterdir()} == before
    _publish_copy(source, tiny_bundle, force=True)
    assert load_bundle(tiny_bundle).manifest == load_bundle(source).manifest


def test_force_replaces_any_folder_and_an_empty_one_needs_no_force(tmp_path: Path) -> None:
    source = build_tiny_bundle(tmp_path / "source")
    precious = tmp_path / "photos"
    precious.mkdir()
    (precious / "cat.jpg").write_bytes(b"meow")
    with pytest.raises(BundleError, match=r"not an mmedge bundle; refusing to replace it.*--force"):
        _publish_copy(source, precious)
    _publish_copy(source, precious, force=True)
    assert not (precious / "cat.jpg").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    _publish_copy(source, empty)
    assert load_bundle(empty).manifest.model.name == "tiny"


def test_a_file_is_never_replaced_even_with_force(tmp_path: Path) -> None:
    source = build_tiny_bundle(tmp_path / "source")
    (tmp_path / "out").write_text("a file")
    with pytest.raises(BundleError, match="is not a directory"):
        _publish_copy(source, tmp_path / "out", force=True)
    assert (tmp_path / "out").read_text() == "a file"


def test_a_stage_refuses_out_before_its_work(tiny_bundle: Path, tmp_path: Path) -> None:
    """quantize_bundle fails on --out before it reads a calibration sample."""
    precious = tmp_path / "photos"
    precious.mkdir()
    (precious / "cat.jpg").write_bytes(b"meow")
    with pytest.raises(BundleError, match="not an mmedge bundle"):
        quantize_bundle(tiny_bundle, precious, calibration="no such folder")
    assert (precious / "cat.jpg").read_bytes() == b"meow"


@pytest.mark.parametrize("command", ["quantize", "mobile"])
def test_the_cli_refuses_out_without_force(
    tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    precious = tmp_path / "photos"
    precious.mkdir()
    (precious / "cat.jpg").write_bytes(b"meow")
    assert main([command, str(tiny_bundle), "--out", str(precious)]) == 1
    assert "--force" in capsys.readouterr().err
    assert (precious / "cat.jpg").read_bytes() == b"meow"


def test_the_cli_replaces_out_with_force(tiny_bundle: Path, tmp_path: Path) -> None:
    precious = tmp_path / "photos"
    precious.mkdir()
    (precious / "cat.jpg").write_bytes(b"meow")
    assert main(["mobile", str(tiny_bundle), "--out", str(precious), "--force", "--json"]) == 0
    assert not (precious / "cat.jpg").exists()
    assert load_bundle(precious).manifest.model.name == "tiny"


# -- work directories of killed runs ----------------------------------------------------------------


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True)
    return int(done.stdout)


def test_scratch_directories_of_dead_runs_are_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = _dead_pid()
    stale = tmp_path / f"mmedge-quantize-{dead}-abcd1234"
    kept = [
        tmp_path / f"mmedge-quantize-{os.getpid()}-live0000",  # this process: still working
        tmp_path / f"mmedge-mobile-{dead}-other000",  # another stage's: removed by that stage's next run
        tmp_path / "mmedge-quantize-legacy01",  # no process id: cannot tell, left alone
    ]
    for d in [stale, *kept]:
        d.mkdir()
        (d / "work.onnx").write_bytes(b"half")
    with scratch_directory("quantize") as work:
        assert work.parent == tmp_path
        assert work.name.startswith(f"mmedge-quantize-{os.getpid()}-")
        assert not stale.exists()
        assert all(d.exists() for d in kept)
    assert not work.exists()
