"""Graph hygiene after export: IO as declared, dynamic axes kept and named, checker, shape inference.

Runs on every exported file before it is verified numerically. A graph whose declared dynamic
axis became a fixed number fails here already (it is the dynamo exporter's known silent failure
on recurrent layers), so the caller can try the other exporter.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["GraphError", "finalize"]

OPTIMIZATIONS = ("constant_folding", "onnx_shape_inference")


class GraphError(Exception):
    """An exported graph is unusable; the message says why (internal: the exporter loop catches it)."""


def _io_problems(kind: str, values: Sequence[Any], names: Sequence[str]) -> list[str]:
    found = [v.name for v in values]
    if found != list(names):
        return [f"graph {kind}s are {found}, expected {list(names)} (the exporter dropped or renamed some)"]
    return []


def _rename_dims(values: Sequence[Any], axes: Mapping[str, Mapping[int, str]]) -> tuple[dict[str, str], list[str]]:
    """Name the declared dynamic axes of graph IO; report declared dynamic axes the graph fixed."""
    renamed: dict[str, str] = {}
    fixed: list[str] = []
    for value in values:
        dims = value.type.tensor_type.shape.dim
        for axis, symbol in axes.get(value.name, {}).items():
            if axis >= len(dims):
                fixed.append(f"{value.name!r} has rank {len(dims)}, but axis {axis} ({symbol!r}) was declared")
                continue
            dim = dims[axis]
            if dim.HasField("dim_value"):
                fixed.append(f"{value.name!r} axis {axis} ({symbol!r}) was fixed to {dim.dim_value} by the exporter")
                continue
            if dim.dim_param and dim.dim_param != symbol:
                renamed.setdefault(dim.dim_param, symbol)
            dim.dim_param = symbol
    return renamed, fixed


def _apply_renames(graph: Any, renamed: Mapping[str, str]) -> None:
    """Use the declared symbol names inside the graph too, so value_info agrees with the IO."""
    for value in (*graph.input, *graph.output, *graph.value_info):
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_param") and dim.dim_param in renamed:
                dim.dim_param = renamed[dim.dim_param]


def finalize(
    path: Path,
    input_names: Sequence[str],
    output_names: Sequence[str],
    axes: Mapping[str, Mapping[int, str]],
    external_data: bool,
) -> tuple[str, ...]:
    """Check and tidy the ONNX file at ``path`` in place; returns the optimizations it carries."""
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    problems = _io_problems("input", graph.input, input_names)
    problems += _io_problems("output", graph.output, output_names)
    if problems:
        raise GraphError("; ".join(problems))
    renamed_in, fixed_in = _rename_dims(graph.input, axes)
    renamed_out, fixed_out = _rename_dims(graph.output, axes)
    if fixed_in or fixed_out:
        raise GraphError("dynamic dimension lost: " + "; ".join(fixed_in + fixed_out))
    _apply_renames(graph, {**renamed_out, **renamed_in})
    try:
        if external_data:
            data = path.with_name(f"{path.name}.data")
            data.unlink(missing_ok=True)  # the exporter's copy: onnx would append to it, not replace it
            onnx.save_model(model, str(path), save_as_external_data=True, location=data.name, size_threshold=0)
            onnx.checker.check_model(str(path), full_check=True)
            return (*OPTIMIZATIONS[:1], "external_data")
        onnx.checker.check_model(model, full_check=True)
        inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise GraphError(f"the ONNX checker rejected the graph: {str(e).strip().splitlines()[0]}") from e
    onnx.save(inferred, str(path))
    return OPTIMIZATIONS
