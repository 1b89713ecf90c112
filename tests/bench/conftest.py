"""Bundles for the bench tests: the tiny bundle plus its whole model as a ``monolithic`` asset,
built once per module."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import onnx
import pytest
from onnx import helper
from tinybundle import OPSET, build_tiny_bundle

from mmedge.bundle import Asset, load_bundle, staged_bundle, write_manifest

COMPONENTS = ("text_encoder", "image_encoder", "audio_encoder", "fusion_head")


def _prefixed(graph: onnx.GraphProto, prefix: str) -> onnx.GraphProto:
    """The graph with every internal tensor and initializer renamed, so graphs can be merged."""
    keep = {v.name for v in (*graph.input, *graph.output)}
    g = onnx.GraphProto()
    g.CopyFrom(graph)

    def rename(name: str) -> str:
        return name if not name or name in keep else f"{prefix}/{name}"

    for node in g.node:
        node.input[:] = [rename(n) for n in node.input]
        node.output[:] = [rename(n) for n in node.output]
        node.name = f"{prefix}/{node.name or node.op_type}"
    for init in g.initializer:
        init.name = rename(init.name)
    return g


def monolithic_model(bundle: Path) -> onnx.ModelProto:
    """The tiny bundle's four graphs merged into one model taking the raw inputs."""
    graphs = {c: _prefixed(onnx.load(str(bundle / f"{c}.onnx")).graph, c) for c in COMPONENTS}
    encoders = [graphs[c] for c in COMPONENTS[:3]]
    merged = helper.make_graph(
        [n for g in graphs.values() for n in g.node],
        "tiny_monolithic",
        [g.input[0] for g in encoders],
        list(graphs["fusion_head"].output),
        [i for g in graphs.values() for i in g.initializer],
    )
    model = helper.make_model(merged, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 9
    onnx.checker.check_model(model, full_check=True)
    return model


def build_with_monolithic(out: Path) -> Path:
    """The tiny bundle, carrying its whole model as the ``monolithic`` asset (model.onnx)."""
    tiny = build_tiny_bundle(out.with_name(out.name + "-split"))
    manifest = load_bundle(tiny).manifest
    with staged_bundle(out) as stage:
        for f in [c.file for c in manifest.components] + [a.file for a in manifest.assets]:
            shutil.copy(tiny / f, stage / f)
        onnx.save(monolithic_model(tiny), stage / "model.onnx")
        assets = (*manifest.assets, Asset(name="monolithic", file="model.onnx"))
        write_manifest(stage, dataclasses.replace(manifest, assets=assets))
    return out


@pytest.fixture(scope="module")
def mono_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_with_monolithic(tmp_path_factory.mktemp("bench") / "tiny-mono")
