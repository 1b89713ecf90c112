"""Transformer graph fusion of one ONNX component, and the inputs that check and time it.

Two fusers, because each recognises the attention of one exporter (measured with torch 2.11,
onnxruntime 1.32, onnxscript 0.7 on a transformers BertModel):

* ``onnxscript``: onnxscript's ``ort_fusions`` rewriter. It matches the graphs the dynamo
  exporter writes (scaled_dot_product_attention decomposed) and fuses them into ORT's
  ``Attention``/``MultiHeadAttention``, ``SkipLayerNormalization`` and ``BiasGelu``.
* ``ort``: onnxruntime's ``transformers.optimizer`` (what optimum's ORTOptimizer runs). It
  matches TorchScript-exported attention (``Attention``, ``EmbedLayerNormalization``, ...) but
  fuses only LayerNorm/GELU in dynamo graphs. Its model type comes from optimum's
  ``ORTConfigManager`` when a Hugging Face model type is named.

The fused graph is checked against the unfused one on two input shapes (batch and sequence
both changed), so a fusion that fixes a dynamic dimension or changes numerics is caught.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmedge.bundle import Component, InputSpec, Manifest, TextPreprocess
from mmedge.errors import ExportError, translated

__all__ = [
    "FUSED_OPS",
    "FUSERS",
    "differences",
    "fuse",
    "id_bounds",
    "input_feeds",
    "is_transformer",
    "ort_model_type",
]

FUSERS = ("onnxscript", "ort")
# The contrib ops a fusion produces; counted to say what a fuser did.
FUSED_OPS = frozenset(
    {
        "Attention",
        "MultiHeadAttention",
        "EmbedLayerNormalization",
        "SkipLayerNormalization",
        "BiasGelu",
        "FastGelu",
        "Gelu",
        "LayerNormalization",
        "SkipSimplifiedLayerNormalization",
    }
)
_ATTENTION_OPS = frozenset({"Attention", "MultiHeadAttention", "GroupQueryAttention"})


def is_transformer(model: Any) -> bool:
    """A graph with self-attention: a Softmax and a MatMul of two computed tensors (Q·Kᵀ), or a fused attention op."""
    constants = {i.name for i in model.graph.initializer}
    constants |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    ops = {n.op_type for n in model.graph.node}
    if ops & _ATTENTION_OPS:
        return True
    products = any(n.op_type == "MatMul" and not set(n.input) & constants for n in model.graph.node)
    return "Softmax" in ops and products


def ort_model_type(model_type: str) -> str:
    """onnxruntime's optimizer family ("bert", "clip", "vit", ...) for a Hugging Face model type, via optimum."""
    try:
        from optimum.onnxruntime.utils import ORTConfigManager
    except ImportError as e:
        raise ExportError("model_type needs optimum: pip install 'mmedge[hf]'") from e
    with translated(ExportError, f"optimum knows no onnxruntime fusion for model type {model_type!r}"):
        return ORTConfigManager.get_model_ort_type(model_type)


def fuse(fuser: str, source: Path, target: Path, model_type: str) -> dict[str, int]:
    """Write ``source`` fused by ``fuser`` to ``target``; returns the fused ops it contains, by type."""
    import onnx

    if fuser == "onnxscript":
        import onnx_ir as ir
        from onnxscript.rewriter.ort_fusions import optimize_for_ort

        with translated(ExportError, f"onnxscript's transformer fusion failed on {source.name}"):
            fused, _stats = optimize_for_ort(ir.load(str(source)))
            ir.save(fused, str(target))
    elif fuser == "ort":
        from onnxruntime.transformers.optimizer import optimize_model

        with translated(ExportError, f"onnxruntime's transformer optimizer failed on {source.name}"):
            # num_heads/hidden_size 0: read from the graph; opt_level 0: only the Python fusions,
            # the session applies ORT's own graph optimisations at load time as for any component.
            optimized = optimize_model(str(source), model_type=model_type, num_heads=0, hidden_size=0, opt_level=0)
            optimized.save_model_to_file(str(target))
    else:
        raise ExportError(f"fuser must be one of {FUSERS}, found {fuser!r}")
    counts = Counter(n.op_type for n in onnx.load(str(target), load_external_data=False).graph.node)
    return {op: k for op, k in sorted(counts.items()) if op in FUSED_OPS}


def id_bounds(path: Path, component: Component) -> dict[str, int]:
    """Per integer input, the rows of the smallest embedding table it indexes directly (ids must be below)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    tables = {i.name: int(i.dims[0]) for i in model.graph.initializer if len(i.dims) == 2}
    bounds = {}
    for tensor in component.inputs:
        rows = [
            tables[n.input[0]]
            for n in model.graph.node
            if n.op_type == "Gather" and n.input[1] == tensor.name and n.input[0] in tables
        ]
        if rows:
            bounds[tensor.name] = min(rows)
    return bounds


def input_feeds(
    manifest: Manifest, component: Component, bounds: Mapping[str, int], *, batch: int, length: int, seed: int
) -> dict[str, np.ndarray]:
    """Valid inputs for an encoder fed by raw inputs: ids below ``bounds``, masks from random lengths.

    ``batch`` sizes the "batch" dims, ``length`` the "seq" dims; other symbolic dims take the
    export example's size. Integer inputs that index no embedding table get ids 0 and 1.
    """
    rng = np.random.default_rng(seed)
    raw = {i.name: i for i in manifest.inputs}
    masks = {
        i.preprocess.mask_input
        for i in manifest.inputs
        if isinstance(i.preprocess, TextPreprocess) and i.preprocess.mask_input
    }
    lengths = rng.integers(1, length + 1, size=batch)
    lengths[0] = length  # one full row, so every position is exercised
    feeds = {}
    for tensor in component.inputs:
        spec = raw.get(tensor.name)
        if spec is None:
            raise ExportError(f"{component.name}: input {tensor.name!r} is not a raw input; only encoders are fused")
        shape = _shape(spec, batch, length)
        if tensor.name in masks:
            feeds[tensor.name] = (np.arange(length)[None, :] < lengths[:, None]).astype(spec.dtype)
        elif np.dtype(spec.dtype).kind in "iu":
            feeds[tensor.name] = rng.integers(0, bounds.get(tensor.name, 2), size=shape).astype(spec.dtype)
        else:
            feeds[tensor.name] = rng.standard_normal(shape).astype(spec.dtype)
    return feeds


def _shape(spec: InputSpec, batch: int, length: int) -> tuple[int, ...]:
    dims = []
    for axis, dim in enumerate(spec.shape):
        if isinstance(dim, int):
            dims.append(dim)
        elif dim == "batch":
            dims.append(batch)
        elif dim == "seq":
            dims.append(length)
        else:
            dims.append(spec.example_shape[axis])
    return tuple(dims)


def differences(reference: Sequence[np.ndarray], got: Sequence[np.ndarray], atol: float) -> tuple[float, float]:
    """The largest absolute difference over all outputs, and the largest ``|d| / (|reference| + atol)``."""
    pairs = [(r.astype(np.float64), g.astype(np.float64)) for r, g in zip(reference, got, strict=True)]
    absolute = max(float(np.max(np.abs(r - g))) for r, g in pairs)
    relative = max(float(np.max(np.abs(r - g) / (np.abs(r) + atol))) for r, g in pairs)
    return absolute, relative
