"""The one-graph check: the components as one OpenVINO graph, measurably faster run in turn with
the split plan (each in processes of its own) and not slower back to back, with agreement held, are
recorded to run so; a Pipeline asked for "auto" then runs them as one request.

Timing never decides these tests: the timer is replaced by scripted rounds (as in test_backend.py)
and the floor below which a split plan is not timed is lowered.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tinybundle import tiny_inputs

from mmedge.bundle import load_bundle
from mmedge.cli import main
from mmedge.errors import QuantizationError
from mmedge.quantize import SpeedPolicy, quantize_bundle
from mmedge.quantize import whole_graph as whole_module
from mmedge.runtime import Pipeline

pytest.importorskip("openvino")

Samples = Callable[..., list[dict[str, np.ndarray]]]
QUICK = SpeedPolicy(max_seconds=60.0)
PAIRS = whole_module.PAIRS
ALL = ("text_encoder", "image_encoder", "audio_encoder", "fusion_head")


@dataclass
class Plans:
    """What the scripted timer saw: the regimes timed, in order, for each pair of processes, then
    "closed" for each pair once its workers are; and the plans' configs (the last pair's)."""

    regimes: list[str] = field(default_factory=list)
    configs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> Callable[[float, float], Plans]:
    """Rounds where the one graph takes ``cold`` (one run per turn) or ``busy`` (back to back) of the
    split plan's 1 ms."""

    def install(cold: float, busy: float) -> Plans:
        plans = Plans()
        regimes = plans.regimes

        def start(module: str, configs: Mapping[str, Mapping[str, Any]], feeds: object, scratch: Path) -> dict:
            assert module == whole_module.WORKER_MODULE
            assert set(configs) == {whole_module.SPLIT, whole_module.WHOLE}
            assert configs[whole_module.SPLIT]["components"] == configs[whole_module.WHOLE]["components"]
            plans.configs = configs
            return dict.fromkeys(configs)

        def rounds(workers: Mapping[str, None], *, turns: int = 1, runs: int = 1, skip: int = 0) -> Iterator[dict]:
            assert set(workers) == {whole_module.SPLIT, whole_module.WHOLE}
            one_run = runs == 1  # each run meets the caches the other plan left
            assert one_run or skip >= 1  # back to back: the first run of a turn is not counted
            regimes.append("cold" if one_run else "busy")
            ratio = cold if one_run else busy
            for jitter in itertools.cycle([1.0, 1.02, 0.98]):
                yield {whole_module.SPLIT: 1.0 * jitter, whole_module.WHOLE: ratio * jitter}

        monkeypatch.setattr(whole_module, "start_contenders", start)
        monkeypatch.setattr(whole_module, "process_rounds", rounds)
        monkeypatch.setattr(whole_module, "close_all", lambda workers: regimes.append("closed"))
        monkeypatch.setattr(whole_module, "MIN_SPLIT_MS", 0.0)
        return plans

    return install


def _quantize(bundle: Path, out: Path, samples: list[dict[str, np.ndarray]]) -> whole_module.WholeGraphCheck:
    report = quantize_bundle(bundle, out, calibration=samples, recipe="static", speed_check=QUICK)
    assert report.whole_graph is not None
    return report.whole_graph


def test_a_faster_one_graph_is_recorded_and_auto_pipelines_run_it(
    tiny_bundle: Path, tmp_path: Path, tiny_samples: Samples, scripted: Callable, capsys: pytest.CaptureFixture[str]
) -> None:
    regimes = scripted(0.8, 1.0).regimes
    check = _quantize(tiny_bundle, tmp_path / "int8", tiny_samples(12))
    assert regimes == [*["cold"] * PAIRS, *["busy"] * PAIRS, *["closed"] * PAIRS]
    assert check.components == ALL
    assert check.chosen
    assert check.timing.speedup == pytest.approx(1.25)
    assert check.timing.rounds >= PAIRS * whole_module.MIN_ROUNDS_PER_PAIR  # no one pair of processes decides
    assert check.back_to_back is not None
    assert check.back_to_back.speedup == pytest.approx(1.0)
    assert check.agreement is not None
    assert check.agreement >= 0.99
    assert "held-out agreement with FP32 stays" in check.why
    record = load_bundle(tmp_path / "int8").manifest.whole_graph
    assert record is not None
    assert (record["chosen"], tuple(record["components"])) == (True, ALL)
    assert "One OpenVINO graph" in (tmp_path / "int8" / "quantization_report.md").read_text(encoding="utf-8")
    assert main(["inspect", str(tmp_path / "int8")]) == 0
    assert "run as one OpenVINO graph" in " ".join(capsys.readouterr().err.split())

    x = tiny_inputs(batch=2, seed=5)
    with Pipeline(tmp_path / "int8") as auto, Pipeline(tmp_path / "int8", "CPUExecutionProvider") as named:
        assert auto.whole_graph == ALL
        assert named.whole_graph == ()  # a named provider is taken as asked
        assert (auto.run(x)["logits"].argmax(-1) == named.run(x)["logits"].argmax(-1)).all()


@pytest.mark.parametrize(
    "case",
    [
        (1.0, 0.8, f"not measurably {whole_module.MIN_PLAN_SPEEDUP}× faster in turn with the other plan"),
        (1 / 1.01, 0.8, f"not measurably {whole_module.MIN_PLAN_SPEEDUP}× faster in turn with the other plan"),
        (0.8, 1.3, "measurably slower back to back"),
    ],
)
def test_a_one_graph_not_faster_in_both_regimes_stays_split(
    tiny_bundle: Path, tmp_path: Path, tiny_samples: Samples, scripted: Callable, case: tuple[float, float, str]
) -> None:
    cold, busy, why = case
    regimes = scripted(cold, busy).regimes
    check = _quantize(tiny_bundle, tmp_path / "int8", tiny_samples(12))
    assert regimes == [*["cold"] * PAIRS, *["busy"] * PAIRS, *["closed"] * PAIRS]
    assert not check.chosen
    assert check.agreement is None
    assert why in check.why
    with Pipeline(tmp_path / "int8") as auto:
        assert auto.whole_graph == ()


def test_a_fast_split_plan_is_not_timed(tiny_bundle: Path, tmp_path: Path, tiny_samples: Samples) -> None:
    check = _quantize(tiny_bundle, tmp_path / "int8", tiny_samples(12))  # the tiny bundle runs in microseconds
    assert not check.chosen
    assert check.timing.rounds == 0
    assert "too fast to matter" in check.why
    report = (tmp_path / "int8" / "quantization_report.md").read_text(encoding="utf-8")
    section = report.split("## One OpenVINO graph")[1].split("\n## ")[0]
    assert "| in turn with the other plan | - | - | - | - | - | no |" in section  # no NaN cells
    assert "nan" not in section


def test_without_the_speed_check_nothing_is_recorded(tiny_bundle: Path, tmp_path: Path, tiny_samples: Samples) -> None:
    report = quantize_bundle(tiny_bundle, tmp_path / "int8", calibration=tiny_samples(8), speed_check=False)
    assert report.whole_graph is None
    assert load_bundle(tmp_path / "int8").manifest.whole_graph is None


def test_a_faster_one_graph_that_cannot_run_here_stays_split_with_its_timing(
    tiny_bundle: Path, tmp_path: Path, tiny_samples: Samples, scripted: Callable, monkeypatch: pytest.MonkeyPatch
) -> None:
    regimes = scripted(0.8, 1.0).regimes
    load = whole_module.load_contender

    def compile_fails(config: Mapping[str, object]) -> object:
        if config["kind"] == whole_module.WHOLE:
            raise QuantizationError("composing the components into one OpenVINO graph: scripted failure")
        return load(config)

    monkeypatch.setattr(whole_module, "load_contender", compile_fails)
    check = _quantize(tiny_bundle, tmp_path / "int8", tiny_samples(12))
    assert regimes == [*["cold"] * PAIRS, *["busy"] * PAIRS, *["closed"] * PAIRS]
    assert not check.chosen
    assert check.agreement is None
    assert check.timing.speedup == pytest.approx(1.25)  # the timing is kept in the record
    assert "its held-out agreement could not be measured" in check.why
    assert "scripted failure" in check.why
    assert check.why.endswith("it stays split")
    with Pipeline(tmp_path / "int8") as auto:
        assert auto.whole_graph == ()
