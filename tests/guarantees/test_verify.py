"""The shared verifier: numerics, dims that must stay dynamic, derived second shapes, stage errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx
import pytest
from guarantees._rewrites import fix_batch_inside, fix_input_dim, keep_rows
from tinybundle import tiny_inputs

from mmedge.bundle import load_bundle
from mmedge.errors import ConfigError, ExportError, QuantizationError
from mmedge.verify import Tolerance, raise_failures, second_shape_feeds, verify_component


@pytest.fixture
def text(tiny_bundle: Path):
    """(the text encoder's manifest entry, its graph path, a feed of batch 2 and seq 6)."""
    bundle = load_bundle(tiny_bundle)
    return (
        bundle.manifest.component("text_encoder"),
        bundle.component_path("text_encoder"),
        {"text": tiny_inputs()["text"]},
    )


def _rewritten(path: Path, tmp_path: Path, rewrite) -> Path:
    out = tmp_path / "candidate.onnx"
    onnx.save(rewrite(onnx.load(str(path))), str(out))
    return out


def test_identical_graph_passes_on_a_derived_second_shape(text) -> None:
    component, path, feed = text
    v = verify_component(path, path, component, [feed], stage="optimize", reference_name="fp32-bundle")
    assert v.passed, v.detail
    assert v.dynamic_dims_ok
    assert v.shapes == (((2, 6),), ((3, 5),))  # batch + 1, seq shortened by a quarter
    assert "dynamic dims batch 2/3, seq 6/5" in v.detail
    assert (v.stage, v.reference, v.max_abs_error) == ("optimize", "fp32-bundle", 0.0)


@pytest.mark.parametrize(
    ("rewrite", "found"),
    [
        pytest.param(
            lambda m: keep_rows(m, "tok"),
            "is [2, 4] on inputs text[3, 5], the reference gives [3, 4]",
            id="slice-inside",
        ),
        pytest.param(
            lambda m: fix_batch_inside(m, "tok", rank=3),
            "output 'text_features' dim 0 ('batch') is declared dynamic but the graph fixes it to 2",
            id="reshape-inside",
        ),
        pytest.param(
            lambda m: fix_input_dim(m, "text", 0, 2), "declared dynamic but the graph fixes it to 2", id="io-dim"
        ),
    ],
)
def test_a_rewrite_that_fixes_a_dim_is_caught_and_named(text, tmp_path: Path, rewrite, found: str) -> None:
    component, path, feed = text
    broken = _rewritten(path, tmp_path, rewrite)
    v = verify_component(broken, path, component, [feed], stage="optimize", reference_name="fp32-bundle")
    assert not v.passed
    assert not v.dynamic_dims_ok
    assert found in v.detail
    with pytest.raises(
        ExportError,
        match=r"(?s)stage 'optimize' broke 1 component.*component 'text_encoder' \(a dynamic dim was lost\)",
    ):
        raise_failures("optimize", {"text_encoder": v}, ExportError)


def test_numerics_beyond_tolerance_fail_but_a_lossy_stage_only_reports_them(text, tmp_path: Path) -> None:
    component, path, feed = text

    def scaled(feed_: dict) -> dict:
        return {"text_features": 1.01 * verify_runner(path)(feed_)["text_features"]}

    v = verify_component(scaled, path, component, [feed], stage="quantize", reference_name="fp32-bundle")
    assert not v.passed
    assert v.dynamic_dims_ok
    assert "exceeds atol=0.0001" in v.detail
    raise_failures("quantize", {"text_encoder": v}, QuantizationError, dims_only=True)  # numbers alone do not fail
    with pytest.raises(QuantizationError, match=r"component 'text_encoder' \(outputs differ\)"):
        raise_failures("quantize", {"text_encoder": v}, QuantizationError)
    lossy = verify_component(
        scaled,
        path,
        component,
        [feed],
        stage="quantize",
        reference_name="fp32-bundle",
        tolerance=Tolerance(min_cosine=0.98),
    )
    assert lossy.passed, lossy.detail  # a uniform scale keeps the cosine at 1
    assert "min cosine 1.00000 (pass >= 0.98)" in lossy.detail


def verify_runner(path: Path):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda feed: dict(zip([o.name for o in session.get_outputs()], session.run(None, feed), strict=True))


def test_second_shape_feed_keeps_values_valid_and_rows_different(text) -> None:
    component, _, feed = text
    second = second_shape_feeds(component, feed)
    assert second["text"].shape == (3, 5)
    assert set(np.unique(second["text"])) <= set(np.unique(feed["text"]))  # ids stay in the vocabulary
    np.testing.assert_array_equal(second["text"][0], feed["text"][1, :5])  # one row later, cyclic
    only_seq = second_shape_feeds(component, feed, ["seq"])
    assert only_seq["text"].shape == (2, 5)


def test_precomputed_references_need_feeds_that_vary_every_dim(text) -> None:
    component, path, feed = text
    with pytest.raises(ConfigError, match=r"dims \['batch', 'seq'\] one size only"):
        verify_component(
            path, [{"text_features": np.zeros((2, 4))}], component, [feed], stage="export", reference_name="pytorch"
        )


def test_a_fixed_dim_the_manifest_declares_fixed_is_not_a_failure(text, tmp_path: Path) -> None:
    component, path, feed = text
    fixed = _rewritten(path, tmp_path, lambda m: fix_input_dim(m, "text", 0, 2))
    mobile = dataclasses.replace(
        component,
        inputs=(dataclasses.replace(component.inputs[0], shape=(2, "seq")),),
        outputs=(dataclasses.replace(component.outputs[0], shape=(2, 4)),),
    )
    v = verify_component(fixed, path, mobile, [feed], stage="mobile", reference_name="source-bundle")
    assert v.passed, v.detail
    assert v.shapes == (((2, 6),), ((2, 5),))  # only seq is varied: the manifest says batch is fixed
