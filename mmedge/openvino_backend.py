"""The OpenVINO runtime as a per-component backend, behind the small session interface mmedge uses.

Why: on CPUs with AMX or VNNI, OpenVINO's CPU plugin (oneDNN) runs INT8 convolutions about twice
as fast as onnxruntime's QLinearConv, which uses neither (``benchmarks/results/peers.md``,
``ceilings.md``). OpenVINO reads mmedge's ONNX files as they are, QDQ INT8 included (its
low-precision transformations turn each QuantizeLinear/DequantizeLinear pair into INT8 kernels),
so a component keeps the recipe ``mmedge quantize`` chose and verified — only the kernels change.
``Pipeline(bundle, providers={"image": "openvino", "*": "cpu"})`` uses it for one component.

:class:`OpenVINOSession` answers the calls :mod:`mmedge.sessions` makes of an onnxruntime
session (``run``, ``get_providers``, ``get_provider_options``, ``get_inputs``/``get_outputs``
names); one infer request per calling thread keeps ``Pipeline.run`` thread-safe.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmedge.providers import OPENVINO
from mmedge.sessions import default_thread_budget

__all__ = ["OpenVINOSession", "compile_config"]


def compile_config(threads: int, cache_dir: Path | None = None) -> dict[str, Any]:
    """OpenVINO CPU settings for one latency-bound request at a time on ``threads`` threads.

    ``INFERENCE_PRECISION_HINT`` f32: on CPUs with AMX/AVX-512 BF16 OpenVINO would otherwise run
    float layers in bfloat16, off the numerics the bundle was verified with; INT8 (QDQ) layers still
    run as INT8. ``cache_dir``: OpenVINO's model cache (``CACHE_DIR``): a model compiled from a file
    is kept there and imported, not compiled again, the next time that file is compiled here.

    ``ENABLE_CPU_PINNING`` only where the threads take every core this process may use: pinned, two
    compiled models with a share of the cores each (a Pipeline's concurrent encoders, one thread
    each on 2 cores) run at once about as slowly as one after the other (a text and an image
    encoder alone 6.6 and 2.3 ms: at once 10.2–11.2 ms pinned, 7.4–7.8 unpinned); alone on every
    core, pinning is a little faster (``benchmarks/NOTES.md``).
    """
    config: dict[str, Any] = {
        "INFERENCE_NUM_THREADS": threads,
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": 1,
        "INFERENCE_PRECISION_HINT": "f32",
        "ENABLE_CPU_PINNING": threads >= default_thread_budget(),
    }
    if cache_dir is not None:
        config["CACHE_DIR"] = str(cache_dir)
    return config


@dataclass(frozen=True)
class _Arg:
    """What :func:`mmedge.verify.session_specs` reads of a session input or output."""

    name: str
    shape: list[Any]
    type: str


_TYPES = {"f32": "tensor(float)", "f16": "tensor(float16)", "i64": "tensor(int64)", "i32": "tensor(int32)",
          "u8": "tensor(uint8)", "i8": "tensor(int8)", "boolean": "tensor(bool)", "f64": "tensor(double)"}  # fmt: skip


class OpenVINOSession:
    """A component's ONNX file compiled by OpenVINO for the CPU, with ``threads`` inference threads."""

    def __init__(self, path: str | Path, threads: int, cache_dir: Path | None = None) -> None:
        import openvino as ov

        self._compiled = ov.Core().compile_model(str(path), "CPU", compile_config(threads, cache_dir))
        self._output_names = [output_name(o) for o in self._compiled.outputs]
        self._local = threading.local()

    def run(self, output_names: Sequence[str] | None, feeds: Mapping[str, Any]) -> list[np.ndarray]:
        """Outputs in the order of ``output_names`` (None: every output, in the graph's order).

        The feeds are read in place (shared tensors: no copy of a 224² image into the request,
        which costs as much as the small encoders when caches are cold); the call is synchronous,
        so they are not used after it returns. Outputs are copied out of the request, which reuses
        its output tensors on the next call.
        """
        import openvino as ov

        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self._compiled.create_infer_request()
        # tensors set directly over the callers' arrays: infer(dict) costs a tenth of a millisecond
        # more in its Python dispatch, as much as a small encoder's math
        for name, value in feeds.items():
            request.set_tensor(name, ov.Tensor(np.ascontiguousarray(value), shared_memory=True))
        request.infer()
        return [request.get_tensor(n).data.copy() for n in output_names or self._output_names]

    def get_providers(self) -> list[str]:
        return [OPENVINO]

    def get_provider_options(self) -> dict[str, Any]:
        return {}

    def get_inputs(self) -> list[_Arg]:
        return [_arg(port) for port in self._compiled.inputs]

    def get_outputs(self) -> list[_Arg]:
        return [_arg(port, output_name(port)) for port in self._compiled.outputs]


def output_name(port: Any) -> str:
    """The ONNX graph output name of a compiled model's output. ``get_any_name`` may give another name
    of the same tensor (TorchScript's ``/encoder/Reshape_4_output_0`` beside ``text_pooler_output``);
    OpenVINO's ONNX reader names each result node after its graph output (``<name>/sink_port_0``)."""
    names = port.get_names()
    named = port.get_node().get_friendly_name().removesuffix("/sink_port_0")
    return named if named in names else port.get_any_name()


def _arg(port: Any, name: str | None = None) -> _Arg:
    shape = [int(d.get_length()) if d.is_static else None for d in port.get_partial_shape()]
    kind = _TYPES.get(port.get_element_type().get_type_name(), "tensor(float)")
    return _Arg(name or port.get_any_name(), shape, kind)
