"""The ExecuTorch peers: XNNPACK FP32 and pt2e INT8 (``XNNPACKQuantizer``), built from the torch model.

ExecuTorch pins its own torch, so these run under the interpreter given as ``--peer-python``
(one with executorch, and mmedge and the model's package importable). The build makes every
buffer persistent (XNNPACK lowering rejects non-persistent ones), ``torch.export``s the model
with the checkpoint's weights at each batch size the benchmark needs (ExecuTorch programs have
static shapes), and lowers it with ``XnnpackPartitioner``. INT8 is the documented pt2e flow:
``prepare_pt2e`` with ``XNNPACKQuantizer`` (symmetric, per-channel), calibration on the
benchmark's samples, ``convert_pt2e``, export again. ``keep_frontend`` removes the quantizer's
annotations from the spectral front-end (every node a ``log`` of a power spectrum depends on),
pt2e's way of leaving a region FP32. The runner times ``Method.execute`` on the loaded program.
"""

from __future__ import annotations

import inspect
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmedge.bench._stats import RunTiming
from mmedge.bench._types import MODEL_PART, Hotspots
from mmedge.errors import ExportError, summary

__all__ = ["ExecutorchRunner", "build_executorch", "frontend_fx_nodes", "import_executorch"]

FRONTEND_MAX_LINEAR = 3  # as mmedge.quantize.recipes: DFT convs and a mel matmul before the log


def import_executorch() -> None:
    import executorch.runtime  # noqa: F401 - timed on its own: the framework's import cost


def build_executorch(
    model: Any,
    out: Path,
    calibration: Sequence[Mapping[str, np.ndarray]],
    batch_sizes: Sequence[int],
    *,
    int8: bool,
    keep_frontend: bool,
    items: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """One ``.pte`` per batch size (``out`` with ``-b{n}``); returns their paths, the input order and the
    input whose length picks the program. ``items``: inputs that take that many rows at every batch size
    (a zero-shot model's label texts); the programs are lowered at those shapes."""
    import torch

    model.eval()
    _persistent_buffers(model)
    order = [p for p in inspect.signature(model.forward).parameters if p in calibration[0]]
    if len(order) < len(calibration[0]):  # forward(batch): programs take the bundle's inputs positionally
        model, order = _by_inputs(model, list(calibration[0])), list(calibration[0])
    notes = ["XNNPACK delegate (XnnpackPartitioner)"]
    paths = {}
    kept: list[int] = []  # front-end nodes left FP32, per quantized program
    items = dict(items or {})
    for batch in sorted(set(batch_sizes)):
        rows = {name: items.get(name, batch) for name in order}
        example = tuple(torch.from_numpy(_cycle(calibration, name, rows[name])) for name in order)
        try:
            program = _lower(model, example, calibration, rows, batch, int8=int8, kept=kept if keep_frontend else None)
        except Exception as e:
            raise ExportError(f"ExecuTorch export of batch {batch} failed: {_said(e)}") from e
        paths[str(batch)] = str(out.with_name(f"{out.stem}-b{batch}.pte"))
        Path(paths[str(batch)]).write_bytes(program.buffer)
    if int8:
        notes.append(f"pt2e XNNPACKQuantizer symmetric per-channel, {len(calibration)} calibration samples")
    if keep_frontend:
        notes.append(f"spectral front-end kept FP32: {max(kept, default=0)} nodes' quantizer annotations removed")
    keyed = next((name for name in order if name not in items), order[0])
    return {"paths": paths, "order": order, "batch_input": keyed, "notes": notes}


def _by_inputs(model: Any, names: list[str]) -> Any:
    """``model`` taking the bundle's inputs positionally, its dict arguments rebuilt (``forward(batch)``)."""
    from torch import nn

    from mmedge.export import forward_arguments

    class ByInputs(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *xs: Any) -> Any:
            return self.model(**forward_arguments(self.model, dict(zip(names, xs, strict=True))))

    return ByInputs().eval()


def _said(e: Exception) -> str:
    """The error's first line and the operators its (often pages-long) edge-dialect check names."""
    ops = sorted(set(re.findall(r"<EdgeOpOverload: ([\w.]+)>", str(e))))
    return f"{type(e).__name__}: {summary(e)}" + (f" ({', '.join(ops)})" if ops else "")


def _lower(
    model: Any,
    example: tuple[Any, ...],
    calibration: Sequence[Mapping[str, np.ndarray]],
    rows: Mapping[str, int],
    batch: int,
    *,
    int8: bool,
    kept: list[int] | None,
) -> Any:
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    with torch.no_grad():
        if int8:
            model = _quantized(model, example, calibration, rows, batch, kept=kept)
        exported = torch.export.export(model, example)
        return to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()]).to_executorch()


def _quantized(
    model: Any,
    example: tuple[Any, ...],
    calibration: Sequence[Mapping[str, np.ndarray]],
    rows: Mapping[str, int],
    batch: int,
    *,
    kept: list[int] | None,
) -> Any:
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    graph = torch.export.export(model, example).module()
    if kept is not None:
        quantizer = _without_frontend(quantizer, kept)
    prepared = prepare_pt2e(graph, quantizer)
    for start in range(0, len(calibration), batch):
        prepared(*(torch.from_numpy(_cycle(calibration[start:], name, n)) for name, n in rows.items()))
    return convert_pt2e(prepared)


def _without_frontend(inner: Any, kept: list[int]) -> Any:
    """``inner`` whose annotations on the spectral front-end are removed after it annotates
    (how many nodes: appended to ``kept``)."""
    from torchao.quantization.pt2e.quantizer import Quantizer

    class KeepFrontend(Quantizer):
        def annotate(self, model: Any) -> Any:
            model = inner.annotate(model)
            front = frontend_fx_nodes(model.graph)
            for node in front:
                node.meta.pop("quantization_annotation", None)
            kept.append(len(front))
            return model

        def validate(self, model: Any) -> None:
            inner.validate(model)

    return KeepFrontend()


def frontend_fx_nodes(graph: Any) -> list[Any]:
    """Nodes of a spectral front-end in an FX graph: each ``log`` of a power spectrum (a squaring
    and at most ``FRONTEND_MAX_LINEAR`` convs/matmuls upstream) and every op it depends on."""
    found: dict[Any, None] = {}
    for node in graph.nodes:
        if node.op != "call_function" or _op(node) != "log":
            continue
        upstream = _ancestors(node)
        squares = any(_op(a) in {"pow", "square"} or (_op(a) == "mul" and _same_args(a)) for a in upstream)
        linear = sum(1 for a in upstream if _op(a) in {"conv1d", "conv2d", "convolution", "linear", "matmul", "mm"})
        if squares and linear <= FRONTEND_MAX_LINEAR:
            found.update(dict.fromkeys([node, *upstream]))
    return list(found)


def _op(node: Any) -> str:
    """``aten.log.default`` → ``log``; non-calls → ''."""
    if node.op != "call_function":
        return ""
    name = getattr(node.target, "__name__", str(node.target))
    return name.split(".")[0]


def _same_args(node: Any) -> bool:
    return len(node.args) >= 2 and node.args[0] is node.args[1]


def _ancestors(node: Any) -> list[Any]:
    seen: dict[Any, None] = {}
    stack = list(node.all_input_nodes)
    while stack:
        n = stack.pop()
        if n in seen or n.op != "call_function":
            continue
        seen[n] = None
        stack.extend(n.all_input_nodes)
    return list(seen)


def _persistent_buffers(model: Any) -> None:
    for module in model.modules():
        module._non_persistent_buffers_set.clear()  # XNNPACK lowering rejects non-persistent buffers


def _cycle(samples: Sequence[Mapping[str, np.ndarray]], name: str, batch: int) -> np.ndarray:
    """``batch`` rows of input ``name``, from the first samples (repeated if fewer)."""
    rows = [samples[i % len(samples)][name] for i in range(batch)]
    return np.ascontiguousarray(np.concatenate(rows))


class ExecutorchRunner:
    """The ``.pte`` programs (one per batch size) loaded by the ExecuTorch runtime."""

    def __init__(self, spec: Mapping[str, Any]) -> None:
        import torch
        from executorch.runtime import Runtime

        torch.set_num_threads(int(spec["threads"]))
        pool_notes = _set_threadpool(int(spec["threads"]))
        runtime = Runtime.get()
        self._methods = {int(b): runtime.load_program(Path(p)).load_method("forward") for b, p in spec["paths"].items()}
        self._order = list(spec["order"])
        self._keyed = spec.get("batch_input", self._order[0])  # the input whose length picks the program
        self.precision = spec["precision"]
        self.providers = ("executorch-xnnpack",)
        self.size_bytes = max(Path(p).stat().st_size for p in spec["paths"].values())
        self.notes = tuple(spec.get("notes", ())) + pool_notes
        self._cache: tuple[int, list[Any]] | None = None

    def _inputs(self, feeds: Mapping[str, np.ndarray]) -> list[Any]:
        import torch

        if self._cache is None or self._cache[0] != id(feeds):
            self._cache = (id(feeds), [torch.from_numpy(np.asarray(feeds[n])) for n in self._order])
        return self._cache[1]

    def _execute(self, feeds: Mapping[str, np.ndarray]) -> Sequence[Any]:
        return self._methods[len(feeds[self._keyed])].execute(self._inputs(feeds))

    def run(self, feeds: Mapping[str, np.ndarray]) -> RunTiming:
        inputs = self._inputs(feeds)
        method = self._methods[len(feeds[self._keyed])]
        start = time.perf_counter_ns()
        method.execute(inputs)
        e2e = time.perf_counter_ns() - start
        return RunTiming(e2e, ((MODEL_PART, "component", e2e),), {MODEL_PART: e2e})

    def outputs(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        return [np.array(o.numpy(), copy=True) for o in self._execute(feeds)]

    def profile(self, feeds: Mapping[str, np.ndarray], runs: int) -> list[Hotspots]:
        return []  # ExecuTorch's ETDump profiling needs a devtools build; not collected


def _set_threadpool(threads: int) -> tuple[str, ...]:
    """XNNPACK's thread pool size (ExecuTorch's pybindings size it to the cores by default)."""
    try:
        from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool
    except ImportError:
        return ("this ExecuTorch cannot resize its thread pool: XNNPACK used its default thread count",)
    _unsafe_reset_threadpool(threads)
    return ()
