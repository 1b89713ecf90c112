"""The speed check: auto-recipe components whose quantized graph is not measurably faster stay FP32.

Timing never decides these tests: the timer (``interleaved_rounds``) is replaced by one that
yields scripted rounds, and what is checked is the decision the check draws from them.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest
from tinybundle import tiny_inputs

from mmedge.bundle import load_bundle
from mmedge.errors import QuantizationError
from mmedge.quantize import SpeedPolicy, quantize_bundle
from mmedge.quantize import speed as speed_module

Samples = Callable[..., list[dict[str, np.ndarray]]]
Round = Mapping[str, float]
FAST: Sequence[Round] = ({"fp32": 1.0, "quantized": 0.5},)  # a clear 2x win
QUICK = SpeedPolicy(max_seconds=60.0)  # caps by rounds only: fake rounds take no time


@pytest.fixture
def timed(monkeypatch: pytest.MonkeyPatch) -> Callable[[Mapping[str, Sequence[Round]]], dict[str, dict]]:
    """Replace the timer with scripted rounds per component (cycled; FAST if not named).

    Returns what each timed component was given: its feeds' shapes and how many rounds it took.
    """

    def install(script: Mapping[str, Sequence[Round]]) -> dict[str, dict]:
        seen: dict[str, dict] = {}

        def fake(paths: Mapping[str, Path], feeds: Mapping[str, np.ndarray], **kwargs: object) -> Iterator[Round]:
            component = Path(paths["fp32"]).stem
            seen[component] = {"shapes": {k: v.shape for k, v in feeds.items()}, "rounds": 0}
            for r in itertools.cycle(script.get(component, FAST)):
                seen[component]["rounds"] += 1
                yield r

        monkeypatch.setattr(speed_module, "interleaved_rounds", fake)
        return seen

    return install


def _noisy_around(threshold: float, spread: float = 1.5) -> list[Round]:
    """Rounds whose ratios alternate threshold·spread and threshold/spread: the geometric mean sits
    exactly on the threshold, so no number of rounds can clear it either way."""
    return [{"fp32": threshold * spread, "quantized": 1.0}, {"fp32": threshold / spread, "quantized": 1.0}]


def test_a_clear_win_keeps_int8_after_the_first_rounds(
    tiny_bundle: Path, tmp_path: Path, tiny_samples: Samples, timed: Callable
) -> None:
    win = [{"fp32": 2.0, "quantized": 1.0}, {"fp32": 2.2, "quantized": 1.0}, {"fp32": 1.9, "quantized": 1.0}]
    seen = timed({"audio_encoder": win})
    report = quantize_bundle(tiny_bundle, tmp_path / "int8", calibration=tiny_samples(12), speed_check=QUICK)
    audio = next(c for c in report.components if c.name == "audio_encoder")
    assert audio.precision == "int8"
    assert audio.speed is not None
    assert (audio.speed.decision, audio.speed.conclusive) == ("quantized", True)
    assert audio.speed.rounds == QUICK.min_rounds == seen["audio_encoder"]["rounds"]  # decided at the first look
    assert QUICK.min_speedup <= audio.speed.low <= audio.speed.speedup <= audio.speed.high
    assert audio.speed.speedup == pytest.approx(math.exp(np.mean(np.log([2.0, 2.2, 1.9, 2.0, 2.2, 1.9]))))


def test_a_clear_loss_goes_back_to_fp32_and_downstream_is_recalibrated(
    tiny_bundle: Path, tmp_path: Path, tiny_samples: Samples, timed: Callable
) -> None:
    seen = timed({"audio_encoder": [{"fp32": 1.0, "quantized": 1.2}, {"fp32": 1.0, "quantized": 1.25}]})
    report = quantize_bundle(tiny_bundle, tmp_path / "int8", calibration=tiny_samples(20), speed_check=QUICK)
    assert sorted(seen) == ["audio_encoder", "fusion_head", "image_encoder", "text_encoder"]
    by_name = {c.name: c for c in report.components}
    audio = by_name["audio_encoder"]
    assert (audio.precision, audio.recipe["mode"]) == ("fp32", "fp32")
    assert audio.speed is not None
    assert (audio.speed.decision, audio.speed.conclusive, audio.speed.rounds) == ("fp32", True, QUICK.min_rounds)
    assert audio.speed.high < QUICK.min_speedup
    assert "static INT8 was not measurably faster than FP32 on this CPU" in audio.reason
    assert (audio.fp32_ms, audio.quantized_ms) == (1.0, pytest.approx(1.225))
    assert {n: c.precision for n, c in by_name.items() if n != "audio_encoder"} == dict.fromkeys(
        ["text_encoder", "image_encoder", "fusion_head"], "int8"
    )
    assert "audio_encoder (FP32)" in by_name["fusion_head"].calibrated_on  # re-calibrated on FP32 audio features
    assert load_bundle(tmp_path / "int8").manifest.component("audio_encoder").precision == "fp32"


def test_noise_takes_more_rounds_then_the_cap_decides_fp32_and_says_so(
    tiny_bundle: Path, tmp_path: Path, tiny_samples: Samples, timed: Callable
) -> None:
    policy = SpeedPolicy(min_rounds=6, max_rounds=40, max_seconds=60.0)
    seen = timed({"image_encoder": _noisy_around(policy.min_speedup)})
    report = quantize_bundle(tiny_bundle, tmp_path / "int8", calibration=tiny_samples(12), speed_check=policy)
    image = next(c for c in report.components if c.name == "image_encoder")
    assert seen["image_encoder"]["rounds"] == policy.max_rounds > policy.min_rounds
    assert image.speed is not None
    assert (image.precision, image.speed.decision, image.speed.conclusive) == ("fp32", "fp32", False)
    assert image.speed.rounds == policy.max_rounds
    assert image.speed.low < policy.min_speedup < image.speed.high
    assert "undecided after 40 rounds" in image.speed.why
    assert "kept FP32 to be safe" in image.reason
    assert "(undecided: cap)" in (tmp_path / "int8" / "quantization_report.md").read_text(encoding="utf-8")


def test_the_time_cap_stops_an_undecided_check_after_the_first_rounds(timed: Callable) -> None:
    policy = SpeedPolicy(min_rounds=4, max_rounds=1000, max_seconds=0.0)
    check = speed_module.decide(
        "x", itertools.cycle(_noisy_around(policy.min_speedup)), policy, threads=1, shapes={"x": (1, 4)}
    )
    assert (check.rounds, check.decision, check.conclusive) == (4, "fp32", False)


def test_a_component_too_fast_to_matter_keeps_its_recipe() -> None:
    slow_int8 = itertools.repeat({"fp32": 0.05, "quantized": 0.2})
    check = speed_module.decide("x", slow_int8, SpeedPolicy(), threads=1, shapes={})
    assert (check.decision, check.conclusive, check.rounds) == ("quantized", True, SpeedPolicy().min_rounds)
    assert "too fast to matter" in check.why


def test_the_interval_rounds_and_decision_are_in_the_report_and_the_manifest(
    tiny_bundle: Path, tmp_path: Path, tiny_samples: Samples, timed: Callable
) -> None:
    timed({"fusion_head": _noisy_around(2.0, spread=1.01)})  # a clear win with some spread
    quantize_bundle(tiny_bundle, tmp_path / "int8", calibration=tiny_samples(12), speed_check=QUICK)
    bundle = load_bundle(tmp_path / "int8")
    record = bundle.manifest.component("fusion_head").quantization["speed_check"]
    assert record["decision"] == "quantized"
    assert record["conclusive"] is True
    assert record["rounds"] == QUICK.min_rounds
    assert record["low"] < record["speedup"] < record["high"]
    assert record["speedup"] == pytest.approx(2.0)
    assert record["confidence"] == QUICK.confidence
    assert record["threshold"] == QUICK.min_speedup
    report = json.loads((tmp_path / "int8" / "quantization_report.json").read_text(encoding="utf-8"))
    head = next(c for c in report["components"] if c["name"] == "fusion_head")
    assert head["speed"] == record
    markdown = (tmp_path / "int8" / "quantization_report.md").read_text(encoding="utf-8")
    assert f"{record['low']:.2f}–{record['high']:.2f}× (95%)" in markdown


def test_each_component_is_timed_at_its_deploy_shape_not_the_calibration_batch(
    tiny_bundle: Path, tmp_path: Path, timed: Callable
) -> None:
    seen = timed({})
    samples = [tiny_inputs(batch=8, seq=10, samples=200, seed=i) for i in range(6)]  # not the example shapes
    quantize_bundle(tiny_bundle, tmp_path / "int8", calibration=samples, speed_check=QUICK)
    # the manifest's example shapes with batch 1: text (1, 6), image (1, 3, 8, 8), audio (1, 160)
    assert seen["text_encoder"]["shapes"] == {"text": (1, 6)}
    assert seen["image_encoder"]["shapes"] == {"image": (1, 3, 8, 8)}
    assert seen["audio_encoder"]["shapes"] == {"audio": (1, 160)}
    assert {shape[0] for shape in seen["fusion_head"]["shapes"].values()} == {1}
    report = json.loads((tmp_path / "int8" / "quantization_report.json").read_text(encoding="utf-8"))
    text = next(c for c in report["components"] if c["name"] == "text_encoder")
    assert text["speed"]["shapes"] == {"text": [1, 6]}


@pytest.mark.parametrize(
    ("shape", "target"),
    [
        pytest.param((8, 10), (1, 6), id="cropped"),
        pytest.param((2, 4), (1, 6), id="wrapped"),
        pytest.param((1, 6), (1, 6), id="as-is"),
    ],
)
def test_deploy_sample_fits_each_input_to_its_example_shape(shape: tuple, target: tuple) -> None:
    from tinybundle import tiny_manifest

    text = np.arange(int(np.prod(shape))).reshape(shape)
    fitted = speed_module.deploy_sample({"text": text}, tiny_manifest().inputs)["text"]
    assert fitted.shape == target
    assert fitted[0, 0] == text[0, 0]
    assert set(fitted.reshape(-1)) <= set(text[0])  # only the first example's values


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(({"speed_check": False}, {}, []), id="off"),
        pytest.param(
            (
                {"recipe": {"audio_encoder": "static"}},
                {"audio_encoder": [{"fp32": 1.0, "quantized": 3.0}]},
                ["fusion_head", "image_encoder", "text_encoder"],
            ),
            id="recipe-given",
        ),
    ],
)
def test_int8_is_kept_when_the_check_is_off_or_the_recipe_given(
    case: tuple, tiny_bundle: Path, tmp_path: Path, tiny_samples: Samples, timed: Callable
) -> None:
    kwargs, script, timed_components = case
    seen = timed(script)
    report = quantize_bundle(tiny_bundle, tmp_path / "int8", calibration=tiny_samples(20), **kwargs)
    assert sorted(seen) == timed_components
    assert {c.name: c.precision for c in report.components}["audio_encoder"] == "int8"


def test_a_bad_policy_is_refused_before_any_timing(
    tiny_bundle: Path, tmp_path: Path, tiny_samples: Samples, timed: Callable
) -> None:
    seen = timed({})
    with pytest.raises(QuantizationError, match="min_rounds"):
        quantize_bundle(
            tiny_bundle, tmp_path / "int8", calibration=tiny_samples(12), speed_check=SpeedPolicy(min_rounds=2)
        )
    assert seen == {}


def test_t_quantile_matches_the_table() -> None:
    # two-sided 95% critical values of Student's t
    for df, value in ((3, 3.182), (5, 2.571), (10, 2.228), (30, 2.042), (199, 1.972)):
        assert speed_module.t_quantile(0.975, df) == pytest.approx(value, abs=5e-3)


def test_real_timings_are_recorded_and_agree_with_the_decision(
    tiny_bundle: Path, tmp_path: Path, tiny_samples: Samples
) -> None:
    policy = SpeedPolicy(max_rounds=20, max_seconds=2.0)  # real timer: checks the plumbing, not the outcome
    report = quantize_bundle(tiny_bundle, tmp_path / "int8", calibration=tiny_samples(20), speed_check=policy)
    for c in report.components:
        assert c.speed is not None, c.name
        s = c.speed
        assert min(s.fp32_ms, s.quantized_ms) > 0, c.name
        assert policy.min_rounds <= s.rounds <= policy.max_rounds, c.name
        assert s.low <= s.speedup <= s.high, c.name
        assert c.precision == ("fp32" if s.kept_fp32 else "int8"), c.name
        if s.decision == "quantized" and s.fp32_ms >= speed_module.MIN_TIMED_MS:
            assert s.low >= policy.min_speedup, c.name
