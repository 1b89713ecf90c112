"""Which nodes of a graph NNAPI, CoreML and XNNPACK would take, and what keeps the rest on the CPU.

Partitions are estimated by onnxruntime's mobile usability checker
(``mobile_helpers.usability_checker.check_partitioning``, a Python copy of the partitioning the
EPs use at session creation). It asks one object per EP whether each node is supported; that
object here is :class:`_OpTable`: the EP's operator table (ORT's own ``*_supported_ops.md`` for
NNAPI and CoreML; for XNNPACK, which ships none, the table below, taken from its
``node_support_checker.cc``) plus the caveats that decide the common cases and that ORT's checker
leaves unchecked (2-D only convolutions and pools, constant weights). Every rejection keeps its
reason and its fix, so the report can say what blocks full offload and what to do about it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmedge.runtime._mobile_ort import ort_tool

__all__ = ["EPS", "Blocker", "EPReport", "UnsupportedOp", "analyze", "blockers"]

EPS = ("NNAPI", "CoreML", "XNNPACK")

AUDIO_FIX = (
    "re-export with `mmedge export --audio-frontend conv` (the STFT becomes a Conv1d with fixed DFT "
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
_CPU_FIX = "none needed for correctness: the node runs on the CPU EP and the graph is split around it"
_RANK_FIX = "express the op over a 4-D tensor [N, C, 1, L] in the model (e.g. Conv2d with kernel (1, k))"
_CONST_FIX = "make the weights constant initializers (export with constant folding)"
_CONTRIB_FIX = "package with --optimization basic: ORT fusions at '{level}' replace ONNX ops by com.microsoft ones"
_PAD_FIX = "pad in preprocessing, or with a constant in the model (for the mel front-end: pad_mode='constant')"
_QDQ_COREML_FIX = "CoreML has no Q/DQ kernels: for iOS, package the FP32 bundle"
_DYNAMIC_FIX = "fix the dims: --fixed-shapes NAME=N (or --target android / ios, which fix every dim)"

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
class UnsupportedOp:
    """Nodes of one op an EP does not take, and why."""

    op: str  # "domain:OpType"
    nodes: int
    reason: str
    fix: str


@dataclass(frozen=True)
class EPReport:
    """How much of one component one EP would run."""

    ep: str
    supported_nodes: int
    total_nodes: int
    partitions: int
    partition_sizes: tuple[int, ...]
    suitability: str  # ORT's estimate of whether the EP pays off: "yes", "maybe", "no"
    unsupported: tuple[UnsupportedOp, ...]
    dynamic_shape_nodes: int  # nodes refused only because an input has a dynamic shape
    rank_limited_nodes: int  # nodes refused because an input has more dims than the EP handles
    caveats: tuple[str, ...]  # ORT's notes on supported ops that this check could not verify

    @property
    def fully_supported(self) -> bool:
        return self.supported_nodes == self.total_nodes and self.partitions <= 1


@dataclass(frozen=True)
class Blocker:
    """One reason a component cannot be fully offloaded to some EPs, with the fix."""

    op: str  # "domain:OpType", or "dynamic shapes"
    eps: tuple[str, ...]
    nodes: int
    reason: str
    fix: str

    @property
    def actionable(self) -> bool:
        """False when the CPU EP simply runs these nodes: nothing to fix, only offload lost."""
        return self.fix != _CPU_FIX


# ---------------------------------------------------------------------------------------------
# graph facts the caveat rules need


@dataclass(frozen=True)
class _Graph:
    ranks: dict[str, int]
    dims: dict[str, tuple[int | None, ...]]
    constants: frozenset[str]
    producer: dict[str, Any]
    consumers: dict[str, list[Any]]

    @classmethod
    def of(cls, graph: Any) -> _Graph:
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


def _key(node: Any) -> tuple[str, ...]:
    """A node's identity: its output names (unique in an ONNX graph, unlike its optional name)."""
    return tuple(node.output)


@dataclass(frozen=True)
class _Miss:
    reason: str
    fix: str


Rule = Callable[[Any, _Graph, "_OpTable"], _Miss | None]


def _rank(allowed: Sequence[int], what: str) -> Rule:
    def rule(node: Any, g: _Graph, _: _OpTable) -> _Miss | None:
        rank = g.ranks.get(node.input[0])
        if rank is None:
            return _Miss("input rank unknown (no shape information)", _DYNAMIC_FIX)
        if rank not in allowed:
            return _Miss(f"only {what} is supported; the input has rank {rank}", _RANK_FIX)
        return None

    return rule


def _constant(*indices: int, required: bool = False) -> Rule:
    def rule(node: Any, g: _Graph, _: _OpTable) -> _Miss | None:
        for i in indices:
            name = node.input[i] if i < len(node.input) else ""
            if (name or required) and name not in g.constants:
                return _Miss(f"input {i} must be a constant (an initializer, or a DequantizeLinear of one)", _CONST_FIX)
        return None

    return rule


def _known_chw(node: Any, g: _Graph, _: _OpTable) -> _Miss | None:
    if None in g.dims.get(node.input[0], (None,))[1:]:
        return _Miss("channels, height and width of the input must be known", _DYNAMIC_FIX)
    return None


def _unit_gemm(node: Any, g: _Graph, _: _OpTable) -> _Miss | None:
    attrs = {a.name: a for a in node.attribute}
    if any(name in attrs and attrs[name].f != 1.0 for name in ("alpha", "beta")):
        return _Miss("only alpha = beta = 1 is supported", _CPU_FIX)
    if g.ranks.get(node.input[0], 3) > 2:
        return _Miss("input A must have rank <= 2", _CPU_FIX)
    return None


def _small_b(node: Any, g: _Graph, _: _OpTable) -> _Miss | None:
    if g.ranks.get(node.input[1], 3) > 2:
        return _Miss("input B must have rank <= 2", _CPU_FIX)
    return None


def _fused_activation(node: Any, g: _Graph, table: _OpTable) -> _Miss | None:
    producer = g.producer.get(node.input[0])
    if (
        producer is None
        or producer.op_type not in ("Conv", "MaxPool", "AveragePool")
        or _key(producer) not in table.taken
    ):
        return _Miss("only fused into a preceding Conv/MaxPool/AveragePool that XNNPACK takes", _CPU_FIX)
    return None


def _qdq_member(node: Any, g: _Graph, table: _OpTable) -> _Miss | None:
    """A Q/DQ node goes with the quantized op it belongs to, if XNNPACK takes that op."""
    if node.op_type == "DequantizeLinear":
        targets = g.consumers.get(node.output[0], [])
        taken = all(table.would_take(t) for t in targets)
    else:
        producer = g.producer.get(node.input[0])
        targets = [producer] if producer is not None else []
        taken = all(_key(t) in table.taken for t in targets)
    if not targets or not taken or any(t.op_type not in _XNNPACK_QDQ_TARGETS for t in targets):
        return _Miss("Q/DQ nodes are only taken inside a quantized Conv/Pool/Softmax group it takes", _CPU_FIX)
    return None


def _float_only(node: Any, g: _Graph, _: _OpTable) -> _Miss | None:
    producer = g.producer.get(node.input[0])
    if producer is not None and producer.op_type == "DequantizeLinear":
        return _Miss("quantized (QDQ) Gemm/MatMul is not supported, only float", _CPU_FIX)
    return None


def _constant_pad(node: Any, g: _Graph, table: _OpTable) -> _Miss | None:
    mode = next((a.s.decode() for a in node.attribute if a.name == "mode"), "constant")
    if mode != "constant":
        return _Miss(f"only constant padding is supported, not {mode!r}", _PAD_FIX)
    return _constant(1, 2)(node, g, table)


_POOLS = ("AveragePool", "MaxPool", "GlobalAveragePool", "GlobalMaxPool", "QLinearAveragePool")
_RULES: dict[str, dict[str, tuple[Rule, ...]]] = {
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


class _OpTable:
    """One EP's supported ops and caveat rules, shaped as ORT's checker expects (``is_op_supported``)."""

    def __init__(self, ep: str, table: dict[str, str], graph: _Graph, level: str) -> None:
        self.ep, self.table, self.graph, self.level = ep, table, graph, level
        self.rules = _RULES.get(ep, {})
        self.taken: set[tuple[str, ...]] = set()
        self.misses: dict[tuple[str, ...], tuple[str, _Miss]] = {}
        self.seen: set[str] = set()

    def is_op_supported(self, node: Any) -> bool:
        op = f"{node.domain or 'ai.onnx'}:{node.op_type}"
        miss = self._miss(op, node)
        if miss is None:
            self.taken.add(_key(node))
            self.seen.add(op)
            return True
        self.misses[_key(node)] = (op, miss)
        return False

    def would_take(self, node: Any) -> bool:
        """Whether the node passes this EP's table and rules (without recording anything)."""
        return self._miss(f"{node.domain or 'ai.onnx'}:{node.op_type}", node) is None

    def _miss(self, op: str, node: Any) -> _Miss | None:
        if op not in self.table:
            return _Miss("no kernel for this op", _fix_for(op, self.level, self.ep))
        for rule in self.rules.get(node.op_type, ()) if not node.domain else ():
            miss = rule(node, self.graph, self)
            if miss is not None:
                return miss
        return None

    def get_caveats(self) -> list[str]:
        return [f"{op}: {self.table[op]}" for op in sorted(self.seen) if self.table[op]]

    def unsupported(self) -> tuple[UnsupportedOp, ...]:
        grouped: dict[tuple[str, str, str], int] = {}
        for op, miss in self.misses.values():
            key = (op, miss.reason, miss.fix)
            grouped[key] = grouped.get(key, 0) + 1
        return tuple(UnsupportedOp(op, n, reason, fix) for (op, reason, fix), n in sorted(grouped.items()))


def _fix_for(op: str, level: str, ep: str) -> str:
    domain, _, name = op.partition(":")
    if name in _OP_FIXES:
        return _OP_FIXES[name]
    if ep == "CoreML" and name in ("QuantizeLinear", "DequantizeLinear"):
        return _QDQ_COREML_FIX
    if domain == "com.microsoft" and level != "basic":
        return _CONTRIB_FIX.format(level=level)
    return _CPU_FIX


def _tables() -> dict[str, dict[str, str]]:
    return {
        "NNAPI": _ort_table("nnapi_supported_ops.md"),
        "CoreML": _ort_table("coreml_supported_mlprogram_ops.md"),
        "XNNPACK": _XNNPACK_TABLE,
    }


def _with_shapes(optimized: Any, fixed: Any) -> Any:
    """``optimized`` with inferred value shapes.

    ONNX shape inference does not know ORT's contrib ops (FusedConv, ...), so shapes stop at the
    first one. ORT's fusions keep the names of the values they produce, so the shapes inferred on
    the unoptimised graph (plain ONNX) fill in whatever the optimised graph's inference misses.
    """
    import onnx

    inferred = onnx.shape_inference.infer_shapes(optimized)
    graph = inferred.graph
    known = {v.name for v in (*graph.value_info, *graph.input, *graph.output)}
    produced = {o for n in graph.node for o in n.output}
    before = onnx.shape_inference.infer_shapes(fixed).graph.value_info
    graph.value_info.extend(v for v in before if v.name in produced and v.name not in known)
    if not graph.value_info:  # every node output is a graph output: those carry the shapes
        graph.value_info.extend(graph.output)
    # ORT's checker looks up absent optional inputs (named "") as values and would count their
    # nodes as having dynamic inputs; declare "" a fixed scalar.
    graph.value_info.append(onnx.helper.make_tensor_value_info("", onnx.TensorProto.FLOAT, []))
    return inferred


def analyze(optimized: Any, fixed: Any, eps: Sequence[str], level: str) -> tuple[EPReport, ...]:
    """Partition estimates for each EP in ``eps`` of ``optimized`` (the ``.ort`` graph as ONNX),
    with ``fixed`` (the graph before optimisation) as a second source of value shapes."""
    checker = ort_tool("mobile_helpers.usability_checker")
    graph = _with_shapes(optimized, fixed).graph
    facts, tables = _Graph.of(graph), _tables()
    reports = []
    for ep in eps:
        table = _OpTable(ep, tables[ep], facts, level)
        # XNNPACK handles dynamic shapes; NNAPI needs static ones and CoreML runs far better with them.
        info = checker.check_partitioning(graph, table, ep != "XNNPACK", 5 if ep == "CoreML" else 999)
        reports.append(_report(ep, info, table))
    return tuple(reports)


def _report(ep: str, info: Any, table: _OpTable) -> EPReport:
    # ORT's estimate weighs partitions against device copies; XNNPACK runs on the CPU and has none.
    suitability = "n/a" if ep == "XNNPACK" else info.suitability().name.lower() if info.num_nodes else "yes"
    return EPReport(
        ep=ep,
        supported_nodes=info.num_supported_nodes,
        total_nodes=info.num_nodes,
        partitions=info.num_partitions,
        partition_sizes=tuple(len(group) for group in info.supported_groups),
        suitability=suitability,
        unsupported=table.unsupported(),
        dynamic_shape_nodes=info.nodes_unsupported_due_to_dynamic_input,
        rank_limited_nodes=info.num_unsupported_nodes_due_to_rank,
        caveats=tuple(table.get_caveats()),
    )


def blockers(reports: Sequence[EPReport]) -> tuple[Blocker, ...]:
    """What keeps the component from running wholly on each EP, merged across EPs, with fixes.

    Blockers with a fix to apply come first; those the CPU EP simply absorbs come last.
    """
    merged: dict[tuple[str, str], tuple[list[str], list[int], list[str]]] = {}

    def add(op: str, fix: str, ep: str, nodes: int, reason: str) -> None:
        eps, counts, reasons = merged.setdefault((op, fix), ([], [], []))
        eps.append(ep)
        counts.append(nodes)
        reasons.append(f"{ep}: {reason}")

    for r in reports:
        for u in r.unsupported:
            add(u.op, u.fix, r.ep, u.nodes, u.reason)
        if r.dynamic_shape_nodes:
            add("dynamic shapes", _DYNAMIC_FIX, r.ep, r.dynamic_shape_nodes, "inputs with dynamic shapes")
        if r.rank_limited_nodes:
            add("rank > 5", _RANK_FIX, r.ep, r.rank_limited_nodes, "inputs with more than 5 dims")
    return tuple(
        Blocker(op=op, eps=tuple(eps), nodes=max(counts), reason="; ".join(reasons), fix=fix)
        for (op, fix), (eps, counts, reasons) in sorted(merged.items(), key=lambda kv: (kv[0][1] == _CPU_FIX, kv[0][0]))
    )
