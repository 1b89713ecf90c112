"""CPU ceilings at the reference models' layer shapes: what FP32 and INT8 conv/GEMM kernels reach here.

Every layer shape (ResNet-18 and ResNet-50 convolutions at 224² and 64², batch 1, as the reference
models build them; BERT-base-like and the reference models' text and head GEMMs) runs as a
single-op onnxruntime graph built with ``onnx.helper`` (2 intra-op threads, one inter-op thread,
``allow_spinning=0``, full graph optimisation), in four forms:

- ``fp32``: ``Conv`` / ``MatMul`` with FP32 weights;
- ``qlinear``: ``QLinearConv`` (u8 activations, s8 per-channel weights) / ``MatMulInteger`` (u8 × s8 → s32);
- ``qdq``: the QDQ pattern mmedge's static INT8 bundles hold (``DequantizeLinear`` → ``Conv`` →
  ``QuantizeLinear``; ``DequantizeLinear`` → ``MatMul`` → ``QuantizeLinear``), which onnxruntime fuses
  into ``QLinearConv`` / ``QLinearMatMul``;
- ``dynamic`` (GEMMs only): FP32 in and out through ``DynamicQuantizeLinear`` → ``MatMulInteger`` →
  scale, the pattern of dynamic INT8 (fused into ``DynamicQuantizeMatMul``), quantizing its input on every run.

GFLOP/s count 2 FLOPs per multiply-add; each shape's time is its minimum over timed runs (the
ceiling: what the kernel reaches when the busy machine leaves it alone), the median is kept too.
The FP32 peak is cores × clock × FLOPs/cycle: 2 FMA ports × (32 FP32 FLOPs per AVX-512 FMA, 16 per
AVX2 FMA, 8 without FMA); the clock is the nominal one from ``/proc/cpuinfo`` (a VM does not show
turbo). A large FP32 MatMul and INT8 MatMulInteger are measured beside it as achievable references.

    .venv/bin/python benchmarks/ceilings.py                    # writes results/ceilings.json|md
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "GEMMS",
    "ConvShape",
    "GemmShape",
    "conv_flops",
    "conv_shapes",
    "gemm_shapes",
    "int8_peak_gops",
    "main",
    "onnxruntime_call",
    "peak",
    "time_call",
]

RESULTS = Path(__file__).parent / "results"
THREADS = 2
FORMS_CONV = ("fp32", "qlinear", "qdq")
FORMS_GEMM = ("fp32", "qlinear", "qdq", "dynamic")


@dataclass(frozen=True)
class ConvShape:
    c_in: int
    c_out: int
    kernel: int
    stride: int
    padding: int
    size: int  # input height = width
    count: int = 1  # how many times the network holds it

    @property
    def out_size(self) -> int:
        return (self.size + 2 * self.padding - self.kernel) // self.stride + 1

    @property
    def flops(self) -> float:
        return 2.0 * self.c_out * self.c_in * self.kernel**2 * self.out_size**2

    @property
    def label(self) -> str:
        return f"{self.c_in}→{self.c_out} {self.kernel}×{self.kernel}/{self.stride} @{self.size}²"


@dataclass(frozen=True)
class GemmShape:
    m: int
    k: int
    n: int
    where: str

    @property
    def flops(self) -> float:
        return 2.0 * self.m * self.k * self.n

    @property
    def label(self) -> str:
        return f"[{self.m}×{self.k}]·[{self.k}×{self.n}]"


# BERT-base (hidden 768, MLP 3072) at 32 and 128 tokens: ResNetBertNet's text encoder at 32 tokens has
# exactly the 32-token shapes; TriModalNet's LSTM (embed 64, hidden 128) runs its gate GEMMs per token;
# the fusion heads are one row each.
GEMMS = (
    GemmShape(32, 768, 768, "BERT q/k/v/out, 32 tokens (ResNetBertNet text)"),
    GemmShape(32, 768, 3072, "BERT MLP up, 32 tokens (ResNetBertNet text)"),
    GemmShape(32, 3072, 768, "BERT MLP down, 32 tokens (ResNetBertNet text)"),
    GemmShape(128, 768, 768, "BERT-base q/k/v/out, 128 tokens"),
    GemmShape(128, 768, 3072, "BERT-base MLP up, 128 tokens"),
    GemmShape(128, 3072, 768, "BERT-base MLP down, 128 tokens"),
    GemmShape(16, 64, 512, "LSTM input gates, 16 tokens (TriModalNet text)"),
    GemmShape(1, 128, 512, "LSTM recurrent gates, one step (TriModalNet text)"),
    GemmShape(1, 2048, 512, "fusion image_proj (ResNetBertNet head)"),
    GemmShape(1, 768, 512, "fusion text_proj (ResNetBertNet head)"),
)


def conv_shapes(depth: int, size: int) -> list[ConvShape]:
    """The distinct convolutions of the reference models' ResNet-``depth`` at ``size``², with counts."""
    import torch

    from mmedge.models._blocks import resnet_encoder

    found: dict[tuple[int, ...], int] = {}

    def hook(module: torch.nn.Conv2d, args: tuple[torch.Tensor, ...]) -> None:
        if module.groups != 1:
            raise ValueError("grouped convolutions are not measured")
        key = (
            module.in_channels,
            module.out_channels,
            module.kernel_size[0],
            module.stride[0],
            module.padding[0],
            args[0].shape[-1],
        )
        found[key] = found.get(key, 0) + 1

    model = resnet_encoder(depth).eval()
    handles = [m.register_forward_pre_hook(hook) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.inference_mode():
        model(torch.zeros(1, 3, size, size))
    for h in handles:
        h.remove()
    return [ConvShape(*key, count=n) for key, n in found.items()]


def conv_flops(path: str | os.PathLike[str], batch: int = 1) -> float:
    """FLOPs (2 per multiply-add) of every Conv in the ONNX graph at ``path``, symbolic dims set to ``batch``."""
    model, shapes, weights = _static_shapes(path, lambda name, axis: batch)
    total = 0.0
    for node in model.graph.node:
        if node.op_type != "Conv":
            continue
        out, w = shapes.get(node.output[0]), weights.get(node.input[1])
        if not out or not w or 0 in out:
            raise ValueError(f"{path}: no static shape for Conv {node.name} ({node.output[0]}: {out})")
        n, c_out, *spatial = out
        macs = n * c_out * w[1]
        for d in (*spatial, *w[2:]):
            macs *= d
        total += 2 * macs
    return total


def gemm_shapes(path: str | os.PathLike[str], length: int, batch: int = 1) -> dict[tuple[int, int, int], int]:
    """(M, K, N) -> count of the MatMul/Gemm nodes with a constant 2-D weight in the graph at ``path``.

    Inputs' symbolic dims are set to ``batch`` (the first) and ``length`` (the rest: a text
    encoder's tokens); M is every leading dim of the activation multiplied (batch x tokens for a
    transformer's linear layers). Products of two activations (attention scores) are not counted:
    they have no weight to quantize and are small at these lengths.
    """
    model, shapes, weights = _static_shapes(path, lambda name, axis: batch if axis == 0 else length)
    found: dict[tuple[int, int, int], int] = {}
    for node in model.graph.node:
        if node.op_type not in ("MatMul", "Gemm") or len(weights.get(node.input[1], ())) != 2:
            continue
        k, n = weights[node.input[1]]
        if node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute):
            k, n = n, k
        a = shapes.get(node.input[0])
        if not a or 0 in a:
            raise ValueError(f"{path}: no static shape for {node.op_type} {node.name} ({node.input[0]}: {a})")
        m = math.prod(a[:-1])
        found[(m, k, n)] = found.get((m, k, n), 0) + 1
    return found


def _static_shapes(
    path: str | os.PathLike[str], dim: Callable[[str, int], int]
) -> tuple[Any, dict[str, list[int]], dict[str, list[int]]]:
    """The inferred graph at ``path`` with every symbolic input dim set by ``dim(input, axis)``;
    its tensor shapes and its initializers' shapes by name."""
    import onnx
    from onnx import shape_inference

    model = onnx.load(str(path), load_external_data=False)
    for tensor in model.graph.input:
        for axis, d in enumerate(tensor.type.tensor_type.shape.dim):
            if d.dim_param or not d.dim_value:
                d.dim_value = dim(tensor.name, axis)
    inferred = shape_inference.infer_shapes(model, data_prop=True)
    shapes = {
        v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in (*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input)
    }
    return inferred, shapes, {t.name: list(t.dims) for t in model.graph.initializer}


# --- machine --------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    from mmedge.cpu import cpu_model_and_flags

    name, flags = cpu_model_and_flags()
    mhz = [
        float(line.split(":")[1])
        for line in Path("/proc/cpuinfo").read_text().splitlines()
        if line.lower().startswith("cpu mhz")
    ]
    import numpy
    import onnxruntime

    return {
        "cpu": name,
        "flags": list(flags),
        "usable_cores": len(os.sched_getaffinity(0)),
        "clock_ghz": max(mhz) / 1000 if mhz else None,
        "clock_source": "/proc/cpuinfo 'cpu MHz' (nominal; a KVM guest does not show turbo)",
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
        "onnxruntime": onnxruntime.__version__,
        "numpy": numpy.__version__,
    }


def peak(info: dict[str, Any], threads: int = THREADS) -> dict[str, Any]:
    """Theoretical FP32 FMA peak and INT8 dot-product peaks of ``threads`` cores, with the method."""
    flags, ghz = set(info["flags"]), info["clock_ghz"] or 0.0
    per_port = 32 if "avx512f" in flags else 16 if {"avx2", "fma"} <= flags else 8
    ports = 2
    out = {
        "fp32_gflops": threads * ghz * per_port * ports,
        "fp32_method": f"{threads} cores × {ghz:.2f} GHz × {ports} FMA ports × {per_port} FP32 FLOPs/cycle/port "
        f"({'AVX-512' if per_port == 32 else 'AVX2' if per_port == 16 else 'SSE'} FMA; 2 ports assumed, as on Xeon Scalable and Zen)",
    }
    if "avx512_vnni" in flags or "avx_vnni" in flags:
        width = 64 if "avx512_vnni" in flags else 32  # u8 x s8 MACs per VPDPBUSD
        out["int8_vnni_gops"] = threads * ghz * width * 2 * ports
        out["int8_vnni_method"] = f"VPDPBUSD: {width} u8×s8 MACs/instruction × 2 ops × {ports} ports"
    if "amx_int8" in flags:
        out["int8_amx_gops"] = threads * ghz * 1024 * 2
        out["int8_amx_method"] = "AMX TDPBUSD: 1024 MACs/cycle/core (16×16×64 tile product every 16 cycles)"
    return out


def int8_peak_gops(peak_record: dict[str, Any]) -> float | None:
    """The highest INT8 peak the CPU has (AMX, else VNNI); None without either."""
    return peak_record.get("int8_amx_gops") or peak_record.get("int8_vnni_gops")


def large_gemm_reference(seconds: float) -> dict[str, float]:
    """GFLOP/s (GOP/s) of onnxruntime's FP32 MatMul and INT8 MatMulInteger at [512×1024]·[1024×1024]:
    what its kernels reach on a shape large enough to amortise everything but the arithmetic."""
    shape = GemmShape(512, 1024, 1024, "large reference")
    out = {}
    for form in ("fp32", "qlinear"):
        t = time_model(*gemm_graph(shape, form), seconds=max(seconds, 0.5))
        out[form] = shape.flops / t["min_s"] / 1e9
    return out


# --- single-op graphs -----------------------------------------------------------------------------


def conv_graph(s: ConvShape, form: str) -> tuple[Any, dict[str, Any]]:
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    attrs = {"kernel_shape": [s.kernel] * 2, "strides": [s.stride] * 2, "pads": [s.padding] * 4}
    w = rng.standard_normal((s.c_out, s.c_in, s.kernel, s.kernel), dtype=np.float32) * 0.05
    x_shape = [1, s.c_in, s.size, s.size]
    y_shape = [1, s.c_out, s.out_size, s.out_size]
    init = []
    if form == "fp32":
        init = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(np.zeros(s.c_out, np.float32), "B")]
        nodes = [helper.make_node("Conv", ["X", "W", "B"], ["Y"], **attrs)]
        x_type = y_type = TensorProto.FLOAT
        feed = {"X": rng.standard_normal(x_shape, dtype=np.float32)}
    else:
        wq = rng.integers(-127, 128, w.shape, dtype=np.int8)
        w_scale = np.full(s.c_out, 0.01, np.float32)
        init = [
            numpy_helper.from_array(wq, "Wq"),
            numpy_helper.from_array(w_scale, "w_scale"),
            numpy_helper.from_array(np.zeros(s.c_out, np.int8), "w_zp"),
            numpy_helper.from_array(np.array(0.02, np.float32), "x_scale"),
            numpy_helper.from_array(np.array(128, np.uint8), "x_zp"),
            numpy_helper.from_array(np.array(0.05, np.float32), "y_scale"),
            numpy_helper.from_array(np.array(128, np.uint8), "y_zp"),
            numpy_helper.from_array(np.zeros(s.c_out, np.int32), "Bq"),
        ]
        if form == "qlinear":
            nodes = [
                helper.make_node(
                    "QLinearConv",
                    ["X", "x_scale", "x_zp", "Wq", "w_scale", "w_zp", "y_scale", "y_zp", "Bq"],
                    ["Y"],
                    **attrs,
                )
            ]
        else:
            init.append(numpy_helper.from_array(np.zeros(s.c_out, np.float32), "B"))
            nodes = [
                helper.make_node("DequantizeLinear", ["X", "x_scale", "x_zp"], ["Xf"]),
                helper.make_node("DequantizeLinear", ["Wq", "w_scale", "w_zp"], ["Wf"], axis=0),
                helper.make_node("Conv", ["Xf", "Wf", "B"], ["Yf"], **attrs),
                helper.make_node("QuantizeLinear", ["Yf", "y_scale", "y_zp"], ["Y"]),
            ]
        x_type = y_type = TensorProto.UINT8
        feed = {"X": rng.integers(0, 256, x_shape, dtype=np.uint8)}
    graph = helper.make_graph(
        nodes,
        "conv",
        [helper.make_tensor_value_info("X", x_type, x_shape)],
        [helper.make_tensor_value_info("Y", y_type, y_shape)],
        init,
    )
    return _model(graph), feed


def gemm_graph(s: GemmShape, form: str) -> tuple[Any, dict[str, Any]]:
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    a_f = rng.standard_normal((s.m, s.k), dtype=np.float32)
    bq = rng.integers(-127, 128, (s.k, s.n), dtype=np.int8)
    scalars = [
        numpy_helper.from_array(np.array(0.01, np.float32), "b_scale"),
        numpy_helper.from_array(np.array(0, np.int8), "b_zp"),
        numpy_helper.from_array(np.array(0.02, np.float32), "a_scale"),
        numpy_helper.from_array(np.array(128, np.uint8), "a_zp"),
        numpy_helper.from_array(np.array(0.05, np.float32), "y_scale"),
        numpy_helper.from_array(np.array(128, np.uint8), "y_zp"),
    ]
    a_u8 = rng.integers(0, 256, (s.m, s.k), dtype=np.uint8)
    if form == "fp32":
        init = [numpy_helper.from_array(bq.astype(np.float32) * 0.01, "B")]
        nodes = [helper.make_node("MatMul", ["A", "B"], ["Y"])]
        types, feed = (TensorProto.FLOAT, TensorProto.FLOAT), {"A": a_f}
    elif form == "qlinear":
        init = [numpy_helper.from_array(bq, "Bq"), *scalars]
        nodes = [helper.make_node("MatMulInteger", ["A", "Bq", "a_zp", "b_zp"], ["Y"])]
        types, feed = (TensorProto.UINT8, TensorProto.INT32), {"A": a_u8}
    elif form == "qdq":
        init = [numpy_helper.from_array(bq, "Bq"), *scalars]
        nodes = [
            helper.make_node("DequantizeLinear", ["A", "a_scale", "a_zp"], ["Af"]),
            helper.make_node("DequantizeLinear", ["Bq", "b_scale", "b_zp"], ["Bf"]),
            helper.make_node("MatMul", ["Af", "Bf"], ["Yf"]),
            helper.make_node("QuantizeLinear", ["Yf", "y_scale", "y_zp"], ["Y"]),
        ]
        types, feed = (TensorProto.UINT8, TensorProto.UINT8), {"A": a_u8}
    else:  # dynamic
        init = [numpy_helper.from_array(bq, "Bq"), *scalars]
        nodes = [
            helper.make_node("DynamicQuantizeLinear", ["A"], ["Aq", "aq_scale", "aq_zp"]),
            helper.make_node("MatMulInteger", ["Aq", "Bq", "aq_zp", "b_zp"], ["Yi"]),
            helper.make_node("Cast", ["Yi"], ["Yc"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["aq_scale", "b_scale"], ["s"]),
            helper.make_node("Mul", ["Yc", "s"], ["Y"]),
        ]
        types, feed = (TensorProto.FLOAT, TensorProto.FLOAT), {"A": a_f}
    graph = helper.make_graph(
        nodes,
        "gemm",
        [helper.make_tensor_value_info("A", types[0], [s.m, s.k])],
        [helper.make_tensor_value_info("Y", types[1], [s.m, s.n])],
        init,
    )
    return _model(graph), feed


def _model(graph: Any) -> Any:
    from onnx import checker, helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    checker.check_model(model)
    return model


def time_model(model: Any, feed: dict[str, Any], seconds: float, threads: int = THREADS) -> dict[str, Any]:
    return time_call(onnxruntime_call(model.SerializeToString(), feed, threads), seconds)


def onnxruntime_call(
    model: bytes | str | os.PathLike[str], feed: dict[str, Any], threads: int = THREADS
) -> Callable[[], Any]:
    """One run of ``model`` (serialized, or a file) on ``feed`` in an onnxruntime CPU session set up
    as every ceiling is measured: ``threads`` intra-op threads, one inter-op thread, no spinning,
    full graph optimisation."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # unused scale initializers of the single-op forms are expected
    source = model if isinstance(model, bytes) else str(model)
    session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    return lambda: session.run(None, feed)


def time_call(fn: Callable[[], Any], seconds: float) -> dict[str, Any]:
    """``fn`` run after run for about ``seconds`` after 3 untimed runs: min and median seconds, runs."""
    for _ in range(3):
        fn()
    times = _times(fn, seconds)
    return {"min_s": min(times), "median_s": statistics.median(times), "runs": len(times)}


def _times(fn: Callable[[], Any], seconds: float, max_runs: int = 400, min_runs: int = 5) -> list[float]:
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(times) < min_runs or (time.perf_counter() < deadline and len(times) < max_runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def fused_ops(model: Any) -> list[str]:
    """Op types of ``model`` after onnxruntime's graph optimisations (what actually runs)."""
    import tempfile

    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.optimized_model_filepath = str(Path(tmp) / "opt.onnx")
        options.log_severity_level = 3
        ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        return [n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node]


# --- the run --------------------------------------------------------------------------------------


def measure(
    items: Iterable[tuple[str, Any, Sequence[str], Callable[[Any, str], tuple[Any, dict[str, Any]]]]],
    seconds: float,
    say: Callable[[str], None],
) -> list[dict[str, Any]]:
    rows = []
    for group, shape, forms, build in items:
        row: dict[str, Any] = {"group": group, "shape": shape.label, **asdict(shape), "flops": shape.flops}
        for form in forms:
            model, feed = build(shape, form)
            t = time_model(model, feed, seconds)
            t["gflops_at_min"] = shape.flops / t["min_s"] / 1e9
            t["gflops_at_median"] = shape.flops / t["median_s"] / 1e9
            if form != "fp32":
                t["fused_ops"] = fused_ops(model)
            row[form] = t
        say(f"{group} {shape.label}: " + ", ".join(f"{f} {row[f]['gflops_at_min']:.0f}" for f in forms) + " GFLOP/s")
        rows.append(row)
    return rows


def network_ceilings(rows: list[dict[str, Any]], forms: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per network: total conv FLOPs, the sum over its convs of each one's best time, and their ratio."""
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        net = out.setdefault(row["group"], {"flops": 0.0, **{f"{f}_ms": 0.0 for f in forms}})
        net["flops"] += row["flops"] * row["count"]
        for f in forms:
            net[f"{f}_ms"] += row[f]["min_s"] * row["count"] * 1e3
    for net in out.values():
        net["gflop"] = net["flops"] / 1e9
        for f in forms:
            net[f"{f}_gflops"] = net["flops"] / net[f"{f}_ms"] / 1e6
    return out


def markdown(record: dict[str, Any]) -> str:
    m, p = record["machine"], record["peak"]
    lines = [
        "# CPU ceilings at the reference models' layer shapes",
        "",
        f"- **Machine**: {m['cpu']}, {m['usable_cores']} usable cores, {m['clock_ghz']:.2f} GHz ({m['clock_source']}); "
        f"flags {' '.join(f for f in m['flags'] if f.startswith(('avx', 'amx', 'fma')))}; onnxruntime {m['onnxruntime']}",
        f"- **Load average** before {m['load_average_before']}, after {record['load_average_after']} on "
        f"{m['usable_cores']} cores"
        + (
            " — **the machine was busy** (other jobs shared the cores), so medians are "
            "noisy; ceilings use each shape's minimum time"
            if (m["load_average_before"] or [0])[0] > 1.0
            else ""
        ),
        f"- **FP32 FMA peak** ({THREADS} threads): {p['fp32_gflops']:.0f} GFLOP/s = {p['fp32_method']}",
    ]
    if "int8_vnni_gops" in p:
        lines.append(f"- **INT8 VNNI peak**: {p['int8_vnni_gops']:.0f} GOP/s = {p['int8_vnni_method']}")
    if "int8_amx_gops" in p:
        lines.append(f"- **INT8 AMX peak**: {p['int8_amx_gops']:.0f} GOP/s = {p['int8_amx_method']}")
    large = record["large_gemm_gflops"]
    if not int8_peak_gops(p):
        lines.append(
            "- **INT8 peak**: no dot-product instruction (no VNNI, no AMX): u8×s8 products run as "
            "VPMADDUBSW + VPMADDWD, so the large MatMulInteger below "
            f"({large['qlinear']:.0f} GOP/s, {large['qlinear'] / large['fp32']:.2f}× its FP32) is the INT8 ceiling measured"
        )
    lines += [
        f"- **Large GEMM reference** ([512×1024]·[1024×1024], same session settings): FP32 MatMul "
        f"{large['fp32']:.0f} GFLOP/s ({large['fp32'] / p['fp32_gflops']:.0%} "
        f"of the FP32 peak), INT8 MatMulInteger {large['qlinear']:.0f} GOP/s"
        + (
            "; above ~95% of the peak means the cores ran faster than the nominal clock (turbo), so the "
            "percentages of peak below are upper bounds"
            if large["fp32"] > 0.95 * p["fp32_gflops"]
            else ""
        ),
        f"- **Method**: single-op onnxruntime graphs, {THREADS} intra-op threads, allow_spinning=0; "
        f"each shape timed for {record['seconds_per_shape']} s (min over runs → GFLOP/s; 2 FLOPs per MAC). "
        "INT8 forms: `qlinear` = QLinearConv / MatMulInteger; `qdq` = DQ→op→Q (fused by ORT into "
        "QLinearConv / QLinearMatMul); `dynamic` = DynamicQuantizeLinear→MatMulInteger→scale (FP32 in/out).",
        "",
        "## Networks (convolutions only, batch 1): sum over layers of each one's best time",
        "",
        "| network | conv GFLOP | FP32 ms | FP32 GFLOP/s | % of FP32 peak | QLinearConv ms | INT8 GOP/s | "
        "% of INT8 peak | QDQ ms | INT8 / FP32 speed-up |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    int8_peak = int8_peak_gops(p)
    for name, n in record["networks"].items():
        lines.append(
            f"| {name} | {n['gflop']:.2f} | {n['fp32_ms']:.2f} | {n['fp32_gflops']:.0f} | "
            f"{n['fp32_gflops'] / p['fp32_gflops']:.0%} | {n['qlinear_ms']:.2f} | {n['qlinear_gflops']:.0f} | "
            + (f"{n['qlinear_gflops'] / int8_peak:.0%}" if int8_peak else "—")
            + f" | {n['qdq_ms']:.2f} | {n['fp32_ms'] / n['qlinear_ms']:.2f}× |"
        )
    if int8_peak:
        lines += ["", f"% of INT8 peak: of the {'AMX' if 'int8_amx_gops' in p else 'VNNI'} peak above."]
    lines += [
        "",
        "## Convolutions (GFLOP/s at the minimum time; × = how many the network holds)",
        "",
        "| network | conv | × | FP32 | % peak | QLinearConv | QDQ | INT8/FP32 |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in record["convs"]:
        f = r["fp32"]["gflops_at_min"]
        lines.append(
            f"| {r['group']} | {r['shape']} | {r['count']} | {f:.0f} | {f / p['fp32_gflops']:.0%} | "
            f"{r['qlinear']['gflops_at_min']:.0f} | {r['qdq']['gflops_at_min']:.0f} | "
            f"{r['fp32']['min_s'] / r['qlinear']['min_s']:.2f}× |"
        )
    lines += [
        "",
        "## GEMMs (GFLOP/s at the minimum time)",
        "",
        "| GEMM | where | FP32 | % peak | MatMulInteger | QDQ (QLinearMatMul) | dynamic INT8 | best INT8 / FP32 |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in record["gemms"]:
        f = r["fp32"]["gflops_at_min"]
        best = max(r[k]["gflops_at_min"] for k in ("qlinear", "qdq", "dynamic"))
        lines.append(
            f"| {r['shape']} | {r['where']} | {f:.0f} | {f / p['fp32_gflops']:.0%} | {r['qlinear']['gflops_at_min']:.0f} | "
            f"{r['qdq']['gflops_at_min']:.0f} | {r['dynamic']['gflops_at_min']:.0f} | {best / f:.2f}× |"
        )
    fused = sorted(
        {
            " ".join(r[f]["fused_ops"])
            for r in (*record["convs"], *record["gemms"])
            for f in ("qdq", "dynamic")
            if f in r
        }
    )
    lines += ["", f"Ops onnxruntime ran for the fused INT8 forms: {'; '.join(fused)}.", ""]
    return "\n".join(lines)


def _say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--seconds", type=float, default=0.3, help="timed seconds per shape and form")
    parser.add_argument("--sizes", default="224,64")
    args = parser.parse_args(argv)
    info = machine()
    _say(f"{info['cpu']}, load {info['load_average_before']}")
    record: dict[str, Any] = {"machine": info, "peak": peak(info), "seconds_per_shape": args.seconds}
    record["large_gemm_gflops"] = large_gemm_reference(args.seconds)
    sizes = [int(s) for s in args.sizes.split(",")]
    convs = [
        (f"ResNet-{d} @{s}²", shape, FORMS_CONV, conv_graph)
        for s in sizes
        for d in (18, 50)
        for shape in conv_shapes(d, s)
    ]
    record["convs"] = measure(convs, args.seconds, _say)
    gemms = [("GEMM", shape, FORMS_GEMM, gemm_graph) for shape in GEMMS]
    record["gemms"] = [{**r, "where": s.where} for r, s in zip(measure(gemms, args.seconds, _say), GEMMS, strict=True)]
    record["networks"] = network_ceilings(record["convs"], FORMS_CONV)
    record["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ceilings.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    (args.out / "ceilings.md").write_text(markdown(record), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
