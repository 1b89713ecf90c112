"""The speed check: auto-recipe components whose quantized graph is not faster stay FP32."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pytest
from tinybundle import tiny_inputs

from mmedge.bundle import load_bundle
from mmedge.quantize import quantize_bundle
from mmedge.quantize import speed as speed_module
from mmedge.runtime import Pipeline

Samples = Callable[..., list[dict[str, np.ndarray]]]
FAST = {"fp32": 1.0, "quantized": 0.5}


@pytest.fixture
def timed(monkeypatch: pytest.MonkeyPatch) -> Callable[[Mapping[str, dict[str, float]]], list[str]]:
    """Replace the timer: milliseconds per component (FAST if not named); returns the timed names."""

    def install(times: Mapping[str, dict[str, float]]) -> list[str]:
        seen: list[str] = []

        def fake(paths: Mapping[str, Path], feeds: object, **kwargs: object) -> dict[str, float]:
            component = Path(paths["fp32"]).stem
            seen.append(component)
            return times.get(component, FAST)

        monkeypatch.setattr(speed_module, "interleaved_latency", fake)
        return seen

    return install


def test_a_component_int8_does_not_speed_up_stays_fp32(
    tiny_bundle: Path, tmp_path: Path, tiny_samples: Samples, timed: Callable
) -> None:
    seen = timed({"audio_encoder": {"fp32": 1.0, "quantized": 1.2}})
    report = quantize_bundle(tiny_bundle, tmp_path / "int8", calibration=tiny_samples(20))
    assert sorted(seen) == ["audio_encoder", "fusion_head", "image_encoder", "text_encoder"]
    by_name = {c.name: c for c in report.components}
    audio = by_name["audio_encoder"]
    assert (audio.precision, audio.recipe["mode"]) == ("fp32", "fp32")
    assert "static INT8 was not faster than FP32 on this CPU (1.200 vs 1.000 ms" in audio.reason
    assert (audio.fp32_ms, audio.quantized_ms) == (1.0, 1.2)
    assert {n: c.precision for n, c in by_name.items() if n != "audio_encoder"} == dict.fromkeys(
        ["text_encoder", "image_encoder", "fusion_head"], "int8"
    )
    assert "audio_encoder (FP32)" in by_name["fusion_head"].calibrated_on  # re-calibrated on FP32 audio features
    manifest = load_bundle(tmp_path / "int8").manifest
    assert manifest.component("audio_encoder").precision == "fp32"
    assert "## Speed check" in (tmp_path / "int8" / "quantization_report.md").read_text()
    with Pipeline(tmp_path / "int8", "cpu", threads=1) as pipe:
        assert np.isfinite(pipe.run(tiny_inputs(batch=2))["logits"]).all()


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(({"speed_check": False}, {}, []), id="off"),
        pytest.param(
            (
                {"recipe": {"audio_encoder": "static"}},
                {"audio_encoder": {"fp32": 1.0, "quantized": 3.0}},
                ["fusion_head", "image_encoder", "text_encoder"],
            ),
            id="recipe-given",
        ),
        pytest.param(({}, {"audio_encoder": {"fp32": 0.05, "quantized": 0.2}}, None), id="too-fast-to-matter"),
    ],
)
def test_int8_is_kept_when_the_check_is_off_the_recipe_given_or_the_component_tiny(
    case: tuple, tiny_bundle: Path, tmp_path: Path, tiny_samples: Samples, timed: Callable
) -> None:
    kwargs, times, timed_components = case
    seen = timed(times)
    report = quantize_bundle(tiny_bundle, tmp_path / "int8", calibration=tiny_samples(20), **kwargs)
    if timed_components is not None:
        assert sorted(seen) == timed_components
    assert {c.name: c.precision for c in report.components}["audio_encoder"] == "int8"


def test_real_timings_are_recorded(tiny_bundle: Path, tmp_path: Path, tiny_samples: Samples) -> None:
    report = quantize_bundle(tiny_bundle, tmp_path / "int8", calibration=tiny_samples(20))
    for c in report.components:
        assert c.fp32_ms is not None, c.name
        assert c.quantized_ms is not None, c.name
        assert min(c.fp32_ms, c.quantized_ms) > 0, c.name
        slower = c.fp32_ms >= speed_module.MIN_TIMED_MS and c.fp32_ms / c.quantized_ms < speed_module.MIN_SPEEDUP
        assert c.precision == ("fp32" if slower else "int8"), c.name
