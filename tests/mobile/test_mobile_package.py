"""The tiny bundle packaged for phones: a normal bundle of .ort files that reproduces its source."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from tinybundle import tiny_inputs

from mmedge.bundle import TensorSpec, check_io, load_bundle, write_manifest
from mmedge.cli import main
from mmedge.mobile.api import TARGETS, MobileReport, package_mobile
from mmedge.runtime import Pipeline

Packaged = Callable[..., tuple[Path, MobileReport]]
ONNX_DTYPES = {"tensor(float)": "float32", "tensor(int64)": "int64"}


def _session_io(path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])

    def specs(values: list) -> list[TensorSpec]:
        return [TensorSpec(v.name, ONNX_DTYPES[v.type], tuple(v.shape)) for v in values]

    return specs(s.get_inputs()), specs(s.get_outputs())


@pytest.mark.parametrize("target", [pytest.param(t, id=t) for t in TARGETS])
def test_mobile_bundle_is_a_loadable_bundle_of_ort_files(packaged: Packaged, target: str) -> None:
    out, _ = packaged(target)
    bundle = load_bundle(out)
    assert {c.format for c in bundle.manifest.components} == {"ort"}
    assert all(c.file.endswith(".ort") for c in bundle.manifest.components)
    assert {a.name for a in bundle.manifest.assets} == {
        "vocab",
        "mobile_report",
        "mobile_report_md",
        "required_operators",
    }
    for c in bundle.manifest.components:
        assert check_io(c, *_session_io(bundle.component_path(c.name))) == []
        last = c.verification[-1]
        assert (last.stage, last.reference, last.passed) == ("mobile", "source-bundle", True)


@pytest.mark.parametrize("target", [pytest.param(t, id=t) for t in TARGETS])
def test_ort_files_reproduce_the_source_bundle(
    tiny_bundle: Path, packaged: Packaged, run_components: Callable, target: str
) -> None:
    out, _ = packaged(target)
    inputs = tiny_inputs(batch=1, seq=8, samples=160, seed=3)
    want = run_components(load_bundle(tiny_bundle), inputs)
    got = run_components(load_bundle(out), inputs)
    for component, outputs in want.items():
        for name, value in outputs.items():
            np.testing.assert_allclose(got[component][name], value, rtol=1e-5, atol=1e-5, err_msg=f"{component}.{name}")


def test_pipeline_runs_the_mobile_bundle_like_the_source(tiny_bundle: Path, packaged: Packaged) -> None:
    out, _ = packaged("android")
    raw = tiny_inputs(batch=1, seed=4)
    inputs = {"text": ["bright cat sky"], "image": raw["image"], "audio": raw["audio"]}
    with Pipeline(tiny_bundle, "cpu", threads=1) as source, Pipeline(out, "cpu", threads=1) as mobile:
        want, got = source.run(inputs), mobile.run(inputs)
    np.testing.assert_allclose(got["logits"], want["logits"], rtol=1e-5, atol=1e-5)


def test_android_fixes_every_dim_from_preprocessing_or_the_option(packaged: Packaged) -> None:
    out, report = packaged("android", fixed_shapes={"seq": 5, "samples": 320})
    assert report.fixed_dims == {"batch": 1, "samples": 320, "seq": 5}
    assert report.fixed_dim_origin == {"batch": "batch = 1", "samples": "fixed_shapes", "seq": "fixed_shapes"}
    bundle = load_bundle(out)
    assert bundle.manifest.input("text").shape == (1, 5)
    assert bundle.manifest.input("audio").shape == (1, 320)
    inputs, _ = _session_io(bundle.component_path("audio_encoder"))
    assert inputs[0].shape == (1, 320)
    _, outputs = _session_io(bundle.component_path("fusion_head"))
    assert outputs[0].shape == (1, 3)
    assert all(not c.dynamic_dims for c in report.components)


def test_default_sizes_are_what_the_runtime_pads_to(packaged: Packaged) -> None:
    _, report = packaged("ios")
    assert report.fixed_dims == {"batch": 1, "samples": 160, "seq": 8}  # max_length 8, not the example's 6
    assert report.fixed_dim_origin["seq"] == "text preprocessing"


def test_generic_fixes_only_the_named_dims(packaged: Packaged) -> None:
    out, report = packaged("generic", fixed_shapes={"batch": 1})
    assert report.component("text_encoder").dynamic_dims == ("seq",)
    bundle = load_bundle(out)
    assert bundle.manifest.component("text_encoder").inputs[0].shape == (1, "seq")
    session = ort.InferenceSession(bundle.component_path("text_encoder"), providers=["CPUExecutionProvider"])
    (features,) = session.run(None, {"text": np.zeros((1, 11), np.int64)})
    assert features.shape == (1, 4)


@pytest.mark.parametrize("target", [pytest.param(t, id=t) for t in TARGETS])
def test_report_lists_partitions_for_each_ep_of_the_target(packaged: Packaged, target: str) -> None:
    _, report = packaged(target)
    assert report.eps == TARGETS[target]
    for c in report.components:
        assert tuple(e.ep for e in c.eps) == TARGETS[target]
        for e in c.eps:
            assert e.total_nodes == sum(c.ops.values())
            assert sum(e.partition_sizes) == e.supported_nodes
            assert len(e.partition_sizes) == e.partitions


def test_report_says_which_nodes_each_ep_takes(packaged: Packaged) -> None:
    _, report = packaged("android")
    nnapi = {c.name: next(e for e in c.eps if e.ep == "NNAPI") for c in report.components}
    assert nnapi["fusion_head"].fully_supported
    assert nnapi["image_encoder"].fully_supported
    # the tiny audio encoder is a Conv1d: NNAPI only runs 2-D convolutions and pools
    audio = nnapi["audio_encoder"]
    assert not audio.fully_supported
    assert {u.op for u in audio.unsupported} == {"ai.onnx:Conv", "ai.onnx:GlobalAveragePool"}
    assert all("rank 3" in u.reason and "Conv2d" in u.fix for u in audio.unsupported)
    xnnpack = next(e for e in report.component("image_encoder").eps if e.ep == "XNNPACK")
    assert (xnnpack.supported_nodes, xnnpack.partitions) == (2, 1)  # Conv with its Relu fused


def test_required_operators_config_lists_every_op_of_the_bundle(packaged: Packaged) -> None:
    out, report = packaged("android")
    listed = set()
    for line in (out / "required_operators.config").read_text().splitlines():
        if not line.startswith("#"):
            domain, opset, ops = line.split(";")
            assert int(opset) > 0
            listed |= {f"{domain}:{op}" for op in ops.split(",")}
    assert listed == {op for c in report.components for op in c.ops}
    assert "ai.onnx:Gemm" in listed


def test_reports_are_written_into_the_bundle(packaged: Packaged) -> None:
    out, report = packaged("generic")
    assert json.loads((out / "mobile_report.json").read_text()) == json.loads(json.dumps(report.to_dict()))
    markdown = (out / "mobile_report.md").read_text()
    assert markdown == report.to_markdown()
    assert all(f"## {c.name}" in markdown for c in report.components)
    assert report.size_before == sum(c.size_before for c in report.components) > 0


def test_packaging_does_not_import_torch(tiny_bundle: Path, tmp_path: Path) -> None:
    code = (
        "import sys\nfrom mmedge.mobile.api import package_mobile\n"
        f"package_mobile({str(tiny_bundle)!r}, {str(tmp_path / 'm')!r}, target='android')\n"
        "sys.exit(3 if 'torch' in sys.modules else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr or "torch was imported"


def test_openvino_choices_of_the_source_do_not_follow_it_to_the_phone(
    tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """quantize's one OpenVINO graph and per-component OpenVINO backend are measured on the ONNX
    files; ORT-format files run on onnxruntime alone, so the mobile bundle drops the one graph and
    neither Pipeline nor ``mmedge inspect`` places a component on OpenVINO."""
    manifest = load_bundle(tiny_bundle).manifest
    measured = {"backend": {"backend": "openvino", "int8_instructions": [], "why": "test"}}
    write_manifest(
        tiny_bundle,
        dataclasses.replace(
            manifest,
            components=tuple(
                dataclasses.replace(c, quantization=measured) if c.name == "image_encoder" else c
                for c in manifest.components
            ),
            whole_graph={"components": [c.name for c in manifest.components], "chosen": True, "why": "test"},
        ),
    )
    assert main(["inspect", str(tiny_bundle)]) == 0
    source = " ".join("".join(capsys.readouterr()).split())  # rich wraps lines
    assert "runs on the OpenVINO runtime" in source
    assert "run as one OpenVINO graph" in source
    out = tmp_path / "mobile"
    package_mobile(tiny_bundle, out, target="android")
    assert load_bundle(out).manifest.whole_graph is None
    assert main(["inspect", str(out)]) == 0
    assert "OpenVINO" not in "".join(capsys.readouterr())
    with Pipeline(out, "cpu") as pipe:
        assert pipe.whole_graph == ()
        assert {p.registered[0] for p in pipe.providers_used.values()} == {"CPUExecutionProvider"}
