"""Quantization recipes: what to do with one component, chosen from the ops in its graph.

A :class:`Recipe` says how one ONNX component is quantized: static QDQ INT8 for conv/linear
encoders and heads (the fastest on CPU: QUInt8 activations, QInt8 per-channel weights), dynamic
INT8 for recurrent and attention text encoders (their activations change range with every
sequence, so ranges are computed at run time), FP16 for GPUs, or FP32 (left alone).
:func:`choose_recipe` picks one from the op types and records why, so the report can say it.
Spectral front-ends (STFT/DFT, a DFT-as-convolution, power, mel, log) are kept FP32 whatever the
mode: a power spectrum spans many decades that 256 levels cannot hold.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mmedge.errors import QuantizationError

if TYPE_CHECKING:
    import onnx

__all__ = [
    "MODES",
    "Recipe",
    "auto_components",
    "choose_recipe",
    "frontend_nodes",
    "quantized_ops",
    "resolve_recipes",
    "shallow_convs",
]

MODES = ("static", "dynamic", "fp16", "fp32")
QUANT_TYPES = ("uint8", "int8")
RECURRENT_OPS = frozenset({"LSTM", "GRU", "RNN"})
ATTENTION_OPS = frozenset({"Attention", "MultiHeadAttention", "GroupQueryAttention"})
LINEAR_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
# Ops that only exist in graphs that were already quantized.
QUANTIZED_OPS = frozenset(
    {
        "QuantizeLinear",
        "DequantizeLinear",
        "DynamicQuantizeLinear",
        "MatMulInteger",
        "ConvInteger",
        "QLinearConv",
        "QLinearMatMul",
        "DynamicQuantizeLSTM",
        "DynamicQuantizeMatMul",
        "QGemm",
        "QAttention",
    }
)
SPECTRAL_OPS = frozenset({"STFT", "DFT", "MelWeightMatrix"})
# A Log of a squared value with at most this many linear ops upstream is the log of a power
# spectrogram (one or two DFT convs + mel matmul), not a log-probability at the end of a network.
FRONTEND_MAX_LINEAR = 3
# A static Conv whose dot products are shorter than this (C_in/groups · kH · kW) stays FP32:
# onnxruntime's FP32 conv has a kernel for few input channels, its INT8 conv has nothing to
# vectorise over, so a 1- or 3-channel first conv is faster kept FP32 (timings in
# benchmarks/NOTES.md). Depthwise convs have their own INT8 kernel and are quantized.
MIN_CONV_DEPTH = 32
# Statically quantized, these ops lose more than they gain: normalisation statistics and softmax
# probabilities need more than 256 levels (optimum excludes them for the same reason).
STATIC_SENSITIVE_OPS = ("LayerNormalization", "Softmax")


@dataclass(frozen=True)
class Recipe:
    """How one component is quantized."""

    mode: str = "static"  # one of MODES
    per_channel: bool = True  # per-output-channel weight scales (static Conv/Gemm/MatMul)
    reduce_range: bool = False  # 7-bit weights; only for CPUs whose INT8 kernels saturate (quantize.saturation)
    activation_type: str = "uint8"  # static activations: "uint8" (x86 U8S8 kernels) or "int8" (ARM, GPU)
    weight_type: str = "int8"
    exclude_nodes: tuple[str, ...] = ()  # node names kept in FP32
    exclude_op_types: tuple[str, ...] = ()  # op types kept in FP32
    op_types: tuple[str, ...] = ()  # quantize only these op types; empty: every type the mode quantizes
    activation_symmetric: bool = False  # static: activation ranges centred on zero (zero point 0 for int8)
    keep_frontend_fp32: bool = True  # find an STFT/DFT/mel/log front-end and keep it FP32
    min_conv_depth: int = MIN_CONV_DEPTH  # static: shallower (non-depthwise) Convs stay FP32; 0 quantizes all
    reason: str = ""  # why this recipe was chosen; written to the report

    def __post_init__(self) -> None:
        problems = []
        if self.mode not in MODES:
            problems.append(f"mode {self.mode!r} is not one of {MODES}")
        problems += [
            f"{attr} {getattr(self, attr)!r} is not one of {QUANT_TYPES}"
            for attr in ("activation_type", "weight_type")
            if getattr(self, attr) not in QUANT_TYPES
        ]
        if isinstance(self.op_types, str) or not all(isinstance(t, str) and t for t in self.op_types):
            problems.append(f"op_types {self.op_types!r} is not a tuple of op type names")
        if isinstance(self.min_conv_depth, bool) or not isinstance(self.min_conv_depth, int) or self.min_conv_depth < 0:
            problems.append(f"min_conv_depth {self.min_conv_depth!r} is not a non-negative int")
        if problems:
            raise QuantizationError("invalid Recipe: " + "; ".join(problems))

    @classmethod
    def for_mode(cls, mode: str, reason: str = "") -> Recipe:
        """The default recipe of ``mode`` (what ``recipe={"comp": "static"}`` means)."""
        if mode == "static":
            return cls("static", exclude_op_types=STATIC_SENSITIVE_OPS, reason=reason)
        # ORT's dynamic MatMulInteger kernels take per-tensor weight scales.
        return cls(mode, per_channel=False, reason=reason)

    @property
    def precision(self) -> str:
        """The bundle precision a component has after this recipe."""
        return {"static": "int8", "dynamic": "int8", "fp16": "fp16", "fp32": "fp32"}[self.mode]

    def record(self) -> dict[str, Any]:
        """The JSON form written to the manifest and the report."""
        return dataclasses.asdict(self)


def quantized_ops(model: onnx.ModelProto) -> list[str]:
    """Op types in ``model`` that only a quantized graph has (empty for an FP32 graph)."""
    return sorted({n.op_type for n in model.graph.node} & QUANTIZED_OPS)


def choose_recipe(model: onnx.ModelProto) -> Recipe:
    """The recipe for a graph, from its op types; ``reason`` says which rule matched.

    Rules, first match wins: recurrent ops → dynamic; attention without convolutions → dynamic;
    convolutions or linear layers with constant weights → static (not counting a spectral
    front-end or convs too shallow for INT8, which stay FP32); an embedding lookup alone →
    dynamic (stores the table as INT8); nothing to quantize → fp32.
    """
    ops = Counter(n.op_type for n in model.graph.node)
    constants = {i.name for i in model.graph.initializer} | _constant_outputs(model)
    front = frontend_nodes(model)
    kept = {*front, *shallow_convs(model, MIN_CONV_DEPTH)}  # what a static recipe leaves FP32 anyway
    weighted = sum(
        1
        for n in model.graph.node
        if n.op_type in LINEAR_OPS and _has_constant_input(n, constants) and n.name not in kept
    )
    recurrent = {op: ops[op] for op in RECURRENT_OPS if ops[op]}
    attention = sum(ops[op] for op in ATTENTION_OPS) + _activation_matmuls(model, constants)
    embeddings = sum(1 for n in model.graph.node if n.op_type == "Gather" and n.input[0] in constants)
    if recurrent:
        found = ", ".join(f"{op}×{k}" for op, k in sorted(recurrent.items()))
        recipe = Recipe.for_mode("dynamic", f"recurrent ops ({found}): dynamic INT8 weights, ranges computed per run")
    elif attention and ops["Softmax"] + sum(ops[op] for op in ATTENTION_OPS) and not ops["Conv"]:
        recipe = Recipe.for_mode("dynamic", f"attention ({attention} activation-by-activation products): dynamic INT8")
    elif weighted:
        recipe = Recipe.for_mode("static", f"{weighted} conv/linear layers with constant weights: static QDQ INT8")
    elif embeddings:
        recipe = Recipe.for_mode(
            "dynamic", f"{embeddings} embedding lookups only: dynamic INT8 stores the tables as INT8"
        )
    else:
        recipe = Recipe.for_mode(
            "fp32",
            "no conv, linear, recurrent or embedding weights worth quantizing (front-end and shallow convs "
            "stay FP32): kept FP32",
        )
    if front and recipe.mode != "fp32":
        recipe = dataclasses.replace(
            recipe, reason=f"{recipe.reason}; spectral front-end ({len(front)} nodes) kept FP32"
        )
    return recipe


def frontend_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes of a spectral front-end, which must stay FP32.

    Anchors are STFT/DFT/MelWeightMatrix nodes, and Log nodes of a power spectrum: a squaring
    (``Mul(x, x)`` or ``Pow``) and at most ``FRONTEND_MAX_LINEAR`` linear ops upstream (DFT convs
    and a mel matmul). The front-end is the anchors and every node they depend on. Unnamed nodes
    are skipped (name them first).
    """
    producers = {out: n for n in model.graph.node for out in n.output}
    anchors = [n for n in model.graph.node if n.op_type in SPECTRAL_OPS]
    for n in model.graph.node:
        if n.op_type == "Log":
            upstream = _ancestors(n, producers)
            squares = any(a.op_type == "Pow" or (a.op_type == "Mul" and a.input[0] == a.input[1]) for a in upstream)
            if squares and sum(1 for a in upstream if a.op_type in LINEAR_OPS) <= FRONTEND_MAX_LINEAR:
                anchors.append(n)
    region: dict[str, None] = {}
    for anchor in anchors:
        for node in (anchor, *_ancestors(anchor, producers)):
            if node.name:
                region[node.name] = None
    order = {n.name: i for i, n in enumerate(model.graph.node)}
    return sorted(region, key=order.__getitem__)


def shallow_convs(model: onnx.ModelProto, min_depth: int) -> dict[str, int]:
    """Conv node name -> its dot-product length (C_in/groups · kH · kW), for those below ``min_depth``.

    Depthwise convs (one input channel per group, several groups) are not listed: onnxruntime
    has a dedicated INT8 kernel for them. Convs with computed weights are skipped.
    """
    weights = {i.name: tuple(i.dims) for i in model.graph.initializer}
    found = {}
    for node in model.graph.node:
        shape = weights.get(node.input[1]) if node.op_type == "Conv" and len(node.input) > 1 else None
        if not shape or len(shape) < 3:
            continue
        groups = next((a.i for a in node.attribute if a.name == "group"), 1)
        depth = math.prod(shape[1:])
        if depth < min_depth and not (groups > 1 and shape[1] == 1):
            found[node.name] = depth
    return found


def resolve_recipes(
    recipe: str | Recipe | Mapping[str, str | Recipe],
    models: Mapping[str, onnx.ModelProto],
) -> dict[str, Recipe]:
    """One recipe per component from the ``recipe=`` argument of ``quantize_bundle``.

    ``"auto"`` picks per component; a mode name or a Recipe applies to every component; a
    mapping gives per-component choices ("auto", a mode, or a Recipe), others stay "auto".
    """
    if isinstance(recipe, Mapping):
        unknown = sorted(set(recipe) - set(models))
        if unknown:
            raise QuantizationError(
                f"recipe names unknown components {unknown}; the bundle has {sorted(models)}. "
                "Use component names from `mmedge inspect BUNDLE`."
            )
        return {name: _one(recipe.get(name, "auto"), model, name) for name, model in models.items()}
    return {name: _one(recipe, model, name) for name, model in models.items()}


def auto_components(recipe: str | Recipe | Mapping[str, str | Recipe], names: Iterable[str]) -> list[str]:
    """The components of ``names`` whose recipe ``resolve_recipes`` chooses itself ("auto")."""
    return [n for n in names if (recipe.get(n, "auto") if isinstance(recipe, Mapping) else recipe) == "auto"]


def _one(choice: str | Recipe, model: onnx.ModelProto, component: str) -> Recipe:
    if isinstance(choice, Recipe):
        recipe = choice if choice.reason else dataclasses.replace(choice, reason="given by the caller")
    elif choice == "auto":
        recipe = choose_recipe(model)
    elif choice in MODES:
        recipe = Recipe.for_mode(choice, f"{choice} requested for {component}")
    else:
        raise QuantizationError(
            f"recipe for {component!r} is {choice!r}; expected 'auto', one of {MODES}, or a mmedge.quantize.Recipe"
        )
    recurrent = sorted({n.op_type for n in model.graph.node} & RECURRENT_OPS)
    if recipe.mode == "fp16" and recurrent:
        # onnxruntime 1.32 has no FP16 kernels for them on CPU, and its full graph optimisation
        # of the converted graph (Casts around the LSTM) crashes the process at session creation.
        raise QuantizationError(
            f"fp16 is not supported for {component!r}: it has {', '.join(recurrent)}, which onnxruntime cannot "
            f"run in FP16. Give it another recipe, e.g. recipe={{{component!r}: 'dynamic'}} "
            f"(CLI: --recipe {component}=dynamic)"
        )
    return recipe


def _constant_outputs(model: onnx.ModelProto) -> set[str]:
    return {out for n in model.graph.node if n.op_type == "Constant" for out in n.output}


def _has_constant_input(node: onnx.NodeProto, constants: set[str]) -> bool:
    return any(name in constants for name in node.input[1:2])


def _activation_matmuls(model: onnx.ModelProto, constants: set[str]) -> int:
    """MatMuls whose both operands are computed (Q·Kᵀ and attention·V in a transformer)."""
    return sum(
        1
        for n in model.graph.node
        if n.op_type == "MatMul" and not any(i in constants for i in n.input) and len(n.input) == 2
    )


def _ancestors(node: onnx.NodeProto, producers: Mapping[str, onnx.NodeProto]) -> list[onnx.NodeProto]:
    """Every node ``node`` depends on, nearest first."""
    seen: dict[int, onnx.NodeProto] = {}
    stack = [producers[i] for i in node.input if i in producers]
    while stack:
        n = stack.pop()
        if id(n) in seen:
            continue
        seen[id(n)] = n
        stack.extend(producers[i] for i in n.input if i in producers)
    return list(seen.values())
