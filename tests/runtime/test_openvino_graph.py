"""A bundle's components as one OpenVINO graph: same outputs as the split plan, when it is used and
when not, shapes compiled fixed, further batch sizes in chunks of them (compiled in the background for
servers), and the same input checks."""

from __future__ import annotations

import dataclasses
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from tinybundle import tiny_inputs

from mmedge import openvino_graph
from mmedge.bundle import load_bundle, manifest_from_dict, manifest_to_dict, write_manifest
from mmedge.errors import InputError, MMEdgeError
from mmedge.graph import Graph
from mmedge.openvino_graph import OpenVINOGraph
from mmedge.providers import CPU, OPENVINO
from mmedge.runtime import Pipeline
from mmedge.runtime import policy as policy_module

pytest.importorskip("openvino")

ALL = ("text_encoder", "image_encoder", "audio_encoder", "fusion_head")


def _record(components: tuple[str, ...] = ALL, *, chosen: bool = True, instructions: tuple[str, ...] = ()) -> dict:
    return {"components": list(components), "chosen": chosen, "int8_instructions": list(instructions), "why": "test"}


def _with_record(bundle: Path, record: dict | None) -> Path:
    manifest = load_bundle(bundle).manifest
    write_manifest(bundle, dataclasses.replace(manifest, whole_graph=record))
    return bundle


def test_the_one_graph_gives_the_split_outputs_at_each_shape(
    tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = load_bundle(tiny_bundle)
    files = {c.name: bundle.path / c.file for c in bundle.manifest.components}
    graph = OpenVINOGraph(bundle.manifest, files, ALL, threads=1, max_shapes=2)
    assert graph.inputs == ("text", "image", "audio")
    assert graph.outputs == (("fusion_head", "logits"),)
    with Pipeline(tiny_bundle, "cpu") as split:
        for batch, seq in ((1, 6), (3, 6), (3, 6)):
            x = tiny_inputs(batch=batch, seq=seq, seed=batch + seq)
            got = graph.run(x)[("fusion_head", "logits")]
            np.testing.assert_allclose(got, split.run(x)["logits"], rtol=1e-4, atol=1e-5)
    # a third shape is past max_shapes: never compiled with dynamic dimensions, the caller runs it split
    assert graph.run(tiny_inputs(batch=2, seq=9)) is None
    assert graph.shapes == (((1, 6), (1, 3, 8, 8), (1, 160)), ((3, 6), (3, 3, 8, 8), (3, 160)))


def test_shapes_past_the_compiled_ones_run_in_chunks_or_component_by_component(
    tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Pipeline answers every shape: the one graph for the first max_graph_shapes; a further batch size
    in chunks of the compiled ones; another sequence length on each component's own session (the
    split plan); the same outputs throughout, and the one graph again after."""
    spans: list[tuple[str, str]] = []

    def trace(kind: str, name: str, *_: int) -> None:
        spans.append((kind, name))

    with (
        Pipeline(tiny_bundle, "cpu") as split,
        Pipeline(tiny_bundle, "openvino", lazy=True, trace=trace, max_graph_shapes=2) as one,
    ):
        graph = one._whole.graph
        for batch, seq, runs in ((1, 6, "graph"), (3, 6, "graph"), (7, 6, "graph"), (2, 9, "split"), (1, 6, "graph")):
            spans.clear()
            x = tiny_inputs(batch=batch, seq=seq, seed=batch)
            np.testing.assert_allclose(one.run(x)["logits"], split.run(x)["logits"], rtol=1e-4, atol=1e-5)
            ran = {name for kind, name in spans if kind == "component"}
            assert ran == ({"one OpenVINO graph"} if runs == "graph" else set(ALL)), (batch, seq)
            assert [kind for kind, _ in spans].count("execute") == 1
        assert {s[0] for s in graph.shapes} == {(1, 6), (3, 6)}  # 7 ran as 3 + 3 + 1, nothing compiled for it
        assert one.whole_graph == ALL


def test_tensors_without_a_batch_axis_are_never_cut_into_chunks(tiny_bundle: Path) -> None:
    """A raw input whose first axis is fixed is not a batch of rows: past the compiled shapes such a
    call runs split rather than in chunks."""
    bundle = load_bundle(tiny_bundle)
    files = {c.name: bundle.path / c.file for c in bundle.manifest.components}
    fixed = [dataclasses.replace(i, shape=(3, *i.shape[1:])) if i.name == "text" else i for i in bundle.manifest.inputs]
    manifest = dataclasses.replace(bundle.manifest, inputs=tuple(fixed))
    for m, chunked in ((bundle.manifest, True), (manifest, False)):
        graph = OpenVINOGraph(m, files, ALL, threads=1, max_shapes=1)
        assert graph.run(tiny_inputs(batch=1, seed=3)) is not None
        assert (graph.run(tiny_inputs(batch=3, seed=3)) is not None) is chunked


def test_a_new_shape_compiles_in_the_background_while_its_calls_run_in_chunks(
    tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``wait=False`` never compiles in the call: a new batch size runs in chunks of the compiled
    batch sizes (here one row at a time) while its power-of-two bucket compiles, then on that
    bucket's graph (in chunks of it); the same outputs throughout."""
    bundle = load_bundle(tiny_bundle)
    files = {c.name: bundle.path / c.file for c in bundle.manifest.components}
    graph = OpenVINOGraph(bundle.manifest, files, ALL, threads=1)
    compiled = []
    real = graph._compiled_model

    def slow(signature: tuple) -> object:
        compiled.append(signature[0][0])
        if signature[0][0] > 1:
            assert gate.wait(30)  # held until the test has seen the answer in chunks
        return real(signature)

    gate = threading.Event()
    monkeypatch.setattr(graph, "_compiled_model", slow)
    assert graph.run(tiny_inputs(batch=1, seed=1), wait=False) is None  # nothing compiled yet: run split
    graph.join()
    with Pipeline(tiny_bundle, "cpu") as split:
        for batch, expect in ((4, [1, 4]), (6, [1, 4]), (3, [1, 4, 2])):
            x = tiny_inputs(batch=batch, seed=batch)
            want = split.run(x)["logits"]
            got = graph.run(x, wait=False)
            assert got is not None  # answered while its bucket compiles (held at the gate)
            np.testing.assert_allclose(got[("fusion_head", "logits")], want, rtol=1e-4, atol=1e-5)
            gate.set()
            graph.join()
            gate.clear()
            assert compiled == expect, batch  # 6 runs as 4 + 1 + 1 and compiles nothing: its bucket is 4
            np.testing.assert_allclose(graph.run(x, wait=False)[("fusion_head", "logits")], want, rtol=1e-4, atol=1e-5)
        assert sorted(s[0][0] for s in graph.shapes) == [1, 2, 4]


def test_a_pipeline_compiling_in_the_background_answers_every_shape_at_once(
    tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        Pipeline(tiny_bundle, "cpu") as split,
        Pipeline(tiny_bundle, "openvino", compile_in_background=True, max_graph_shapes=2) as one,
    ):
        graph = one._whole.graph
        for batch in (1, 3, 3, 2, 4):
            x = tiny_inputs(batch=batch, seed=batch)
            np.testing.assert_allclose(one.run(x)["logits"], split.run(x)["logits"], rtol=1e-4, atol=1e-5)
            graph.join()
        assert {s[0][0] for s in graph.shapes} == {1, 2}  # the example shape, then 3's bucket (of 2)

    def broken(*_args: object) -> None:
        raise RuntimeError("Exception from src/core: out of memory")

    with (
        caplog.at_level(logging.WARNING, logger="mmedge.runtime"),
        Pipeline(tiny_bundle, "openvino", compile_in_background=True) as one,
    ):
        monkeypatch.setattr(one._whole.graph, "_compiled_model", broken)
        for _ in range(2):  # a failed compile is logged once, and the shape still answers
            assert one.run(tiny_inputs(batch=3))["logits"].shape == (3, 3)
            one._whole.graph.join()
    assert caplog.text.count("cannot compile it") == 1


def test_every_component_asked_for_openvino_runs_as_one_request(tiny_bundle: Path) -> None:
    x = tiny_inputs(batch=3, seed=5)
    with Pipeline(tiny_bundle, "cpu") as split, Pipeline(tiny_bundle, "openvino") as one:
        assert one.whole_graph == ALL
        assert split.whole_graph == ()
        assert {c: p.registered for c, p in one.providers_used.items()} == dict.fromkeys(ALL, (OPENVINO,))
        np.testing.assert_allclose(one.run(x)["logits"], split.run(x)["logits"], rtol=1e-4, atol=1e-5)
        # encode() and precomputed encoder outputs take the components' own sessions
        image = one.encode("image", x["image"])
        np.testing.assert_allclose(
            one.run({"text": x["text"], "audio": x["audio"], **image})["logits"],
            split.run(x)["logits"],
            rtol=1e-4,
            atol=1e-5,
        )


def test_a_recorded_choice_is_followed_for_auto_and_cpu_only(tiny_bundle: Path) -> None:
    bundle = _with_record(tiny_bundle, _record())
    for request in ("auto", "cpu", {"*": "cpu"}):
        with Pipeline(bundle, request) as p:
            assert p.whole_graph == ALL, request
    with Pipeline(bundle, {"image": "openvino", "*": "cpu"}) as p:  # asked otherwise: taken as asked
        assert p.whole_graph == ()
        assert p.providers_used["text_encoder"].registered == (CPU,)


@pytest.mark.parametrize(
    ("record", "why"),
    [
        (_record(chosen=False), "not chosen"),
        (_record(ALL[1:]), "recorded for other components"),
        (_record(instructions=("no_such_instruction",)), "measured on a CPU with INT8 instructions this one lacks"),
        (None, "no record"),
    ],
)
def test_without_a_valid_record_auto_runs_split(tiny_bundle: Path, record: dict | None, why: str) -> None:
    with Pipeline(_with_record(tiny_bundle, record), "auto") as p:
        assert p.whole_graph == (), why


def test_without_openvino_the_record_is_ignored(tiny_bundle: Path) -> None:
    manifest = load_bundle(_with_record(tiny_bundle, _record())).manifest
    plans = policy_module.component_plans("auto", manifest, fallback=False, available=[CPU])
    assert policy_module.one_openvino_graph("auto", manifest, plans, ALL, available=[CPU]) is None
    assert policy_module.one_openvino_graph("auto", manifest, plans, ALL, available=[CPU, OPENVINO]) is not None


def test_the_record_survives_the_manifest_round_trip(tiny_bundle: Path) -> None:
    manifest = load_bundle(_with_record(tiny_bundle, _record())).manifest
    assert manifest_from_dict(manifest_to_dict(manifest)).whole_graph == _record()
    assert "whole_graph" not in manifest_to_dict(dataclasses.replace(manifest, whole_graph=None))


def test_inputs_are_checked_as_in_the_split_plan(tiny_bundle: Path) -> None:
    x = tiny_inputs(batch=2, seed=1)
    x["image"][1, 0, 2, 3] = np.nan
    with Pipeline(tiny_bundle, "openvino") as one, pytest.raises(InputError, match=r"input 'image'.*NaN"):
        one.run(x)
    x = tiny_inputs(batch=2, seed=1)
    x["text"] = x["text"].astype(np.int32)
    with Pipeline(tiny_bundle, "openvino") as one, pytest.raises(InputError, match=r"expected int64"):
        one.run(x)


def test_a_closed_pipeline_refuses_to_run(tiny_bundle: Path) -> None:
    one = Pipeline(tiny_bundle, "openvino")
    one.close()
    assert one.whole_graph == ()
    with pytest.raises(MMEdgeError, match="closed"):
        one.run(tiny_inputs())


def test_runs_from_many_threads_at_once(tiny_bundle: Path) -> None:
    inputs = [tiny_inputs(batch=1 + i % 3, seed=i) for i in range(12)]
    with Pipeline(tiny_bundle, "openvino") as one:
        alone = [one.run(x)["logits"] for x in inputs]
        with ThreadPoolExecutor(4) as pool:
            together = list(pool.map(lambda x: one.run(x)["logits"], inputs))
    for a, b in zip(alone, together, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_graph_openvino_cannot_compile_runs_split(
    tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("Exception from src/core: unsupported operation")

    monkeypatch.setattr(openvino_graph, "_compose", broken)
    with caplog.at_level(logging.WARNING, logger="mmedge.runtime"), Pipeline(tiny_bundle, "openvino") as p:
        assert p.whole_graph == ()
        assert p.run(tiny_inputs())["logits"].shape == (2, 3)
    assert "cannot run them as one graph" in caplog.text


def test_the_trace_names_the_one_graph(tiny_bundle: Path) -> None:
    from mmedge.bench._variants import pipeline_sample
    from mmedge.runtime.pipeline import WHOLE_GRAPH

    spans: list[tuple[str, str, int, int]] = []
    with Pipeline(tiny_bundle, "openvino", trace=lambda *span: spans.append(span)) as p:
        p.run(tiny_inputs())
    assert [name for kind, name, *_ in spans if kind == "component"] == [WHOLE_GRAPH]
    sample = pipeline_sample(10**6, spans, Graph(p.manifest).full_plan)
    assert WHOLE_GRAPH in sample.busy
    assert any(name == WHOLE_GRAPH and kind == "component" for name, kind, _ in sample.parts)
