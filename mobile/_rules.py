"""What each mobile EP can run: operator tables, the caveats checked per node, and the fixes.

NNAPI's and CoreML's tables are ORT's own ``*_supported_ops.md`` (what its usability checker
reads); XNNPACK ships none, so its table is here, taken from
``onnxruntime/core/providers/xnnpack/detail/node_support_checker.cc``. The caveat rules decide
the common cases ORT's checker leaves unchecked (2-D only convolutions and pools, constant
weights, constant padding, Q/DQ groups); each rejection carries its reason and its fix.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from mmedge.mobile._ort import ort_tool

__all__ = ["AUDIO_FIX", "CPU_FIX", "DYNAMIC_FIX", "RANK_FIX", "RULES", "GraphFacts", "Miss", "fix_for", "key", "tables"]

AUDIO_FIX = (
    "re-export with `mmedge export --audio-frontend conv` (the STFT becomes convolutions with fixed DFT "
    "weights), or compute the mel spectrogram in preprocessing"
)
_OP_FIXES = {
    **dict.fromkeys(("STFT", "DFT", "MelWeightMatrix", "HannWindow", "HammingWindow", "BlackmanWindow"), AUDIO_FIX),
    **dict.fromkeys(
        ("LSTM", "GRU", "RNN", "DynamicQuantizeLSTM"),
        "mobile EPs have no recurrent kernels, so this layer runs on the CPU EP; for full offload use a "
        "convolutional or transformer text encoder",
    ),
}
CPU_FIX = "none needed for correctness: the node runs on the CPU EP and the graph is split around it"
RANK_FIX = "express the op over a 4-D tensor [N, C, 1, L] in the model (e.g. Conv2d with kernel (1, k))"
_CONST_FIX = "make the weights constant initializers (export with constant folding)"
# A weight computed from activations (attention's Q·Kᵀ and scores·V multiply two activations):
# constant folding cannot make it a constant.
_ACTIVATION_FIX = (
    "none: the input is computed from the model's inputs (e.g. attention's activation-by-activation "
    "products), so the node runs on the CPU EP"
)
_MISSING_FIX = (
    "none needed for correctness: the EP wants the input (a Gemm's bias C) inside the node; without it "
    "the node runs on the CPU EP"
)
_CONTRIB_FIX = "package with --optimization basic: ORT fusions at '{level}' replace ONNX ops by com.microsoft ones"
_PAD_FIX = "pad in preprocessing, or with a constant in the model (for the mel front-end: pad_mode='constant')"
_QDQ_COREML_FIX = "CoreML has no Q/DQ kernels: for iOS, package the FP32 bundle"
DYNAMIC_FIX = "fix the dims: --fixed-shapes NAME=N (or --target android / ios, which fix every dim)"

# XNNPACK EP (onnxruntime/core/providers/xnnpack/detail/node_support_checker.cc): ONNX-domain ops
# it has NHWC kernels for, plus Relu/Clip fused into a preceding Conv/MaxPool/AveragePool and the
# Q/DQ nodes of a quantized Conv/ConvTranspose/MaxPool/AveragePool/Softmax group.
_XNNPACK_QDQ_TARGETS = ("Conv", "ConvTranspose", "MaxPool", "AveragePool", "Softmax")
_XNNPACK_TABLE = {
    "ai.onnx:AveragePool": "Only 2D pooling.",
    "ai.onnx:Clip": "Only fused into a preceding Conv/MaxPool/AveragePool; min/max constant.",
    "ai.onnx:Conv": "Only 2D; weights and bias constant; C, H, W known.",
    "ai.onnx:ConvTranspose": "Only 2D; weights and bias constant.",
    "ai.onnx:DequantizeLinear": "Only as part of a QDQ Conv/ConvTranspose/MaxPool/AveragePool/Softmax.",
    "ai.onnx:Gemm": "float; alpha = beta = 1; B and C constant; A of rank <= 2.",
    "ai.onnx:MatMul": "float; B constant, of rank <= 2.",
    "ai.onnx:MaxPool": "Only 2D pooling.",
    "ai.onnx:QLinearConv": "Only 2D; int8/uint8.",
    "ai.onnx:QuantizeLinear": "Only as part of a QDQ Conv/ConvTranspose/MaxPool/AveragePool/Softmax.",
    "ai.onnx:Relu": "Only fused into a preceding Conv/MaxPool/AveragePool.",
    "ai.onnx:Resize": "Only 2D (4-D input).",
    "ai.onnx:Softmax": "",
}


@dataclass(frozen=True)
class GraphFacts:
    """What the EP rules need to know about one ONNX graph: value ranks and dims, constants, who feeds whom."""

    ranks: dict[str, int]
    dims: dict[str, tuple[int | None, ...]]
    constants: frozenset[str]
    producer: dict[str, Any]
    consumers: dict[str, list[Any]]

    @classmethod
    def of(cls, graph: Any) -> GraphFacts:
        values = [*graph.input, *graph.value_info, *graph.output]
        shapes = {
            v.name: tuple(d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim)
            for v in values
            if v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape")
        }
        shapes.update({i.name: tuple(i.dims) for i in graph.initializer})
        producer = {o: n for n in graph.node for o in n.output}
        consumers: dict[str, list[Any]] = {}
        for n in graph.node:
            for i in n.input:
                consumers.setdefault(i, []).append(n)
        initializers = {i.name for i in graph.initializer}
        # A DequantizeLinear of constants is a constant to the EPs: they take the QDQ group as a unit.
        dequantized = {
            n.output[0]
            for n in graph.node
            if n.op_type == "DequantizeLinear" and all(i in initializers for i in n.input if i)
        }
        return cls(
            ranks={k: len(v) for k, v in shapes.items()},
            dims=shapes,
            constants=frozenset(initializers | dequantized),
            producer=producer,
            consumers=consumers,
        )

    def foldable(self, name: str) -> bool:
        """Whether ``name`` is computed from constants alone (constant folding would make it one)."""
        seen: set[str] = set()
        todo = [name]
        while todo:
            value = todo.pop()
            if value in seen or value in self.constants or not value:
                continue
            seen.add(value)
            node = self.producer.get(value)
            if node is None:  # a graph input
                return False
            todo.extend(node.input)
        return True


class Taker(Protocol):
    """What a rule may ask of the EP table checking it (``_mobile_eps._OpTable``)."""

    taken: set[tuple[str, ...]]

    def would_take(self, node: Any) -> bool: ...


def key(node: Any) -> tuple[str, ...]:
    """A node's identity: its output names (unique in an ONNX graph, unlike its optional name)."""
    return tuple(node.output)


@dataclass(frozen=True)
class Miss:
    reason: str
    fix: str


Rule = Callable[[Any, GraphFacts, Taker], Miss | None]


def _rank(allowed: Sequence[int], what: str) -> Rule:
    def rule(node: Any, g: GraphFacts, _: Taker) -> Miss | None:
        rank = g.ranks.get(node.input[0])
        if rank is None:
            return Miss("input rank unknown (no shape information)", DYNAMIC_FIX)
        if rank not in allowed:
            return Miss(f"only {what} is supported; the input has rank {rank}", RANK_FIX)
        return None

    return rule


def _constant(*indices: int, required: bool = False) -> Rule:
    def rule(node: Any, g: GraphFacts, _: Taker) -> Miss | None:
        for i in indices:
            name = node.input[i] if i < len(node.input) else ""
            if (name or required) and name not in g.constants:
                if not name:
                    return Miss(f"input {i} must be present and constant", _MISSING_FIX)
                fix = _CONST_FIX if g.foldable(name) else _ACTIVATION_FIX
                return Miss(f"input {i} must be a constant (an initializer, or a DequantizeLinear of one)", fix)
        return None

    return rule


def _known_chw(node: Any, g: GraphFacts, _: Taker) -> Miss | None:
    if None in g.dims.get(node.input[0], (None,))[1:]:
        return Miss("channels, height and width of the input must be known", DYNAMIC_FIX)
    return None


def _unit_gemm(node: Any, g: GraphFacts, _: Taker) -> Miss | None:
    attrs = {a.name: a for a in node.attribute}
    if any(name in attrs and attrs[name].f != 1.0 for name in ("alpha", "beta")):
        return Miss("only alpha = beta = 1 is supported", CPU_FIX)
    if g.ranks.get(node.input[0], 3) > 2:
        return Miss("input A must have rank <= 2", CPU_FIX)
    return None


def _small_b(node: Any, g: GraphFacts, _: Taker) -> Miss | None:
    if g.ranks.get(node.input[1], 3) > 2:
        return Miss("input B must have rank <= 2", CPU_FIX)
    return None


def _fused_activation(node: Any, g: GraphFacts, table: Taker) -> Miss | None:
    producer = g.producer.get(node.input[0])
    if (
        producer is None
        or producer.op_type not in ("Conv", "MaxPool", "AveragePool")
        or key(producer) not in table.taken
    ):
        return Miss("only fused into a preceding Conv/MaxPool/AveragePool that XNNPACK takes", CPU_FIX)
    return None


def _qdq_member(node: Any, g: GraphFacts, table: Taker) -> Miss | None:
    """A Q/DQ node goes with the quantized op it belongs to, if XNNPACK takes that op."""
    if node.op_type == "DequantizeLinear":
        targets = g.consumers.get(node.output[0], [])
        taken = all(table.would_take(t) for t in targets)
    else:
        producer = g.producer.get(node.input[0])
        targets = [producer] if producer is not None else []
        taken = all(key(t) in table.taken for t in targets)
    if not targets or not taken or any(t.op_type not in _XNNPACK_QDQ_TARGETS for t in targets):
        return Miss("Q/DQ nodes are only taken inside a quantized Conv/Pool/Softmax group it takes", CPU_FIX)
    return None


def _float_only(node: Any, g: GraphFacts, _: Taker) -> Miss | None:
    producer = g.producer.get(node.input[0])
    if producer is not None and producer.op_type == "DequantizeLinear":
        return Miss("quantized (QDQ) Gemm/MatMul is not supported, only float", CPU_FIX)
    return None


def _constant_pad(node: Any, g: GraphFacts, table: Taker) -> Miss | None:
    mode = next((a.s.decode() for a in node.attribute if a.name == "mode"), "constant")
    if mode != "constant":
        return Miss(f"only constant padding is supported, not {mode!r}", _PAD_FIX)
    return _constant(1, 2)(node, g, table)


_POOLS = ("AveragePool", "MaxPool", "GlobalAveragePool", "GlobalMaxPool", "QLinearAveragePool")
RULES: dict[str, dict[str, tuple[Rule, ...]]] = {
    "NNAPI": {
        "Conv": (_rank((4,), "2-D Conv"), _constant(1, 2)),
        "QLinearConv": (_rank((4,), "2-D Conv"), _constant(3, 8)),
        "Resize": (_rank((4,), "2-D Resize"),),
        "Pad": (_constant_pad,),
        **dict.fromkeys(_POOLS, (_rank((4,), "2-D pooling"),)),
    },
    "CoreML": {
        "Conv": (_rank((3, 4), "1-D/2-D Conv"), _constant(2)),
        "Gemm": (_constant(1),),
        "Slice": (_constant(1, 2, 3, 4),),
        **dict.fromkeys(_POOLS, (_rank((4,), "2-D pooling"),)),
    },
    "XNNPACK": {
        "Conv": (_rank((4,), "2-D Conv"), _known_chw, _constant(1, 2)),
        "ConvTranspose": (_rank((4,), "2-D ConvTranspose"), _constant(1, 2)),
        "QLinearConv": (_rank((4,), "2-D Conv"),),
        "MaxPool": (_rank((4,), "2-D pooling"),),
        "AveragePool": (_rank((4,), "2-D pooling"),),
        "Resize": (_rank((4,), "2-D Resize"),),
        "Gemm": (_float_only, _unit_gemm, _constant(1), _constant(2, required=True)),
        "MatMul": (_float_only, _constant(1), _small_b),
        "Relu": (_fused_activation,),
        "Clip": (_fused_activation, _constant(1, 2)),
        "DequantizeLinear": (_qdq_member,),
        "QuantizeLinear": (_qdq_member,),
    },
}


def _ort_table(filename: str) -> dict[str, str]:
    """``{"domain:Op": note}`` from one of ORT's ``*_supported_ops.md`` files (its checker's format)."""
    path = Path(ort_tool("mobile_helpers.usability_checker").__file__).parent / filename
    table = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        cells = line.strip().split("|")
        if line.startswith("|") and len(cells) == 4 and ":" in cells[1]:
            table[cells[1]] = cells[2].replace("<br/>", " ")
    return table


def fix_for(op: str, level: str, ep: str) -> str:
    domain, _, name = op.partition(":")
    if name in _OP_FIXES:
        return _OP_FIXES[name]
    if ep == "CoreML" and name in ("QuantizeLinear", "DequantizeLinear"):
        return _QDQ_COREML_FIX
    if domain == "com.microsoft" and level != "basic":
        return _CONTRIB_FIX.format(level=level)
    return CPU_FIX


def tables() -> dict[str, dict[str, str]]:
    return {
        "NNAPI": _ort_table("nnapi_supported_ops.md"),
        "CoreML": _ort_table("coreml_supported_mlprogram_ops.md"),
        "XNNPACK": _XNNPACK_TABLE,
    }
