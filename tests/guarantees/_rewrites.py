"""Deliberately broken graph rewrites: the bugs optimisers and quantizers have shipped."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper


def fix_batch_inside(model: onnx.ModelProto, tensor: str, rank: int, batch: int = 2) -> onnx.ModelProto:
    """Reshape ``tensor`` to a constant batch right after it is produced (its IO stays symbolic).

    This is what a rewrite does when it folds a shape computed on the example input into a constant.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    fixed = f"{tensor}_fixed"
    shape = numpy_helper.from_array(np.array([batch] + [-1] + [0] * (rank - 2), np.int64), f"{tensor}_shape")
    g.initializer.append(shape)
    for node in g.node:
        node.input[:] = [fixed if i == tensor else i for i in node.input]
    for o in g.output:
        if o.name == tensor:
            raise ValueError("rewrite an intermediate tensor, not a graph output")
    producer = next(i for i, n in enumerate(g.node) if tensor in n.output)
    g.node.insert(producer + 1, helper.make_node("Reshape", [tensor, shape.name], [fixed]))
    return out


def fix_input_dim(model: onnx.ModelProto, name: str, axis: int, size: int) -> onnx.ModelProto:
    """Set ``dim_value`` on a symbolic graph input dim, as a shape-fixing tool does."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    dim = next(i for i in out.graph.input if i.name == name).type.tensor_type.shape.dim[axis]
    dim.Clear()
    dim.dim_value = size
    return out


def keep_rows(model: onnx.ModelProto, tensor: str, rows: int = 2) -> onnx.ModelProto:
    """Slice ``tensor`` to its first ``rows`` batch rows: shape inference cannot see the batch is now fixed."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    sliced = f"{tensor}_rows"
    consts = [
        numpy_helper.from_array(np.array([v], np.int64), f"{tensor}_{k}") for k, v in (("s", 0), ("e", rows), ("a", 0))
    ]
    g.initializer.extend(consts)
    for node in g.node:
        node.input[:] = [sliced if i == tensor else i for i in node.input]
    producer = next((i + 1 for i, n in enumerate(g.node) if tensor in n.output), 0)  # 0: a graph input
    g.node.insert(producer, helper.make_node("Slice", [tensor, *(c.name for c in consts)], [sliced]))
    return out
