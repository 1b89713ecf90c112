"""``bench`` on the tiny bundle: every field filled, a stable JSON schema, attribution that adds
up, and the Markdown report and PNG chart. No timing assertions besides the attribution sum."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from tinybundle import tiny_manifest

from mmedge.bench import BenchReport, bench

SCHEMA_FILE = Path(__file__).with_name("expected_schema.json")
FREE_FORM = ("machine.versions", "settings.items")  # keys are package names and batch symbols, not schema
BATCHES = (1, 3)
COMPONENTS = tuple(c.name for c in tiny_manifest().components)


@pytest.fixture(scope="module")
def report(mono_bundle: Path) -> BenchReport:
    """One small benchmark of the tiny bundle against its monolithic model, shared by the tests."""
    return bench(mono_bundle, batch_sizes=BATCHES, iterations=20, warmup=2, threads=1, profile_runs=3)


def key_paths(value: Any, path: str = "") -> set[str]:
    """Every key path of a JSON value; list items are ``[]``, free-form dicts are leaves."""
    if isinstance(value, dict) and path not in FREE_FORM:
        return {p for k, v in value.items() for p in key_paths(v, f"{path}.{k}" if path else k)}
    if isinstance(value, list):  # an empty list still counts as a list
        return {p for item in value for p in key_paths(item, f"{path}[]")} or {f"{path}[]"}
    return {path}


def test_every_variant_has_every_field(report: BenchReport) -> None:
    assert [v.name for v in report.variants] == ["split FP32", "monolithic FP32"]
    assert not report.partial
    for v in report.variants:
        assert [b.batch for b in v.batches] == list(BATCHES)
        assert all(b.latency.count == 20 for b in v.batches)
        assert all(b.latency.min_ms <= b.latency.p50_ms <= b.latency.p90_ms <= b.latency.p99_ms for b in v.batches)
        assert all(b.throughput_per_s > 0 for b in v.batches)
        assert v.size_bytes > 0
        assert v.peak_rss_bytes > 0
        assert v.startup is not None
        assert v.startup.cold_start_ms > v.startup.load_ms > 0
        assert v.startup.first_run_ms > 0
        assert v.providers == ("CPUExecutionProvider",)
    split, mono = report.variants
    assert [c.name for c in split.batches[0].components] == list(COMPONENTS)
    assert [h.component for h in split.hotspots] == list(COMPONENTS)
    assert {o.op for o in split.hotspots[1].ops} >= {"Conv"}
    assert [h.component for h in mono.hotspots] == ["model"]
    assert all(h.runs == 3 and h.kernel_ms_per_run > 0 for h in (*split.hotspots, *mono.hotspots))
    assert [(c.baseline, c.batch) for c in report.comparisons] == [("monolithic FP32", b) for b in BATCHES]
    assert report.machine.physical_cores > 0
    assert "onnxruntime" in report.machine.versions
    assert report.settings.threads == 1


# Calls long enough (about 1 and 3 ms) that the fixed call overhead no part covers (about 10 µs of
# Python) is well inside the 5% bound: at batch 1 the tiny bundle's call takes 0.2 ms, and that
# overhead alone is 3-5% of it, so a slower CI machine crossed the bound with nothing missing.
ATTRIBUTION_BATCHES = (128, 512)


@pytest.fixture(scope="module")
def long_calls(mono_bundle: Path) -> BenchReport:
    return bench(mono_bundle, batch_sizes=ATTRIBUTION_BATCHES, iterations=20, warmup=2, threads=1, profile=False)


@pytest.mark.parametrize("batch", ATTRIBUTION_BATCHES)
def test_split_attribution_sums_to_the_end_to_end_time(long_calls: BenchReport, batch: int) -> None:
    result = long_calls.variant("split FP32").at(batch)
    assert result is not None
    a = result.attribution
    assert [p.name for p in a.parts] == ["preprocess", *COMPONENTS, "copies", "postprocess"]
    assert all(p.mean_ms >= 0 for p in a.parts)
    assert a.attributed_ms == pytest.approx(a.end_to_end_ms, rel=0.05)
    assert sum(p.share for p in a.parts) == pytest.approx(a.coverage, rel=1e-9)


def test_json_schema_is_stable(report: BenchReport) -> None:
    """The report's key paths are the committed list: a change here must bump SCHEMA_VERSION."""
    data = json.loads(json.dumps(report.to_dict()))
    expected = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    assert data["schema_version"] == expected["schema_version"]
    assert sorted(key_paths(data)) == expected["keys"]


def test_markdown_report_has_every_section(report: BenchReport) -> None:
    text = report.to_markdown()
    for heading in (
        "End-to-end latency, batch 1",
        "against each baseline",
        "Start-up",
        "Throughput",
        "Per component",
        "Where the time goes",
        "Hot spots",
    ):
        assert heading in text
    assert "| split FP32 |" in text
    assert report.machine.cpu in text


def test_chart_is_a_png(report: BenchReport, tmp_path: Path) -> None:
    path = report.write_chart(tmp_path / "charts" / "bench.png", batch=3)
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size[0] > 1000


def _run_standard() -> Any:
    path = Path(__file__).parents[2] / "benchmarks" / "run_standard.py"
    spec = importlib.util.spec_from_file_location("run_standard", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("scale", "status", "margin"), [(0.5, "PASS", 1.0), (2.0, "MISS", -0.5)])
def test_standard_targets_report_pass_or_miss_with_margins(
    report: BenchReport, scale: float, status: str, margin: float
) -> None:
    std = _run_standard()
    probe = std.Target("x", "mono vs split", "monolithic FP32", "split FP32", "latency", at_least=1.0)
    value = probe.value(report)
    mono, split = report.variant("monolithic FP32").at(1), report.variant("split FP32").at(1)
    assert value == pytest.approx(mono.latency.p50_ms / split.latency.p50_ms)
    target = std.Target("x", "", "monolithic FP32", "split FP32", "latency", at_least=value * scale)
    result = target.check([report, report, report])  # the median over runs is judged; each run is kept
    assert (result["status"], result["margin"]) == (status, pytest.approx(margin))
    assert result["runs"] == [value] * 3
    assert result["value_from_min_latency"] == pytest.approx(mono.latency.min_ms / split.latency.min_ms)
    memory = std.Target("m", "", "split FP32", "monolithic FP32", "rss", at_most=value).check([report])
    assert memory["value"] == pytest.approx(
        report.variant("split FP32").peak_rss_bytes / report.variant("monolithic FP32").peak_rss_bytes
    )
    assert memory["value_from_min_latency"] is None


def test_each_speedup_has_its_interval_over_the_rounds(report: BenchReport) -> None:
    for c in report.comparisons:
        assert c.speedup_interval is not None
        low, high = c.speedup_interval
        assert 0 < low <= high
        assert 0.95 * low <= c.speedup <= 1.05 * high  # type: ignore[operator] - the p50 ratio, resampled


def test_the_interval_is_narrow_for_a_steady_gap_and_spans_one_for_noise() -> None:
    from mmedge.bench._stats import median_ratio_interval

    rng = np.random.default_rng(1)
    base = rng.normal(10e6, 1e6, 100)
    low, high = median_ratio_interval(base * 2, base)  # type: ignore[misc] - same noise, twice the time
    assert 1.95 < low <= high < 2.05
    low, high = median_ratio_interval(rng.normal(10e6, 1e6, 100), rng.normal(10e6, 1e6, 100))  # type: ignore[misc]
    assert low < 1.0 < high
    assert median_ratio_interval([1, 2], [1, 2]) is None  # too few rounds
