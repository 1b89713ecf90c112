"""The shortest waveform an audio encoder accepts, read from its ONNX graph before anything runs.

onnxruntime fails deep inside a run (and logs to stderr) when audio is shorter than what a
``Pad`` in reflect mode or a ``Conv``/pool kernel along time needs. This walks the graph once,
forward from the audio input, following the time axis through ops that keep it (elementwise
ops, Cast, Unsqueeze, Transpose, Split, MatMul on rows, reshapes that keep the last axis, Pad,
Conv, pools, STFT) and composing how each changes the length. Every Pad, Conv, pool and STFT on
that path is a requirement (reflect pads need more samples than they add; a kernel needs its
extent after padding; an STFT needs a frame); the minimum is the least length that meets all.

The walk stops at an op it cannot follow (a reshape that splits the time axis, say), so the
minimum is a lower bound: audio it refuses would fail in onnxruntime (or, below a pool's kernel, leave
an empty tensor), never the other way round.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmedge.bundle import RAW_INPUTS, AudioPreprocess, Bundle, InputSpec
from mmedge.graph import Graph

__all__ = ["MinimumLength", "input_minimum", "minimum_length", "too_short"]

Length = Callable[[int], int]
_MAX_SAMPLES = 2**31  # the search's upper end: no audio encoder needs more samples than this
_CONST_ELEMENTS = 4096  # constant-fold only small tensors (shapes, pads), never weights
_KEEP = frozenset(
    (  # noqa: SIM905 (op names read better as words)
        "Abs Add BatchNormalization Cast Ceil Clip Cos Div Dropout DequantizeLinear Elu Equal Erf Exp Floor "
        "Gelu Greater HardSigmoid HardSwish Identity InstanceNormalization LayerNormalization LeakyRelu Less "
        "Log LogSoftmax Max Mean Min Mish Mod Mul Neg Not Pow PRelu QuantizeLinear Reciprocal Relu Round Selu "
        "Sigmoid Sign Sin Softmax Softplus Softsign Sqrt Sub Sum Tanh Where"
    ).split()
)
_POOLS = frozenset({"MaxPool", "AveragePool", "LpPool"})
# ops folded when all their inputs are small constants: the shape and pad arithmetic exporters emit
_FOLDED = frozenset(
    (  # noqa: SIM905
        "Abs Add Cast Concat ConstantOfShape Div Equal Flatten Gather Identity Max Min Mul Neg Range Reshape "
        "Slice Squeeze Sub Transpose Unsqueeze Where"
    ).split()
)


@dataclass(frozen=True)
class MinimumLength:
    """The fewest samples an audio input needs, and the node that needs them."""

    samples: int
    reason: str  # e.g. "Conv node 'conv1' has a kernel of 400 samples along time (stride 160)"


@dataclass(frozen=True)
class _Track:
    rank: int
    axis: int  # the time axis, 0-based
    length: Length  # the time axis' length here as a function of the input's


@dataclass(frozen=True)
class _Need:
    length: Length
    need: int
    reason: str


def input_minimum(bundle: Bundle, graph: Graph, spec: InputSpec) -> MinimumLength | None:
    """The fewest samples the raw audio input ``spec`` needs over every component it feeds; None when
    its length is fixed (a wrong length is a shape error then) or no graph sets a minimum."""
    if isinstance(spec.shape[-1], int):
        return None
    found = [
        (component, minimum_length(bundle.component_path(component), edge.input))
        for component in graph.consumers(spec.name)
        for edge in graph.edges_into(component)
        if edge.source == RAW_INPUTS and edge.output == spec.name
    ]
    known = [(c, m) for c, m in found if m is not None]
    if not known:
        return None
    component, least = max(known, key=lambda cm: cm[1].samples)
    return MinimumLength(least.samples, f"{component}: {least.reason}")


def too_short(spec: InputSpec, tensor: np.ndarray, least: MinimumLength) -> list[str]:
    """A problem line if ``tensor`` has fewer samples along time than ``least``."""
    samples = tensor.shape[-1]
    if samples >= least.samples:
        return []
    pre = spec.preprocess if isinstance(spec.preprocess, AudioPreprocess) else None
    if pre is not None and pre.spectral:  # the time axis counts spectrogram frames
        rate, unit = pre.sample_rate / pre.hop_length, "frames"
    else:
        rate, unit = (pre.sample_rate if pre else None), "samples"
    at = (lambda n: f" ({n / rate:.4g} s at {rate:g} Hz)") if rate else (lambda _n: "")
    return [
        f"input {spec.name!r}: audio of {samples} {unit}{at(samples)} is too short: at least {least.samples} "
        f"{unit}{at(least.samples)} are needed ({least.reason}); pass longer audio or pad it with zeros"
    ]


def minimum_length(path: Path, input_name: str) -> MinimumLength | None:
    """The minimum along the last axis of ``input_name`` in the ONNX file ``path``; None if the
    graph sets none that this walk can see (or the file is not an ONNX protobuf, e.g. ``.ort``)."""
    import onnx
    from google.protobuf.message import DecodeError

    if path.suffix != ".onnx":
        return None
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (OSError, ValueError, DecodeError):
        return None
    return _Walk(model.graph).minimum(input_name)


class _Walk:
    def __init__(self, graph: Any) -> None:
        self.graph = graph
        self.initializers = {i.name: i for i in graph.initializer}
        self.producers = {out: node for node in graph.node for out in node.output}
        self.ranks = {
            v.name: len(v.type.tensor_type.shape.dim)
            for v in (*graph.input, *graph.value_info)
            if v.type.tensor_type.HasField("shape")
        } | {i.name: len(i.dims) for i in graph.initializer}
        self.constants: dict[str, np.ndarray | None] = {}
        self.tracks: dict[str, _Track] = {}
        self.needs: list[_Need] = []

    def minimum(self, input_name: str) -> MinimumLength | None:
        rank = self.ranks.get(input_name)
        if not rank:
            return None
        self.tracks[input_name] = _Track(rank, rank - 1, lambda n: n)
        for node in self.graph.node:
            tracked = next((self.tracks[i] for i in node.input if i in self.tracks), None)
            if tracked is not None and node.op_type != "Shape":
                self._follow(node, tracked)
        return _least(self.needs)

    # -- following the time axis ----------------------------------------------------------------

    def _follow(self, node: Any, t: _Track) -> None:
        op = node.op_type
        if op in _KEEP:
            rank = max([t.rank, *(self.ranks.get(i, 0) for i in node.input if i)])
            self._set(node.output[0], _Track(rank, t.axis + rank - t.rank, t.length))
        elif op in ("Unsqueeze", "Squeeze"):
            self._squeeze(node, t)
        elif op == "Transpose":
            perm = _attr(node, "perm", list(reversed(range(t.rank))))
            self._set(node.output[0], _Track(t.rank, list(perm).index(t.axis), t.length))
        elif op == "Split" and _attr(node, "axis", 0) % t.rank != t.axis:
            for out in node.output:
                self._set(out, t)
        elif op == "MatMul":
            self._matmul(node, t)
        elif op == "Reshape" and node.input[0] in self.tracks:
            self._reshape(node, t)
        elif op == "Pad" and node.input[0] in self.tracks:
            self._pad(node, t)
        elif (op == "Conv" or op in _POOLS) and node.input[0] in self.tracks:
            self._kernel(node, t)
        elif op == "STFT" and node.input[0] in self.tracks and t.axis == 1:
            self._stft(node, t)

    def _set(self, name: str, track: _Track) -> None:
        if name:
            self.tracks[name] = track

    def _squeeze(self, node: Any, t: _Track) -> None:
        axes = self._axes(node)
        if axes is None:
            return
        if node.op_type == "Unsqueeze":
            rank = t.rank + len(axes)
            inserted = sorted(a % rank for a in axes)
            axis = t.axis
            for a in inserted:
                axis += a <= axis
        else:
            gone = {a % t.rank for a in axes}
            if t.axis in gone:
                return
            rank, axis = t.rank - len(gone), t.axis - sum(a < t.axis for a in gone)
        self._set(node.output[0], _Track(rank, axis, t.length))

    def _matmul(self, node: Any, t: _Track) -> None:
        left = node.input[0] in self.tracks
        # rows of the left operand, or columns of the right one, pass through; the contracted axis does not
        if (left and t.axis == t.rank - 2) or (not left and t.axis == t.rank - 1):
            rank = max(t.rank, self.ranks.get(node.input[1 if left else 0], 0))
            self._set(node.output[0], _Track(rank, rank - (t.rank - t.axis), t.length))

    def _reshape(self, node: Any, t: _Track) -> None:
        """Follow a reshape that keeps the (last) time axis whole: a target ending in -1 or 0, or in
        the input's own time dim read with Shape → Gather."""
        if t.axis != t.rank - 1:
            return
        shape = self._const(node.input[1])
        if shape is not None:
            keeps = (-1,) if _attr(node, "allowzero", 0) else (-1, 0)  # 0 copies the input's dim unless allowzero
            if shape.ndim == 1 and shape.size and shape[-1] in keeps and list(shape).count(-1) <= 1:
                self._set(node.output[0], _Track(int(shape.size), int(shape.size) - 1, t.length))
            return
        concat = self.producers.get(node.input[1])
        if concat is None or concat.op_type != "Concat" or not self._is_time_dim(concat.input[-1]):
            return
        sizes = [self._size(i) for i in concat.input]
        if all(s is not None for s in sizes):
            rank = sum(sizes)  # type: ignore[arg-type]
            self._set(node.output[0], _Track(rank, rank - 1, t.length))

    def _pad(self, node: Any, t: _Track) -> None:
        pads = self._const(node.input[1]) if len(node.input) > 1 else np.array(_attr(node, "pads", []))
        axes = self._const(node.input[3]) if len(node.input) > 3 and node.input[3] else None
        if pads is None or (len(node.input) > 3 and node.input[3] and axes is None):
            return
        axes = [int(a) % t.rank for a in axes] if axes is not None else list(range(t.rank))
        if pads.size != 2 * len(axes):
            return
        if t.axis not in axes:
            self._set(node.output[0], t)
            return
        i = axes.index(t.axis)
        before, after = int(pads[i]), int(pads[i + len(axes)])
        mode = _attr(node, "mode", "constant")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        if mode == "reflect" and max(before, after) > 0:
            self.needs.append(
                _Need(
                    t.length,
                    max(before, after) + 1,
                    f"{_named(node)} reflects {max(before, after)} samples at an edge, "
                    f"which needs more than {max(before, after)} (a centred STFT pads n_fft // 2)",
                )
            )
        elif mode == "edge" and (before or after):
            self.needs.append(_Need(t.length, 1, f"{_named(node)} repeats an edge sample"))
        length = t.length
        self._set(node.output[0], _Track(t.rank, t.axis, lambda n: length(n) + before + after))

    def _kernel(self, node: Any, t: _Track) -> None:
        """A Conv or pool along time: a requirement, and the length after it."""
        spatial = t.axis - 2
        if node.op_type == "Conv":
            weight = self.initializers.get(self._weight_source(node.input[1]))
            kernel = list(weight.dims[2:]) if weight is not None else _attr(node, "kernel_shape", None)
        else:
            kernel = _attr(node, "kernel_shape", None)
        if spatial < 0 or not kernel or spatial >= len(kernel):
            return
        n = len(kernel)
        strides, dilations = _attr(node, "strides", [1] * n), _attr(node, "dilations", [1] * n)
        pads, auto = _attr(node, "pads", [0] * 2 * n), _attr(node, "auto_pad", "NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else auto
        stride, extent = int(strides[spatial]), int(dilations[spatial]) * (int(kernel[spatial]) - 1) + 1
        length = t.length
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            self._set(node.output[0], _Track(t.rank, t.axis, lambda x: -(-length(x) // stride)))
            return
        padded = 0 if auto == "VALID" else int(pads[spatial]) + int(pads[spatial + n])
        self.needs.append(
            _Need(
                lambda x: length(x) + padded,
                extent,
                f"{_named(node)} has a kernel of {kernel[spatial]} along time"
                + (f" (dilation {dilations[spatial]})" if extent != kernel[spatial] else "")
                + (f" after padding by {padded}" if padded else ""),
            )
        )
        rounding = math.ceil if _attr(node, "ceil_mode", 0) else math.floor
        self._set(
            node.output[0],
            _Track(t.rank, t.axis, lambda x: rounding((length(x) + padded - extent) / stride) + 1),
        )

    def _stft(self, node: Any, t: _Track) -> None:
        window = self._size(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        frame = self._const(node.input[3]) if len(node.input) > 3 and node.input[3] else None
        frame_length = int(frame.reshape(-1)[0]) if frame is not None else window
        if frame_length:
            self.needs.append(_Need(t.length, frame_length, f"{_named(node)} takes frames of {frame_length}"))

    # -- small constants ------------------------------------------------------------------------

    def _weight_source(self, name: str) -> str:
        """The initializer behind a weight: itself, or the INT8 tensor a DequantizeLinear reads."""
        node = self.producers.get(name)
        return node.input[0] if node is not None and node.op_type == "DequantizeLinear" else name

    def _axes(self, node: Any) -> list[int] | None:
        if len(node.input) > 1 and node.input[1]:
            axes = self._const(node.input[1])
            return None if axes is None else [int(a) for a in axes.reshape(-1)]
        axes = _attr(node, "axes", None)
        return None if axes is None else list(axes)

    def _is_time_dim(self, name: str) -> bool:
        """Whether ``name`` is a tracked tensor's time dim read as Shape → Gather (→ Unsqueeze/Cast)."""
        node = self.producers.get(name)
        while node is not None and node.op_type in ("Unsqueeze", "Cast", "Reshape", "Identity"):
            node = self.producers.get(node.input[0])
        if node is None or node.op_type != "Gather":
            return False
        shape, index = self.producers.get(node.input[0]), self._const(node.input[1])
        if shape is None or shape.op_type != "Shape" or index is None or index.size != 1:
            return False
        source = self.tracks.get(shape.input[0])
        return source is not None and int(index.reshape(-1)[0]) % source.rank == source.axis

    def _size(self, name: str) -> int | None:
        """The number of elements of a 1-D piece: a constant's size, or 1 for an unsqueezed scalar."""
        const = self._const(name)
        if const is not None:
            return int(const.size)
        node = self.producers.get(name)
        return 1 if node is not None and node.op_type == "Unsqueeze" and self._is_time_dim(name) else None

    def _const(self, name: str, depth: int = 0) -> np.ndarray | None:
        """The value of a small tensor computed from constants only (pads, shapes), else None."""
        if name in self.constants:
            return self.constants[name]
        self.constants[name] = None  # guards against cycles while computing
        self.constants[name] = value = self._compute(name, depth)
        return value

    def _compute(self, name: str, depth: int) -> np.ndarray | None:
        from onnx import numpy_helper

        if name in self.initializers:
            init = self.initializers[name]
            if math.prod(init.dims) > _CONST_ELEMENTS or init.data_location == init.EXTERNAL:
                return None
            return numpy_helper.to_array(init)
        node = self.producers.get(name)
        if node is None or depth > 32 or name in self.tracks:
            return None
        if node.op_type == "Constant":
            return _constant_node(node)
        if node.op_type not in _FOLDED:
            return None
        values = [self._const(i, depth + 1) if i else None for i in node.input]
        if any(v is None for v, i in zip(values, node.input, strict=True) if i):
            return None
        return _evaluate(node, name, values)


def _constant_node(node: Any) -> np.ndarray | None:
    from onnx import helper, numpy_helper

    for a in node.attribute:
        value = helper.get_attribute_value(a)
        if a.name == "value":
            return numpy_helper.to_array(value)
        if a.name in ("value_int", "value_ints", "value_float", "value_floats"):
            return np.array(value)
    return None


def _evaluate(node: Any, name: str, values: list[np.ndarray | None]) -> np.ndarray | None:
    """Run one node on constant inputs with onnx's reference evaluator (never one that would allocate much)."""
    from onnx.reference import ReferenceEvaluator

    if node.op_type == "ConstantOfShape" and math.prod(int(d) for d in values[0].reshape(-1)) > _CONST_ELEMENTS:
        return None
    if node.op_type == "Range" and abs(float((values[1] - values[0]) / values[2])) > _CONST_ELEMENTS:
        return None

    try:
        feeds = {i: v for i, v in zip(node.input, values, strict=True) if i}
        outputs = ReferenceEvaluator(node).run(None, feeds)
    # an op the reference evaluator lacks, or inputs it refuses: the value stays unknown
    except (NotImplementedError, RuntimeError, ValueError, TypeError, IndexError, KeyError):
        return None
    value = np.asarray(outputs[list(node.output).index(name)])
    return value if value.size <= _CONST_ELEMENTS else None


def _named(node: Any) -> str:
    return f"its {node.op_type} node {node.name!r}" if node.name else f"an unnamed {node.op_type} node"


def _attr(node: Any, name: str, default: Any) -> Any:
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _least(needs: list[_Need]) -> MinimumLength | None:
    """The least length meeting every requirement (each grows with the input's length)."""

    def ok(n: int) -> bool:
        return all(need.length(n) >= need.need for need in needs)

    if not needs or ok(1) or not ok(_MAX_SAMPLES):
        return None
    low, high = 1, _MAX_SAMPLES  # ok(high), not ok(low)
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if ok(mid) else (mid, high)
    binding = next(need for need in needs if need.length(high - 1) < need.need)
    return MinimumLength(high, binding.reason)
