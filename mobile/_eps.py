"""Which nodes of a graph NNAPI, CoreML and XNNPACK would take, and what keeps the rest on the CPU.

Partitions are estimated by onnxruntime's mobile usability checker
(``mobile_helpers.usability_checker.check_partitioning``, a Python copy of the partitioning the
EPs use at session creation). It asks one object per EP whether each node is supported; that
object here is :class:`_OpTable`: the EP's operator table plus the caveat rules of
``_mobile_rules``. Every rejection keeps its reason and its fix, so the report can say what
blocks full offload and what to do about it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mmedge.mobile._ort import ort_tool
from mmedge.mobile._rules import CPU_FIX, DYNAMIC_FIX, RANK_FIX, RULES, GraphFacts, Miss, fix_for, key, tables

__all__ = ["EPS", "Blocker", "EPReport", "UnsupportedOp", "analyze", "blockers"]

EPS = ("NNAPI", "CoreML", "XNNPACK")


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
        return self.fix != CPU_FIX


class _OpTable:
    """One EP's supported ops and caveat rules, shaped as ORT's checker expects (``is_op_supported``)."""

    def __init__(self, ep: str, table: dict[str, str], graph: GraphFacts, level: str) -> None:
        self.ep, self.table, self.graph, self.level = ep, table, graph, level
        self.rules = RULES.get(ep, {})
        self.taken: set[tuple[str, ...]] = set()
        self.misses: dict[tuple[str, ...], tuple[str, Miss]] = {}
        self.seen: set[str] = set()

    def is_op_supported(self, node: Any) -> bool:
        op = f"{node.domain or 'ai.onnx'}:{node.op_type}"
        miss = self._miss(op, node)
        if miss is None:
            self.taken.add(key(node))
            self.seen.add(op)
            return True
        self.misses[key(node)] = (op, miss)
        return False

    def would_take(self, node: Any) -> bool:
        """Whether the node passes this EP's table and rules (without recording anything)."""
        return self._miss(f"{node.domain or 'ai.onnx'}:{node.op_type}", node) is None

    def _miss(self, op: str, node: Any) -> Miss | None:
        if op not in self.table:
            return Miss("no kernel for this op", fix_for(op, self.level, self.ep))
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
    facts, known = GraphFacts.of(graph), tables()
    reports = []
    for ep in eps:
        table = _OpTable(ep, known[ep], facts, level)
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
            add("dynamic shapes", DYNAMIC_FIX, r.ep, r.dynamic_shape_nodes, "inputs with dynamic shapes")
        if r.rank_limited_nodes:
            add("rank > 5", RANK_FIX, r.ep, r.rank_limited_nodes, "inputs with more than 5 dims")
    return tuple(
        Blocker(op=op, eps=tuple(eps), nodes=max(counts), reason="; ".join(reasons), fix=fix)
        for (op, fix), (eps, counts, reasons) in sorted(merged.items(), key=lambda kv: (kv[0][1] == CPU_FIX, kv[0][0]))
    )
