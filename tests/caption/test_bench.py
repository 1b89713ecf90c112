"""``mmedge bench`` on a captioner: whole captions timed per variant, plus generation metrics."""

from __future__ import annotations

import json

import pytest

from mmedge.bench import bench
from mmedge.cli import main

pytestmark = pytest.mark.slow


def test_bench_reports_first_token_per_token_and_tokens_per_second(trained, int8) -> None:
    report = bench(
        trained.bundle, compare=[int8[0]], batch_sizes=(1, 3), iterations=4, warmup=1, threads=1, profile_runs=1
    )
    assert [g.batch for g in report.generation] == [1, 3]
    for g in report.generation:
        assert 0 < g.time_to_first_token.p50_ms < g.total.p50_ms
        assert g.per_token is not None
        assert 0 < g.per_token.p50_ms < g.total.p50_ms
        assert 1 <= g.tokens_per_item <= g.max_len == 7
        assert g.tokens_per_s == pytest.approx(g.batch * g.tokens_per_item / (g.total.p50_ms / 1e3), rel=1e-9)
    split = report.variant("split FP32").at(1)
    assert [p.name for p in split.attribution.parts] == [
        "preprocess", "image_encoder", "decoder_init", "decoder_step", "copies", "postprocess"
    ]  # fmt: skip
    assert split.attribution.attributed_ms == pytest.approx(split.attribution.end_to_end_ms, rel=0.05)
    assert {h.component for h in report.variant("split INT8").hotspots} == {
        "image_encoder",
        "decoder_init",
        "decoder_step",
    }
    assert [g["batch"] for g in report.to_dict()["generation"]] == [1, 3]
    assert "### Generation (greedy, p50)" in report.to_markdown()


def test_bench_cli_shows_the_generation_table(trained, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["bench", str(trained.bundle), "--iterations", "2", "--warmup", "0", "--threads", "1", "--no-profile"]
    assert main(args) == 0
    assert "Generation (greedy, p50)" in capsys.readouterr().err
    assert main([*args, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["generation"][0]["time_to_first_token"]["count"] == 2
