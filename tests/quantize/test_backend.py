"""The backend check: an INT8 component measurably faster on OpenVINO, with agreement held, is
recorded to run there, and a Pipeline asked for "auto" or "cpu" runs it there.

Timing never decides these tests: the timer is replaced by scripted rounds (as in test_speed.py),
and the tiny bundle's components are made "slow enough to matter" by lowering the floor.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import numpy as np
import pytest
from tinybundle import tiny_inputs

from mmedge.bundle import load_bundle
from mmedge.cli import main
from mmedge.errors import QuantizationError
from mmedge.providers import CPU, OPENVINO
from mmedge.quantize import SpeedPolicy, quantize_bundle
from mmedge.quantize import backend as backend_module
from mmedge.quantize._chain import Chain
from mmedge.runtime import Pipeline

pytest.importorskip("openvino")

Samples = Callable[..., list[dict[str, np.ndarray]]]
QUICK = SpeedPolicy(max_seconds=60.0)


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> Callable[[Mapping[str, float]], list[str]]:
    """Rounds where OpenVINO takes ``ratio[component]`` of onnxruntime's 1 ms (1.0 if not named);
    returns the components timed, in order."""

    def install(ratio: Mapping[str, float]) -> list[str]:
        timed: list[str] = []

        def fake(paths: Mapping[str, Path], feeds: object, **kwargs: object) -> Iterator[dict[str, float]]:
            if "onnxruntime" not in paths:  # a component's OpenVINO build against its own file: as fast
                yield from (dict.fromkeys(paths, jitter) for jitter in itertools.cycle([1.0, 1.02, 0.98]))
                return
            component = Path(paths["onnxruntime"]).name.split(".")[0]
            assert kwargs["backends"] == {"openvino": OPENVINO}
            assert kwargs["idle_s"] > 0  # each run from idle, as a request meets the runtime
            timed.append(component)
            for jitter in itertools.cycle([1.0, 1.02, 0.98]):
                yield {"onnxruntime": 1.0 * jitter, "openvino": ratio.get(component, 1.0) * jitter}

        monkeypatch.setattr(backend_module, "interleaved_rounds", fake)
        monkeypatch.setattr(backend_module, "MIN_TIMED_MS", 0.0)
        return timed

    return install


def _quantize(bundle: Path, out: Path, samples: list[dict[str, np.ndarray]]) -> dict:
    report = quantize_bundle(bundle, out, calibration=samples, recipe="static", speed_check=QUICK)
    return {c.name: c for c in report.components}


def test_a_faster_component_is_recorded_and_pipelines_asked_for_cpu_run_it_on_openvino(
    tiny_bundle: Path, tmp_path: Path, tiny_samples: Samples, scripted: Callable, capsys: pytest.CaptureFixture[str]
) -> None:
    timed = scripted({"image_encoder": 0.5})
    by_name = _quantize(tiny_bundle, tmp_path / "int8", tiny_samples(16))
    assert set(timed) == {n for n, c in by_name.items() if c.precision == "int8"}
    image = by_name["image_encoder"].backend
    assert image is not None
    assert (image.backend, image.timing.rounds) == ("openvino", QUICK.min_rounds)
    assert image.timing.speedup == pytest.approx(2.0)
    assert image.agreement is not None
    assert image.agreement >= 0.99
    assert "faster than onnxruntime" in image.why
    assert "agreement with FP32 stays" in image.why
    others = {n: c.backend.backend for n, c in by_name.items() if c.backend is not None and n != "image_encoder"}
    assert set(others.values()) == {"onnxruntime"}  # equal speed: not measurably faster
    record = load_bundle(tmp_path / "int8").manifest.component("image_encoder").quantization["backend"]
    assert record["backend"] == "openvino"
    assert record["timing"]["base_ms"] == pytest.approx(1.0)
    assert "Backend check" in (tmp_path / "int8" / "quantization_report.md").read_text(encoding="utf-8")
    assert main(["inspect", str(tmp_path / "int8")]) == 0
    assert "image_encoder: runs on the OpenVINO runtime" in " ".join(capsys.readouterr().err.split())

    x = tiny_inputs(batch=2, seed=5)
    with Pipeline(tmp_path / "int8") as auto, Pipeline(tmp_path / "int8", "cpu") as cpu:
        for pipe in (auto, cpu):
            placement = pipe.providers_used
            assert placement["image_encoder"].registered == (OPENVINO,)
            assert placement["text_encoder"].registered == (CPU,)
        with Pipeline(tmp_path / "int8", "CPUExecutionProvider") as ort_only:  # named: taken as asked
            assert ort_only.providers_used["image_encoder"].registered == (CPU,)
            assert (auto.run(x)["logits"].argmax(-1) == ort_only.run(x)["logits"].argmax(-1)).all()


def test_where_openvino_is_not_faster_everything_stays_on_onnxruntime(
    tiny_bundle: Path, tmp_path: Path, tiny_samples: Samples, scripted: Callable
) -> None:
    scripted({"image_encoder": 1.3})
    by_name = _quantize(tiny_bundle, tmp_path / "int8", tiny_samples(12))
    image = by_name["image_encoder"].backend
    assert image is not None
    assert image.backend == "onnxruntime"
    assert image.agreement is None
    assert "not measurably faster" in image.why
    with Pipeline(tmp_path / "int8") as pipe:
        assert all(p.registered == (CPU,) for p in pipe.providers_used.values())


def test_faster_but_less_accurate_stays_on_onnxruntime(
    tiny_bundle: Path,
    tmp_path: Path,
    tiny_samples: Samples,
    scripted: Callable,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # OpenVINO's kernels round differently; here they are made to cost half the predictions
    score = Chain.score
    monkeypatch.setattr(
        Chain, "score", lambda self, v, e=None: 0.5 if e is not None and e.openvino else score(self, v, e)
    )
    scripted({"image_encoder": 0.5})
    image = _quantize(tiny_bundle, tmp_path / "int8", tiny_samples(12))["image_encoder"].backend
    assert image is not None
    assert (image.backend, image.agreement) == ("onnxruntime", 0.5)
    assert "falls to 50.00%" in image.why


def test_a_cpu_without_the_measured_int8_instructions_runs_it_on_onnxruntime(
    tiny_bundle: Path, tmp_path: Path, tiny_samples: Samples, scripted: Callable, caplog: pytest.LogCaptureFixture
) -> None:
    scripted({"image_encoder": 0.5})
    with pytest.MonkeyPatch.context() as patch:  # the quantizing CPU had an instruction this one lacks
        patch.setattr(backend_module, "int8_dot_instructions", lambda: ("amx_int8", "some_future_isa"))
        _quantize(tiny_bundle, tmp_path / "int8", tiny_samples(12))
    with caplog.at_level(logging.INFO, logger="mmedge.runtime"), Pipeline(tmp_path / "int8") as pipe:
        assert pipe.providers_used["image_encoder"].registered == (CPU,)
    assert "which this one lacks" in caplog.text


def test_without_openvino_installed_the_recorded_choice_is_logged_and_onnxruntime_runs_it(
    tiny_bundle: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from dataclasses import replace

    from mmedge.providers import resolve_providers
    from mmedge.runtime.policy import recorded_backend

    image = load_bundle(tiny_bundle).manifest.component("image_encoder")
    image = replace(image, quantization={"backend": {"backend": "openvino", "int8_instructions": [], "why": "2x"}})
    plan = resolve_providers("cpu", available=[CPU], known=[CPU])
    with caplog.at_level(logging.INFO, logger="mmedge.runtime"):
        assert recorded_backend(image, "cpu", plan, available=[CPU]) == plan
    assert "pip install openvino" in caplog.text
    assert recorded_backend(image, "cpu", plan, available=[CPU, OPENVINO]).names == (OPENVINO, CPU)
    cuda = resolve_providers("auto", available=[CPU, "CUDAExecutionProvider"], known=[CPU, "CUDAExecutionProvider"])
    assert recorded_backend(image, "auto", cuda, available=[CPU, OPENVINO, "CUDAExecutionProvider"]) == cuda
    mobile = replace(image, file="image_encoder.ort", format="ort")  # mmedge mobile's files: onnxruntime only
    assert recorded_backend(mobile, "cpu", plan, available=[CPU, OPENVINO]) == plan


def test_where_openvino_cannot_run_a_component_it_stays_on_onnxruntime_and_says_so(
    tiny_bundle: Path, tmp_path: Path, tiny_samples: Samples, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing(*args: object, **kwargs: object) -> Iterator[dict[str, float]]:
        raise QuantizationError("OpenVINO cannot compile image_encoder.onnx: RuntimeError: unsupported op")

    monkeypatch.setattr(backend_module, "interleaved_rounds", failing)
    by_name = _quantize(tiny_bundle, tmp_path / "int8", tiny_samples(12))
    image = by_name["image_encoder"].backend
    assert image is not None
    assert image.backend == "onnxruntime"
    assert "could not compile or run it" in image.why
    with Pipeline(tmp_path / "int8") as pipe:
        assert pipe.providers_used["image_encoder"].registered == (CPU,)
