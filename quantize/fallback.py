"""Accuracy-aware fallback: keep the most damaging quantized tensors in FP32, one per round.

One round: (1) find the component whose quantization alone (every other component FP32) costs
the most end-to-end agreement; (2) list its candidates — for a static (QDQ) component every
quantized activation, ranked with onnxruntime's ``qdq_loss_debug`` (the tensor before and after
its QuantizeLinear/DequantizeLinear pair, scored by noise relative to the tensor's typical
magnitude), and every quantized weight, ranked by its INT8 round trip; for dynamic/FP16
components every node with weights, largest first; (3) measure the top candidates, each kept
FP32 — for QDQ by rewiring the quantized graph (milliseconds), otherwise by re-quantizing;
(4) keep the best one if it helps: re-quantize the component with those nodes excluded, and
everything downstream (chained calibration), and measure again; a round that then does not raise
the whole chain's agreement (SQNR breaking ties) on the calibration samples is undone and ends
the rounds, since its FP32 nodes would cost size and speed for nothing. When no single candidate helps,
the top 2, 4, 8 of them are measured kept FP32 together (damage spread over many tensors, as
when two quantized branches are subtracted, moves no single one), the smallest best group kept.

Keeping a *tensor* FP32 means excluding its producer and all its consumers: excluding one node
is not enough in QDQ, since a neighbour that is still quantized puts the Q/DQ pair back on the
same tensor. Candidates are chosen on the calibration samples; the held-out samples are left
to measure the result, so the report's agreement is not tuned on itself.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from mmedge.errors import QuantizationError, translated
from mmedge.quantize._apply import StepError
from mmedge.quantize._chain import Chain, OutputResult
from mmedge.quantize._metrics import noise_ratio
from mmedge.quantize._surgery import dequantized_weights, without_quantization
from mmedge.quantize.calibration import SampleReader
from mmedge.quantize.recipes import Recipe
from mmedge.quantize.report import FallbackRound

__all__ = ["CANDIDATES_PER_ROUND", "Candidate", "candidates", "fallback_round", "keep_component_fp32"]

CANDIDATES_PER_ROUND = 8  # measured per round; ranking keeps the right one near the top
DEBUG_SAMPLES = 4  # calibration samples run through the QDQ debug graph (it outputs every tensor)
# Weighted ops quantize_dynamic rewrites (onnxruntime IntegerOpsRegistry; Gemm becomes MatMulInteger).
DYNAMIC_OPS = frozenset({"Conv", "MatMul", "Gemm", "LSTM", "Gather", "Attention", "EmbedLayerNormalization"})


@dataclass(frozen=True)
class Candidate:
    """Nodes to keep FP32 together: a tensor's producer and consumers, or one weighted node."""

    tensor: str  # "" for a node-level candidate or a group
    nodes: tuple[str, ...]
    rank: float  # higher = more suspicious (noise ratio, or weight size)
    group: tuple[Candidate, ...] = ()  # the candidates kept FP32 together, for a group


def fallback_round(chain: Chain, index: int, before: float) -> tuple[FallbackRound | None, str]:
    """Run one round; the round, or None and why no candidate could help."""
    components = [c for c in chain.recipes if _affects_outputs(chain, c)]
    if not components:
        return None, "no quantized component can be evaluated end to end"
    keys = {c: _key(chain.end_to_end(chain.only(c), chain.calibration)) for c in components}
    worst = min(components, key=keys.__getitem__)
    found = candidates(chain, worst)[:CANDIDATES_PER_ROUND]
    if not found:
        return None, f"{worst} has no quantized tensor or node left to keep FP32"
    best, best_key = _best(chain, worst, found, keys[worst])
    groups = _groups(found)
    if best is None:
        # Damage spread over many tensors (e.g. two quantized branches subtracted) moves no single
        # one: keep the most suspicious together (the group that helps most; the smaller of equals).
        best, best_key = _best(chain, worst, groups, keys[worst])
    if best is None:
        return None, (
            f"keeping any one of the {len(found)} most suspicious tensors of {worst} in FP32, or the top "
            f"{', '.join(str(len(g.group)) for g in groups)} of them together, did not improve agreement on "
            f"the calibration samples (isolated agreement {keys[worst][0]:.2%})"
        )
    what = _describe(best)
    why = f"fallback round {index}: keeping {what} FP32 raised {worst}'s isolated agreement {keys[worst][0]:.2%} → {best_key[0]:.2%}"
    chained = _key(chain.end_to_end(chain.versions, chain.calibration))
    kept = chain.kept.setdefault(worst, {})
    added = [n for n in best.nodes if n not in kept]
    kept.update(dict.fromkeys(best.nodes, why))
    chain.rebuild(worst)
    now = _key(chain.end_to_end(chain.versions, chain.calibration))
    if now <= chained:
        # Better alone, not in the chain once everything downstream re-calibrated: the FP32 nodes
        # would cost size and speed for nothing, so the round is undone.
        for n in added:
            del kept[n]
        chain.rebuild(worst)
        return None, (
            f"keeping {what} of {worst} FP32 raised its isolated agreement {keys[worst][0]:.2%} → {best_key[0]:.2%} "
            f"but not the whole chain's on the calibration samples ({chained[0]:.2%} → {now[0]:.2%} after "
            "re-calibrating downstream); undone"
        )
    after = chain.score(chain.versions)
    tensor = ", ".join(c.tensor for c in best.group if c.tensor) if best.group else best.tensor
    round_ = FallbackRound(index, worst, tensor, best.nodes, before, after, len(found), "calibration samples")
    return round_, why


def keep_component_fp32(chain: Chain, target: float) -> str | None:
    """The last resort when tensor rounds fall short of ``target``: whole components kept FP32.

    Greedily, the quantized component whose FP32 version lifts agreement on the calibration
    samples the most is reverted, until ``target`` is reached there; if it cannot be reached with
    some component still quantized, nothing changes. Reverted components are re-quantized as FP32
    with everything downstream re-calibrated. Returns what was kept FP32 and why, or None.
    Per-component precision is what makes this cheap: the other components stay INT8.
    """
    versions = dict(chain.versions)
    left = [c for c in chain.recipes if _affects_outputs(chain, c)]
    now = before = chain.score(versions, chain.calibration)
    reverted: list[str] = []
    while now < target and len(left) > 1:
        scores = {c: chain.score({**versions, c: chain.fp32[c]}, chain.calibration) for c in left}
        best = max(left, key=scores.__getitem__)
        if scores[best] <= now:
            return None
        versions[best], now = chain.fp32[best], scores[best]
        reverted.append(best)
        left.remove(best)
    if not reverted or now < target:
        return None
    why = (
        f"keeping {' and '.join(reverted)} FP32 lifts agreement on the calibration samples {before:.2%} → {now:.2%} "
        f"(INT8 missed min_agreement {target:.2%} after the fallback rounds)"
    )
    for c in reverted:
        recipe = chain.recipes[c]
        chain.recipes[c] = Recipe.for_mode(
            "fp32", f"{why}. Auto recipe was: {recipe.reason}. Lower min_agreement (or set its recipe) to keep it INT8"
        )
    chain.rebuild()  # downstream calibration must see their FP32 outputs now
    return why


def _best(
    chain: Chain, component: str, found: Sequence[Candidate], before: tuple[float, float]
) -> tuple[Candidate | None, tuple[float, float]]:
    """The candidate that most raises ``component``'s isolated score above ``before`` (first of equals)."""
    best, best_key, tried = None, before, []
    for cand in found:
        try:
            path = _candidate_file(chain, component, cand)
        except StepError:
            continue  # onnxruntime cannot quantize the graph with these nodes left out: not a candidate
        tried.append(path)
        key = _key(chain.end_to_end(chain.only(component, path), chain.calibration))
        if key > best_key:
            best, best_key = cand, key
    for path in tried:
        chain.discard(path)
    return best, best_key


def _groups(found: Sequence[Candidate]) -> list[Candidate]:
    """The top 2, 4, … most suspicious candidates, each group as one candidate (smallest first)."""
    sizes = [n for n in (2, 4, 8, 16) if n <= len(found)]
    return [
        Candidate("", tuple(dict.fromkeys(n for c in found[:k] for n in c.nodes)), 0.0, tuple(found[:k])) for k in sizes
    ]


def _describe(cand: Candidate) -> str:
    if cand.group:
        return f"the {len(cand.group)} most suspicious tensors ({', '.join(_describe(c) for c in cand.group)})"
    return f"tensor {cand.tensor!r}" if cand.tensor else f"node {cand.nodes[0]!r}"


def _candidate_file(chain: Chain, component: str, cand: Candidate) -> Path:
    """``component`` with ``cand``'s nodes out of quantization: a rewired copy of the QDQ graph
    for static recipes (milliseconds), a fresh quantization for the others (no calibration)."""
    if chain.recipes[component].mode != "static":
        return chain.build(component, extra=dict.fromkeys(cand.nodes, "fallback candidate"))[0]
    edited = without_quantization(onnx.load(str(chain.versions[component])), chain.model(component), cand.nodes)
    path = chain.new_path(component)
    onnx.save(edited, str(path))
    return path


def _affects_outputs(chain: Chain, component: str) -> bool:
    """Whether ``component`` is quantized and produces or feeds an evaluable model output."""
    if not chain.quantizes(component):
        return False
    reach = {component} | chain.graph.downstream(component)
    return any(o.component in reach for o in chain.evaluable())


def _key(results: Sequence[OutputResult]) -> tuple[float, float]:
    """Order of merit: discrete agreement first, then SQNR of the outputs to break ties."""
    discrete = [r.agreement for r in results if r.metric != "cosine"] or [r.agreement for r in results]
    sqnr = [min(r.comparison.sqnr_db, 200.0) for r in results]
    return float(np.mean(discrete)), float(np.mean(sqnr))


def candidates(chain: Chain, component: str) -> list[Candidate]:
    """What could be kept FP32 in ``component``, most suspicious first."""
    model = chain.model(component)
    done = set(chain.excluded.get(component, {}))
    if chain.recipes[component].mode == "static":
        return _tensor_candidates(chain, component, model, done)
    return _node_candidates(model, done, DYNAMIC_OPS if chain.recipes[component].mode == "dynamic" else None)


def _tensor_candidates(chain: Chain, component: str, model: onnx.ModelProto, done: set[str]) -> list[Candidate]:
    """Quantized activations (kept FP32: producer and consumers excluded) and quantized weights
    (kept FP32: the nodes reading them excluded), ranked by their quantization noise."""
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        create_activation_matching,
        modify_model_output_intermediate_tensors,
    )

    qdq = chain.versions[component]
    debug = chain.work / f"{component}.debug.onnx"
    feeds = chain.calibration.feeds(chain.versions, component)[:DEBUG_SAMPLES]
    with translated(QuantizationError, f"ranking the quantized tensors of {component!r} (qdq_loss_debug)"):
        modify_model_output_intermediate_tensors(str(qdq), str(debug))
        activations = create_activation_matching(collect_activations(str(debug), SampleReader(feeds)))
    weights = dequantized_weights(onnx.load(str(qdq)), model)
    debug.unlink(missing_ok=True)
    producers = {out: n.name for n in model.graph.node for out in n.output}
    consumers: dict[str, list[str]] = defaultdict(list)
    for n in model.graph.node:
        for i in n.input:
            consumers[i].append(n.name)

    def candidate(tensor: str, nodes: Sequence[str | None], noise: float) -> Candidate | None:
        kept = tuple(dict.fromkeys(n for n in nodes if n and n not in done))
        return Candidate(tensor, kept, noise) if kept else None

    found = [
        candidate(t, (producers.get(t), *consumers.get(t, ())), noise_ratio(pair["pre_qdq"], pair["post_qdq"]))
        for t, pair in activations.items()
    ] + [candidate(w, consumers.get(w, ()), noise_ratio([fp32], [int8])) for w, (fp32, int8) in weights.items()]
    unique: dict[frozenset[str], Candidate] = {}  # a weight and a tensor may name the same nodes: measure them once
    for c in sorted((c for c in found if c is not None), key=lambda c: -c.rank):
        unique.setdefault(frozenset(c.nodes), c)
    return list(unique.values())


def _node_candidates(model: onnx.ModelProto, done: set[str], ops: frozenset[str] | None) -> list[Candidate]:
    sizes = {i.name: int(np.prod(i.dims)) for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    found = [
        Candidate("", (n.name,), float(sum(sizes.get(i, 0) for i in n.input)))
        for n in model.graph.node
        if (ops is None or n.op_type in ops) and n.name not in done and any(i in sizes for i in n.input)
    ]
    return sorted(found, key=lambda c: -c.rank)
