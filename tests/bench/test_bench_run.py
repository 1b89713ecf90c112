"""``mmedge bench`` end to end on the tiny bundle: the CLI, Ctrl-C, errors from worker processes,
the PyTorch variant, and runtime processes that never import torch."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rawsamples import write_samples
from tinybundle import tiny_manifest
from torchfree import NO_TORCH

from mmedge.bench import BenchProgress, _coord, bench
from mmedge.bench import cli as bench_cli
from mmedge.bench._inputs import load_arrays
from mmedge.bundle import load_bundle
from mmedge.cli import main
from mmedge.errors import InputError

FAST = ["--iterations", "2", "--warmup", "0", "--threads", "1"]
COMPONENTS = [c.name for c in tiny_manifest().components]


def _interrupt_after(rounds: int) -> Callable[[BenchProgress], None]:
    def progress(event: BenchProgress) -> None:
        if event.phase == "measure" and event.done == rounds:
            raise KeyboardInterrupt

    return progress


def test_cli_prints_json_and_writes_report_files(
    mono_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert (
        main(["bench", str(mono_bundle), *FAST, "--batch-sizes", "1,2", "--no-profile", "--json", "--out", str(out)])
        == 0
    )
    data = json.loads(capsys.readouterr().out)
    assert [v["name"] for v in data["variants"]] == ["split FP32", "monolithic FP32"]
    assert [b["batch"] for b in data["variants"][0]["batches"]] == [1, 2]
    assert json.loads((out / "bench.json").read_text(encoding="utf-8"))["variants"] == data["variants"]
    assert "# mmedge bench: split FP32" in (out / "bench.md").read_text(encoding="utf-8")
    assert (out / "bench.png").read_bytes().startswith(b"\x89PNG")


def test_cli_shows_tables(tiny_bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", str(tiny_bundle), *FAST]) == 0
    err = capsys.readouterr().err
    for title in ("End-to-end latency, batch 1", "Start-up", "Per component", "Where the time goes", "Hot spots"):
        assert title in err
    assert "image_encoder" in err


def test_interrupt_returns_what_was_measured(tiny_bundle: Path) -> None:
    report = bench(tiny_bundle, batch_sizes=(1, 2), iterations=10, warmup=0, threads=1, progress=_interrupt_after(3))
    assert report.partial
    (variant,) = report.variants
    assert [(b.batch, b.latency.count) for b in variant.batches] == [(1, 3)]
    assert variant.hotspots == ()
    assert variant.peak_rss_bytes > 0
    assert "PARTIAL" in report.to_markdown()


def test_cli_interrupt_prints_partial_tables_and_exits_130(
    tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = bench_cli.bench

    def interrupted(*args: Any, progress: Callable[[BenchProgress], None], **kwargs: Any) -> Any:
        def both(event: BenchProgress) -> None:
            progress(event)
            _interrupt_after(2)(event)

        return real(*args, progress=both, **kwargs)

    monkeypatch.setattr(bench_cli, "bench", interrupted)
    assert main(["bench", str(tiny_bundle), "--iterations", "10", "--threads", "1", "--warmup", "0"]) == 130
    err = capsys.readouterr().err
    assert "End-to-end latency" in err
    assert "interrupted" in err


def test_a_failing_variant_raises_its_typed_error(tiny_bundle: Path, tmp_path: Path) -> None:
    arrays = {
        "text": np.ones((1, 6), np.int64),
        "image": np.zeros((1, 3, 8, 8), np.float64),
        "audio": np.zeros((1, 160), np.float32),
    }
    with pytest.raises(InputError, match=r"variant 'split FP32': .*image"):
        bench(tiny_bundle, inputs=arrays, iterations=1, threads=1)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        pytest.param({"torch_model": "not a model!"}, InputError, "reference model name", id="torch-spec"),
        pytest.param({"batch_sizes": (0,)}, ValueError, "batch_sizes must be positive", id="batch"),
        pytest.param({"iterations": 0}, ValueError, "iterations must be at least 1", id="iterations"),
        pytest.param({"warm_runs": -1}, ValueError, "warm_runs must be 0 or more", id="warm-runs"),
        pytest.param({"processes": 0}, ValueError, "processes must be an int from 1 to 16", id="processes"),
        pytest.param({"checkpoint": "model.pt"}, InputError, "without a PyTorch model", id="checkpoint-alone"),
        pytest.param({"cache_dir": 3}, ValueError, "cache_dir must be a directory path", id="cache-dir"),
    ],
)
def test_bad_options_fail_before_any_process_starts(tiny_bundle: Path, kwargs: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        bench(tiny_bundle, **kwargs)


def test_runtime_processes_never_import_torch(
    mono_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every worker starts with a guard (sitecustomize) that makes importing torch fail."""
    (tmp_path / "sitecustomize.py").write_text(NO_TORCH, encoding="utf-8")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    report = bench(mono_bundle, iterations=1, warmup=0, threads=1, profile_runs=1)
    assert [v.name for v in report.variants] == ["split FP32", "monolithic FP32"]


def test_pytorch_variant_is_timed_per_encoder(tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    here = str(Path(__file__).parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")])))
    report = bench(
        tiny_bundle, torch_model="tiny_torch_model:TinyTorch", iterations=3, warmup=1, threads=1, profile_runs=2
    )
    torch_variant = report.variant("PyTorch eager FP32")
    batch = torch_variant.at(1)
    assert batch is not None
    assert [c.name for c in batch.components] == COMPONENTS
    assert batch.attribution.attributed_ms == pytest.approx(batch.attribution.end_to_end_ms)
    assert torch_variant.startup is not None
    assert torch_variant.startup.import_ms > 0
    assert torch_variant.size_bytes > 0
    (hot,) = torch_variant.hotspots
    assert any(o.op.startswith("aten::") for o in hot.ops)
    assert [c.baseline for c in report.comparisons] == ["PyTorch eager FP32"]


def test_peak_rss_is_the_workers_own_not_its_parents(tiny_bundle: Path) -> None:
    """Linux keeps ru_maxrss across fork and exec; a big parent must not inflate the worker's peak."""
    ballast = np.ones(400 * 2**20 // 8)  # 400 MiB, touched, in this (the parent) process
    report = bench(tiny_bundle, iterations=1, warmup=0, threads=1, profile=False)
    assert ballast.sum() > 0
    assert 0 < report.variants[0].peak_rss_bytes < 300 * 2**20


def test_a_time_budget_replaces_the_iteration_count(tiny_bundle: Path) -> None:
    events: list[BenchProgress] = []
    report = bench(
        tiny_bundle, iterations=1, warmup=0, time_budget_s=0.3, threads=1, profile=False, progress=events.append
    )
    measured = [e for e in events if e.phase == "measure"]
    assert all(e.total is None for e in measured)
    assert measured[-1].fraction == pytest.approx(1.0)
    assert report.variants[0].batches[0].latency.count == len(measured) > 1
    assert report.settings.time_budget_s == 0.3


def test_warm_runs_follow_each_timed_run_and_are_reported_apart(mono_bundle: Path) -> None:
    """A round's run meets the machine as the other variants left it; the warm runs right after it
    measure the steady state. Both are reported, and the subject's speed-up over each."""
    report = bench(mono_bundle, iterations=3, warmup=0, warm_runs=2, threads=1, profile=False)
    assert report.settings.warm_runs == 2
    for v in report.variants:
        b = v.batches[0]
        assert b.latency.count == 3
        assert b.warm_latency is not None
        assert b.warm_latency.count == 6
    (c,) = report.comparisons
    assert c.warm_speedup == pytest.approx(
        report.variants[1].batches[0].warm_latency.p50_ms / report.variants[0].batches[0].warm_latency.p50_ms  # type: ignore[union-attr]
    )
    text = report.to_markdown()
    assert "warm p50 ms" in text
    assert "warm speed-up (p50)" in text
    assert "2 more runs of each variant follow it back to back" in text
    plain = bench(mono_bundle, iterations=1, warmup=0, threads=1, profile=False, monolithic=False)
    assert plain.variants[0].batches[0].warm_latency is None
    assert "warm p50" not in plain.to_markdown()


def test_each_variant_runs_in_as_many_processes_taken_in_turn(
    mono_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where a process lands moves its latency for its whole life: with ``processes`` the rounds take
    each variant's processes in turn, so every process runs an equal share of the timed rounds."""
    runs: dict[int, int] = {}  # worker → timed and warm-up runs
    request = _coord.Worker.request

    def counting(self: _coord.Worker, command: dict) -> dict:
        if command.get("cmd") == "run":
            runs[id(self)] = runs.get(id(self), 0) + 1
        return request(self, command)

    monkeypatch.setattr(_coord.Worker, "request", counting)
    report = bench(mono_bundle, iterations=4, warmup=0, processes=2, threads=1, profile=False)
    assert report.settings.processes == 2
    assert sorted(runs.values()) == [2, 2, 2, 2]  # two variants, two processes each, four rounds
    assert all(v.batches[0].latency.count == 4 for v in report.variants)
    assert "every variant in 2 fresh processes, taken in turn by the rounds" in report.to_markdown()


def test_the_subject_is_timed_again_under_each_provider_policy(tiny_bundle: Path) -> None:
    pytest.importorskip("openvino")
    report = bench(
        tiny_bundle,
        iterations=2,
        warmup=1,
        threads=1,
        profile=True,
        subject_providers=[{"image": "openvino", "*": "cpu"}],
    )
    names = [v.name for v in report.variants]
    assert names[:2] == ["split FP32", "split FP32 [image=openvino, *=cpu]"]
    policy = report.variants[1]
    assert "OpenVINO" in policy.providers
    assert policy.batches[0].latency.count == 2
    assert policy.hotspots == ()  # onnxruntime's profiler cannot see the OpenVINO kernels: not profiled


def test_a_cache_folder_is_filled_at_every_batch_size_before_timing(tiny_bundle: Path, tmp_path: Path) -> None:
    """With ``cache_dir`` the bundle opens as ``mmedge serve --cache-dir`` would; a process of its
    own fills the cache first, one entry per input shape, so the measured processes start from a hit."""
    pytest.importorskip("openvino")
    cache = tmp_path / "cache"
    report = bench(
        tiny_bundle,
        batch_sizes=(1, 2),
        iterations=1,
        warmup=0,
        threads=1,
        profile=False,
        providers="openvino",  # every component on OpenVINO: the one OpenVINO graph, cached per shape
        cache_dir=cache,
    )
    assert len(list(cache.glob("mmedge-graph-*.xml"))) == 2
    assert report.settings.cache_dir == str(cache)
    assert "filled by a process of their own" in report.to_markdown()
    assert report.to_dict()["settings"]["cache_dir"] == str(cache)


def test_inputs_from_a_samples_file_of_raw_files(
    tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    samples = write_samples(tmp_path, 3, seed=0)
    args = ["bench", str(tiny_bundle), *FAST, "--no-profile", "--json", "--inputs", str(samples)]
    assert main([*args, "--batch-sizes", "1,2", "--out", str(tmp_path / "out")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [b["batch"] for b in report["variants"][0]["batches"]] == [1, 2]
    arrays, _ = load_arrays(samples, load_bundle(tiny_bundle))  # what every variant was fed, batch 1 and 2 cut from it
    assert {k: v.shape for k, v in arrays.items()} == {"text": (3, 8), "image": (3, 3, 8, 8), "audio": (3, 160)}
