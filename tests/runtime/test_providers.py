"""Execution provider selection, fallback and placement reporting, testable without a GPU."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from tinybundle import tiny_inputs

from mmedge import sessions as session_module
from mmedge.bundle import Manifest, TensorSpec
from mmedge.errors import BundleError, ProviderError
from mmedge.providers import AUTO_ORDER
from mmedge.runtime import Pipeline, resolve_providers

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TRT = "TensorrtExecutionProvider"
COREML = "CoreMLExecutionProvider"
XNNPACK = "XnnpackExecutionProvider"
KNOWN = ort.get_all_providers()


@pytest.mark.parametrize(
    ("request_", "available", "expected"),
    [
        pytest.param("auto", [CPU], (CPU,), id="auto-cpu-only"),
        pytest.param("auto", [CUDA, CPU, "AzureExecutionProvider"], (CUDA, CPU), id="auto-cuda"),
        pytest.param("auto", [CPU, CUDA, TRT], (TRT, CUDA, CPU), id="auto-tensorrt-first"),
        pytest.param("auto", [XNNPACK, COREML, CPU], (COREML, XNNPACK, CPU), id="auto-mobile"),
        pytest.param("cpu", [CUDA, CPU], (CPU,), id="cpu"),
        pytest.param("cuda", [CUDA, CPU], (CUDA, CPU), id="cuda-short-name"),
        pytest.param("CUDA", [CUDA, CPU], (CUDA, CPU), id="short-name-any-case"),
        pytest.param(CUDA, [CUDA, CPU], (CUDA, CPU), id="ort-name"),
        pytest.param([XNNPACK], [XNNPACK, CPU], (XNNPACK, CPU), id="list-gets-cpu-last"),
        pytest.param([CPU, CUDA], [CUDA, CPU], (CPU, CUDA), id="explicit-order-kept"),
    ],
)
def test_resolution(request_: Any, available: list[str], expected: tuple[str, ...]) -> None:
    plan = resolve_providers(request_, available, known=KNOWN)
    assert plan.names == expected
    assert plan.fallbacks == ()
    assert plan.strict == (request_ != "auto")


def test_auto_order_is_the_documented_one() -> None:
    assert AUTO_ORDER == (TRT, CUDA, COREML, "NnapiExecutionProvider", XNNPACK, "QNNExecutionProvider", CPU)


def test_provider_options_are_passed_through() -> None:
    plan = resolve_providers([(CUDA, {"device_id": 1})], [CUDA, CPU], known=KNOWN)
    assert plan.providers == ((CUDA, {"device_id": 1}), (CPU, {}))


def test_unavailable_provider_is_an_error_without_fallback() -> None:
    with pytest.raises(
        ProviderError,
        match=r"(?s)CUDAExecutionProvider is not available.*this build has: CPUExecutionProvider.*fallback=True",
    ):
        resolve_providers("cuda", [CPU], known=KNOWN)


def test_unavailable_provider_is_dropped_and_recorded_with_fallback() -> None:
    plan = resolve_providers([TRT, CUDA], [CUDA, CPU], fallback=True, known=KNOWN)
    assert plan.names == (CUDA, CPU)
    assert len(plan.fallbacks) == 1
    assert plan.fallbacks[0].startswith("TensorrtExecutionProvider is not available")
    assert not plan.strict


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        pytest.param("gpu", "unknown execution provider 'gpu'", id="unknown"),
        pytest.param(["cuda", CUDA], "listed twice", id="duplicate"),
        pytest.param([], "non-empty list", id="empty"),
        pytest.param(42, "non-empty list", id="not-a-list"),
        pytest.param([(CUDA, "device 0")], r"\(name, options dict\) pair", id="bad-options"),
    ],
)
def test_bad_requests_raise_even_with_fallback(request_: Any, message: str) -> None:
    with pytest.raises(ProviderError, match=message):
        resolve_providers(request_, [CUDA, CPU], fallback=True, known=KNOWN)


# -- through the Pipeline (this ORT build has no GPU providers) -----------------------------------


def test_pipeline_refuses_an_unavailable_provider(tiny_bundle: Path) -> None:
    with pytest.raises(ProviderError, match="CUDAExecutionProvider is not available"):
        Pipeline(tiny_bundle, "cuda")


def test_pipeline_fallback_is_logged_and_recorded(tiny_bundle: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="mmedge.runtime"), Pipeline(tiny_bundle, "cuda", fallback=True) as p:
        used = p.providers_used
        out = p.run(tiny_inputs(batch=1))["logits"]
    assert out.shape == (1, 3)
    assert "CUDAExecutionProvider is not available" in caplog.text
    for placement in used.values():
        assert placement.requested == (CPU,)
        assert placement.registered == (CPU,)
        assert placement.fallbacks[0].startswith("CUDAExecutionProvider is not available")
        assert sum(placement.nodes.values()) > 0


@pytest.fixture
def cuda_fails_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend CUDA is available, but make any session that asks for it fail like a broken driver."""
    real_create = session_module._create
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])

    def create(path: Path, component: Any, providers: list, threads: int, settings: Any) -> Any:
        if any(name == CUDA for name, _ in providers):
            raise RuntimeError("CUDA driver version is insufficient for CUDA runtime version")
        return real_create(path, component, providers, threads, settings)

    monkeypatch.setattr(session_module, "_create", create)


@pytest.mark.usefixtures("cuda_fails_to_start")
def test_accelerator_that_fails_to_start_is_an_error_when_requested(tiny_bundle: Path) -> None:
    with pytest.raises(
        ProviderError,
        match=r"component 'text_encoder': CUDAExecutionProvider failed to initialise \(RuntimeError: CUDA driver",
    ):
        Pipeline(tiny_bundle, "cuda")


@pytest.mark.usefixtures("cuda_fails_to_start")
@pytest.mark.parametrize(("request_", "fallback"), [("cuda", True), ("auto", False)], ids=["cuda-fallback", "auto"])
def test_accelerator_that_fails_to_start_falls_back_to_cpu(tiny_bundle: Path, request_: str, fallback: bool) -> None:
    with Pipeline(tiny_bundle, request_, fallback=fallback) as p:
        placement = p.providers_used["fusion_head"]
        assert p.run(tiny_inputs(batch=1))["logits"].shape == (1, 3)
    assert placement.requested == (CUDA, CPU)
    assert placement.registered == (CPU,)
    assert placement.fallbacks == (
        "CUDAExecutionProvider failed to initialise (RuntimeError: CUDA driver version is insufficient for CUDA runtime version)",
    )
    assert not placement.io_binding


def test_model_that_onnxruntime_cannot_load_is_a_bundle_error(
    tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any) -> Any:
        raise RuntimeError("Could not find an implementation for FancyOp(1) node")

    monkeypatch.setattr(session_module, "_create", broken)
    with pytest.raises(
        BundleError,
        match=r"component 'text_encoder': onnxruntime cannot load text_encoder.onnx \(RuntimeError: Could not find",
    ):
        Pipeline(tiny_bundle, "cpu")


def test_session_io_is_checked_against_the_manifest(edited_bundle: Callable[..., Path]) -> None:
    """ORT-format components skip load_bundle's ONNX check; the session check still catches drift."""

    def drift(m: Manifest) -> Manifest:
        image = dataclasses.replace(
            m.component("image_encoder"), format="ort", outputs=(TensorSpec("image_features", "float32", ("batch", 5)),)
        )
        return dataclasses.replace(m, components=tuple(image if c.name == "image_encoder" else c for c in m.components))

    with pytest.raises(BundleError, match=r"'image_encoder'.*output 'image_features' dim 1 is 4, manifest says 5"):
        Pipeline(edited_bundle(edit=drift), "cpu")


class _Component:
    name = "head"


@pytest.mark.parametrize(
    ("registered", "nodes", "strict", "expected"),
    [
        pytest.param((CUDA, CPU), {CUDA: 3, CPU: 1}, True, (), id="all-good"),
        pytest.param(
            (CPU,),
            {CPU: 4},
            False,
            ("CUDAExecutionProvider was requested but onnxruntime did not register it",),
            id="silently-dropped",
        ),
        pytest.param(
            (CUDA, CPU),
            {CPU: 4},
            True,
            ("CUDAExecutionProvider is registered but took none of the nodes (it supports none of them)",),
            id="idle",
        ),
        pytest.param((CUDA, CPU), {}, True, (), id="assignment-unknown"),
    ],
)
def test_placement_records_what_really_ran(registered: tuple, nodes: dict, strict: bool, expected: tuple) -> None:
    plan = resolve_providers("cuda", [CUDA, CPU], known=KNOWN)
    plan = dataclasses.replace(plan, strict=strict)
    placement = session_module._placement(_Component(), registered, nodes, plan, {})
    assert placement.fallbacks == expected
    assert placement.nodes == nodes


def test_provider_silently_dropped_by_onnxruntime_is_an_error_when_requested() -> None:
    plan = resolve_providers("cuda", [CUDA, CPU], known=KNOWN)
    with pytest.raises(
        ProviderError, match="component 'head': CUDAExecutionProvider was requested but onnxruntime did not register it"
    ):
        session_module._placement(_Component(), (CPU,), {CPU: 4}, plan, {})


@pytest.mark.parametrize(
    ("registered", "options", "device"),
    [
        pytest.param((CUDA, CPU), {CUDA: {"device_id": "0"}}, ("cuda", 0), id="cuda"),
        pytest.param((TRT, CUDA, CPU), {TRT: {"device_id": "1"}}, ("cuda", 1), id="tensorrt-device-1"),
        pytest.param((CPU,), {CPU: {}}, None, id="cpu"),
        pytest.param((XNNPACK, CPU), {}, None, id="xnnpack"),
        pytest.param((CPU, CUDA), {}, None, id="cuda-not-first"),
    ],
)
def test_io_binding_is_used_exactly_when_tensors_live_on_a_cuda_device(
    registered: tuple, options: dict, device: Any
) -> None:
    assert session_module.binding_device(registered, options) == device


@pytest.mark.gpu
def test_cuda_pipeline_keeps_tensors_on_the_device_and_matches_cpu(tiny_bundle: Path) -> None:
    if CUDA not in ort.get_available_providers():
        pytest.skip("needs onnxruntime-gpu and an NVIDIA GPU")
    x = tiny_inputs(batch=4)
    with Pipeline(tiny_bundle, "cuda") as gpu, Pipeline(tiny_bundle, "cpu") as cpu:
        assert all(p.io_binding and p.registered[0] == CUDA for p in gpu.providers_used.values())
        assert all(p.nodes.get(CUDA, 0) > 0 for p in gpu.providers_used.values())
        np.testing.assert_allclose(gpu.run(x)["logits"], cpu.run(x)["logits"], rtol=1e-4, atol=1e-4)
