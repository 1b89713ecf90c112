"""The OpenVINO runtime as a per-component backend: same outputs, FP32 and QDQ INT8, thread-safe."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from tinybundle import tiny_inputs

from mmedge.errors import ProviderError
from mmedge.providers import CPU, OPENVINO, resolve_providers
from mmedge.runtime import Pipeline

pytest.importorskip("openvino")

IMAGE_ON_OPENVINO = {"image": "openvino", "*": "cpu"}


def test_an_encoder_on_openvino_gives_the_cpu_outputs(tiny_bundle: Path) -> None:
    x = tiny_inputs(batch=3, seed=4)
    with Pipeline(tiny_bundle, "cpu") as cpu, Pipeline(tiny_bundle, IMAGE_ON_OPENVINO) as ov:
        placement = ov.providers_used
        assert placement["image_encoder"].registered == (OPENVINO,)
        assert placement["text_encoder"].registered == (CPU,)
        np.testing.assert_allclose(ov.run(x)["logits"], cpu.run(x)["logits"], rtol=1e-4, atol=1e-5)


def test_a_qdq_int8_encoder_runs_as_int8_on_openvino(tiny_bundle: Path, tmp_path: Path) -> None:
    from mmedge.quantize import quantize_bundle

    samples = [tiny_inputs(batch=2, seed=i) for i in range(16)]
    quantize_bundle(tiny_bundle, tmp_path / "int8", calibration=samples, recipe="static", speed_check=False)
    x = tiny_inputs(batch=4, seed=99)
    with Pipeline(tmp_path / "int8", "cpu") as ort_int8, Pipeline(tmp_path / "int8", IMAGE_ON_OPENVINO) as ov:
        a, b = ort_int8.encode("image", x["image"]), ov.encode("image", x["image"])
    a, b = next(iter(a.values())).ravel(), next(iter(b.values())).ravel()
    assert float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) > 0.999  # the same INT8 arithmetic, other kernels


def test_runs_from_many_threads_at_once(tiny_bundle: Path) -> None:
    inputs = [tiny_inputs(batch=2, seed=i) for i in range(8)]
    with Pipeline(tiny_bundle, IMAGE_ON_OPENVINO) as ov:
        alone = [ov.run(x)["logits"] for x in inputs]
        with ThreadPoolExecutor(4) as pool:
            together = list(pool.map(lambda x: ov.run(x)["logits"], inputs))
    for a, b in zip(alone, together, strict=True):
        np.testing.assert_array_equal(a, b)


def test_without_openvino_installed_it_is_a_provider_error() -> None:
    with pytest.raises(ProviderError, match=r"OpenVINO is not available.*pip install openvino"):
        resolve_providers("openvino", available=[CPU], known=[CPU])
    plan = resolve_providers("openvino", available=[CPU], known=[CPU], fallback=True)
    assert plan.names == (CPU,)
    assert "OpenVINO" in plan.fallbacks[0]


def test_outputs_are_the_callers_and_inputs_are_left_as_they_were(tiny_bundle: Path) -> None:
    # feeds are shared with OpenVINO (no copy in), outputs are copied out of its reused tensors
    first, second = tiny_inputs(batch=2, seed=1), tiny_inputs(batch=2, seed=2)
    image = first["image"].copy()
    with Pipeline(tiny_bundle, IMAGE_ON_OPENVINO) as ov:
        out = ov.encode("image", first["image"])
        kept = {k: v.copy() for k, v in out.items()}
        ov.encode("image", second["image"])
    np.testing.assert_array_equal(first["image"], image)
    for name, value in kept.items():
        np.testing.assert_array_equal(out[name], value)


def test_a_graph_openvino_cannot_read_is_named_by_its_operators_not_by_a_source_line(tmp_path: Path) -> None:
    """OpenVINO's message opens with where it was raised (``Exception from src/...cpp:84:``); the
    error mmedge raises says what failed instead: the operators it has no conversion for."""
    import onnx
    import openvino as ov
    from onnx import TensorProto, helper

    from mmedge.errors import QuantizationError, translated

    node = helper.make_node("Frobnicate", ["x"], ["y"], domain="com.example")
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4]) for n in ("x", "y")]
    graph = helper.make_graph([node], "g", io[:1], io[1:])
    path = tmp_path / "custom.onnx"
    onnx.save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)]),
        path,
    )
    with pytest.raises(QuantizationError) as caught, translated(QuantizationError, "reading custom.onnx"):
        ov.Core().read_model(str(path))
    message = str(caught.value)
    assert "com.example.Frobnicate" in message
    assert "core.cpp" not in message
    assert message.startswith("reading custom.onnx: RuntimeError: ")


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        pytest.param(
            "building peer 'ov': OpConversionFailure: Check 'false' failed at src/frontends/x/report.cpp:151:\n"
            "FrontEnd API failed with OpConversionFailure:\n"
            "Check '(!training_mode)' failed at src/frontends/onnx/frontend/src/op/dropout.cpp:20:\n"
            "Summary:\n-- Conversion is failed for: Dropout-18",
            "building peer 'ov': OpConversionFailure: Conversion is failed for: Dropout-18",
            id="location-ending-a-line",
        ),
        pytest.param(
            "reading: Check 'false' failed at\nsrc/frontends/x/report.cpp:151:\nSummary:\n-- Conversion is failed for: STFT-18",
            "reading: Conversion is failed for: STFT-18",
            id="location-on-the-next-line",
        ),
        pytest.param("no location here\nsecond line", "no location here", id="plain"),
    ],
)
def test_summary_keeps_what_failed_and_drops_where(message: str, expected: str) -> None:
    from mmedge.errors import summary

    assert summary(RuntimeError(message)) == expected


def test_outputs_are_named_as_the_onnx_graph_names_them(tmp_path: Path) -> None:
    """OpenVINO merges an Identity's input and output names; the session gives the graph output's
    (TorchScript's exports end encoders so: ``/encoder/Reshape_4_output_0`` → ``text_pooler_output``)."""
    import onnx
    from onnx import TensorProto, helper

    from mmedge.openvino_backend import OpenVINOSession

    nodes = [
        helper.make_node("Relu", ["x"], ["/encoder/Reshape_4_output_0"]),
        helper.make_node("Identity", ["/encoder/Reshape_4_output_0"], ["text_pooler_output"]),
        helper.make_node("Neg", ["x"], ["text_last_hidden_state"]),
    ]
    value = lambda name: helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", 4])  # noqa: E731
    graph = helper.make_graph(nodes, "g", [value("x")], [value("text_last_hidden_state"), value("text_pooler_output")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, tmp_path / "encoder.onnx")
    session = OpenVINOSession(tmp_path / "encoder.onnx", 1)
    assert [o.name for o in session.get_outputs()] == ["text_last_hidden_state", "text_pooler_output"]
    x = np.array([[-1.0, 2.0, -3.0, 4.0]], np.float32)
    np.testing.assert_array_equal(session.run(None, {"x": x})[1], np.maximum(x, 0))
