"""The OpenVINO peers: FP32 (``ov.convert_model`` of the whole-model ONNX) and INT8 (``nncf.quantize``).

The build converts the FP32 bundle's ``monolithic`` ONNX and saves OpenVINO IR (FP32 weights:
``compress_to_fp16=False``); INT8 is NNCF's default post-training quantization of that model on
the benchmark's calibration samples. ``keep_frontend`` gives NNCF an ``IgnoredScope`` of the
spectral front-end's nodes (found in the ONNX as mmedge's own INT8 recipe finds them; the ONNX
frontend keeps ONNX node names, the last node takes its output's name). The runner compiles the
IR for the CPU with the benchmark's thread count, a latency hint and FP32 inference precision (a
CPU with bf16 units would otherwise run the FP32 model in bf16), and times synchronous
``infer`` calls.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmedge.bench._stats import RunTiming
from mmedge.bench._types import MODEL_PART, Hotspots
from mmedge.errors import QuantizationError

__all__ = ["OpenVinoRunner", "build_openvino", "import_openvino"]


def import_openvino() -> None:
    import openvino  # noqa: F401 - timed on its own: the framework's import cost


def build_openvino(
    source: Path,
    out: Path,
    calibration: Sequence[Mapping[str, np.ndarray]],
    *,
    int8: bool,
    keep_frontend: bool,
) -> dict[str, Any]:
    """Convert ``source`` (ONNX) to IR at ``out`` (``.xml``), quantized with NNCF if ``int8``."""
    import openvino as ov

    model = ov.convert_model(str(source))
    notes = [f"converted from {source.name} by ov.convert_model"]
    if int8:
        model, quant_notes = _quantize(model, source, calibration, keep_frontend=keep_frontend)
        notes += quant_notes
    ov.save_model(model, str(out), compress_to_fp16=False)
    return {"path": str(out), "notes": notes}


def _quantize(
    model: Any, source: Path, calibration: Sequence[Mapping[str, np.ndarray]], *, keep_frontend: bool
) -> tuple[Any, list[str]]:
    import nncf

    names = [p.get_any_name() for p in model.inputs]
    dataset = nncf.Dataset([{n: s[n] for n in names} for s in calibration])
    notes = [f"nncf.quantize defaults (preset performance), {len(calibration)} calibration samples"]
    scope = None
    if keep_frontend:
        ignored = _frontend_ops(model, source)
        scope = nncf.IgnoredScope(names=ignored, validate=False)
        notes.append(f"spectral front-end kept FP32: {len(ignored)} ops in nncf.IgnoredScope")
    try:
        quantized = nncf.quantize(model, dataset, subset_size=len(calibration), ignored_scope=scope)
    except Exception as e:
        raise QuantizationError(f"nncf.quantize failed on {source.name}: {type(e).__name__}: {e}") from e
    return quantized, notes


def _frontend_ops(model: Any, source: Path) -> list[str]:
    """OpenVINO op names of the ONNX front-end nodes: same node name, or an output tensor of one."""
    import onnx

    from mmedge.quantize.recipes import frontend_nodes

    graph = onnx.load(str(source), load_external_data=False)
    wanted = set(frontend_nodes(graph))
    tensors = {t for n in graph.graph.node if n.name in wanted for t in n.output}
    return [
        op.get_friendly_name()
        for op in model.get_ordered_ops()
        if op.get_friendly_name() in wanted or any(o.get_names() & tensors for o in op.outputs())
    ]


class OpenVinoRunner:
    """OpenVINO IR compiled for the CPU; one synchronous infer request."""

    def __init__(self, spec: Mapping[str, Any]) -> None:
        import openvino as ov

        path = Path(spec["path"])
        core = ov.Core()
        config = {
            "INFERENCE_NUM_THREADS": int(spec["threads"]),
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": "f32",
        }
        self.compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
        self.request = self.compiled.create_infer_request()
        self._names = [p.get_any_name() for p in self.compiled.inputs]
        self.precision = spec["precision"]
        self.providers = ("openvino-cpu",)
        self.size_bytes = path.stat().st_size + path.with_suffix(".bin").stat().st_size
        self.notes = tuple(spec.get("notes", ()))

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        self.request.infer({n: feeds[n] for n in self._names})
        return [self.request.get_output_tensor(i).data for i in range(len(self.compiled.outputs))]

    def run(self, feeds: Mapping[str, np.ndarray]) -> RunTiming:
        start = time.perf_counter_ns()
        self._infer(feeds)
        e2e = time.perf_counter_ns() - start
        return RunTiming(e2e, ((MODEL_PART, "component", e2e),), {MODEL_PART: e2e})

    def outputs(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        return [np.array(o, copy=True) for o in self._infer(feeds)]

    def profile(self, feeds: Mapping[str, np.ndarray], runs: int) -> list[Hotspots]:
        return []  # OpenVINO's per-op counters need a recompiled model; not collected
