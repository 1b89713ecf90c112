"""Edit a QDQ graph directly: read the weights back, or take nodes out of quantization.

A fallback round measures several "keep these nodes FP32" candidates. Re-running
``quantize_static`` for each costs seconds on a ResNet (onnxruntime quantizes per-channel
weights in Python); rewiring the already quantized graph costs milliseconds. The chosen
candidate is then rebuilt properly with ``nodes_to_exclude``, and measured again.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnx
from onnx import numpy_helper

__all__ = ["dequantized_weights", "without_quantization"]

QUANT_SUFFIX = "_quantized"  # onnxruntime's name for a quantized initializer


def dequantized_weights(qdq: onnx.ModelProto, fp32: onnx.ModelProto) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Weight name -> (FP32 values, values after INT8 round trip) for every quantized initializer."""
    inits = {i.name: i for i in qdq.graph.initializer}
    originals = {i.name: i for i in fp32.graph.initializer}
    pairs = {}
    for node in qdq.graph.node:
        name = node.input[0]
        if node.op_type != "DequantizeLinear" or name not in inits or not name.endswith(QUANT_SUFFIX):
            continue
        original = originals.get(name.removesuffix(QUANT_SUFFIX))
        if original is None:
            continue
        q = numpy_helper.to_array(inits[name]).astype(np.float64)
        scale = numpy_helper.to_array(inits[node.input[1]]).astype(np.float64)
        zero = (
            numpy_helper.to_array(inits[node.input[2]]).astype(np.float64)
            if len(node.input) > 2
            else np.zeros_like(scale)
        )
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        if scale.ndim == 1 and scale.size > 1:  # per channel: broadcast along the axis
            shape = [1] * q.ndim
            shape[axis] = scale.size
            scale, zero = scale.reshape(shape), zero.reshape(shape)
        pairs[original.name] = (numpy_helper.to_array(original), (q - zero) * scale)
    return pairs


def without_quantization(qdq: onnx.ModelProto, fp32: onnx.ModelProto, nodes: Iterable[str]) -> onnx.ModelProto:
    """A copy of ``qdq`` in which ``nodes`` read FP32 inputs, as ``nodes_to_exclude`` would give.

    Each input such a node takes from a DequantizeLinear is rewired to the float tensor before
    its QuantizeLinear, or to the FP32 initializer for a quantized weight; Q/DQ nodes nobody
    reads any more are dropped. onnxruntime's QDQ quantizer removes a Relu or Clip whose clipping
    the quantized range already does, leaving its output name on the tensor *before* it; such an
    activation is re-applied in float, else the node would read negative values a ReLU removed.
    """
    model = onnx.ModelProto()
    model.CopyFrom(qdq)
    graph = model.graph
    producers = {out: n for n in graph.node for out in n.output}
    inits = {i.name for i in graph.initializer}
    originals = {i.name: i for i in fp32.graph.initializer}
    fp32_producers = {out: n for n in fp32.graph.node for out in n.output}
    chosen = set(nodes)
    before: dict[str, list[onnx.NodeProto]] = {}  # consumer name -> re-applied activations to insert before it
    for node in graph.node:
        if node.name not in chosen:
            continue
        for k, name in enumerate(node.input):
            dq = producers.get(name)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            source = dq.input[0]
            original = originals.get(source.removesuffix(QUANT_SUFFIX))
            if source in inits and original is not None:
                node.input[k] = _float_initializer(graph, original, set(producers))
            elif source in producers and producers[source].op_type == "QuantizeLinear":
                tensor = producers[source].input[0]
                node.input[k] = _float_activation(
                    graph,
                    tensor,
                    fp32_producers=fp32_producers,
                    producers=producers,
                    originals=originals,
                    before=before,
                    consumer=node,
                )
    if before:
        ordered = [n for old in graph.node for n in (*before.get(old.name, ()), old)]
        del graph.node[:]
        graph.node.extend(ordered)
    _drop_dead(graph)
    return model


REMOVABLE_ACTIVATIONS = ("Relu", "Clip")  # what onnxruntime's QDQ quantizer folds into the quantized range


def _float_activation(
    graph: onnx.GraphProto,
    tensor: str,
    *,
    fp32_producers: dict[str, onnx.NodeProto],
    producers: dict[str, onnx.NodeProto],
    originals: dict[str, onnx.TensorProto],
    before: dict[str, list[onnx.NodeProto]],
    consumer: onnx.NodeProto,
) -> str:
    """``tensor`` as the FP32 graph computes it: the removed activation re-applied when there was one."""
    activation = fp32_producers.get(tensor)
    made = producers.get(tensor)
    if activation is None or activation.op_type not in REMOVABLE_ACTIVATIONS:
        return tensor
    if made is not None and made.op_type == activation.op_type:
        return tensor  # the activation is still there
    name = f"{tensor}_fp32_{activation.op_type.lower()}"
    if name not in producers:
        node = onnx.NodeProto()
        node.CopyFrom(activation)
        node.name = f"{activation.name}_fp32"
        node.input[0] = tensor
        node.output[:] = [name]
        for k in range(1, len(node.input)):  # Clip's min/max
            if node.input[k] in originals:
                node.input[k] = _float_initializer(graph, originals[node.input[k]], set(producers))
        producers[name] = node
        before.setdefault(consumer.name, []).append(node)
    return name


def _float_initializer(graph: onnx.GraphProto, original: onnx.TensorProto, outputs: set[str]) -> str:
    """The name under which ``graph`` holds the FP32 ``original``, adding it if needed (renamed
    when a DequantizeLinear already writes a tensor of that name)."""
    name = original.name if original.name not in outputs else f"{original.name}_fp32"
    if not any(i.name == name for i in graph.initializer):
        copy = graph.initializer.add()
        copy.CopyFrom(original)
        copy.name = name
    return name


def _drop_dead(graph: onnx.GraphProto) -> None:
    """Remove Q/DQ nodes whose outputs nothing reads, then unused initializers."""
    outputs = {o.name for o in graph.output}
    while True:
        read = {i for n in graph.node for i in n.input} | outputs
        dead = [
            n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear") and not set(n.output) & read
        ]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    read = {i for n in graph.node for i in n.input}
    for init in [i for i in graph.initializer if i.name not in read]:
        graph.initializer.remove(init)
