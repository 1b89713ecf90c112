"""INT8 captioner: dynamic INT8 decoder, caption agreement with FP32 in the quantization report."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mmedge.bundle import load_bundle
from mmedge.runtime import Pipeline

pytestmark = pytest.mark.slow


def test_report_has_caption_agreement_of_at_least_95_percent(int8) -> None:
    out, report = int8
    (caption,) = [o for o in report.outputs if o.name == "caption"]
    assert (caption.kind, caption.metric) == ("token_ids", "exact")
    assert caption.agreement >= 0.95
    assert report.agreement == caption.agreement  # the caption is the criterion of a generative bundle
    assert report.met
    assert report.holdout_samples == 8  # 64 images in samples of 8
    assert any("'caption' output measures it end to end" in n for n in report.notes)
    written = json.loads((out / "quantization_report.json").read_text())
    assert [o["name"] for o in written["outputs"]] == ["caption"]


def test_decoder_step_is_dynamic_int8_and_the_bundle_still_generates(int8) -> None:
    out, report = int8
    step = next(c for c in report.components if c.name == "decoder_step")
    assert (step.precision, step.recipe["mode"]) == ("int8", "dynamic")
    assert "DynamicQuantizeLSTM" in step.op_counts
    manifest = load_bundle(out).manifest
    assert manifest.component("decoder_step").precision == "int8"
    assert manifest.generation == load_bundle(report.source).manifest.generation


def test_int8_captions_match_fp32_on_held_out_images(trained, int8) -> None:
    images = trained.held_out.raw_images
    with Pipeline(trained.bundle, "cpu", threads=2) as fp32, Pipeline(int8[0], "cpu", threads=2) as quantized:
        want, got = fp32.generate(list(images)), quantized.generate(list(images))
    agreement = np.mean([a == b for a, b in zip(got.token_ids, want.token_ids, strict=True)])
    assert agreement >= 0.95
