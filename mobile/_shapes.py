"""Which dynamic dims a mobile bundle fixes, to what size, and how that is written into the graphs.

NNAPI and CoreML want static shapes. Sizes come, per named dim of the manifest, from (in order of
precedence) the user's ``fixed_shapes``, the preprocessing length the runtime pads to (text
``max_length``, audio ``sample_rate * max_seconds``, image ``size``), the input's
``example_shape``, and ``batch = 1``. Preprocessing lengths come before example shapes so the
mobile bundle sees exactly the tensors the source bundle sees for strings and files. Only dims
the user can choose are settable: those of raw inputs and of component inputs no other component
feeds; a component's other dims follow from them and are propagated through the wiring.

A bundle with a decoder keeps its ``batch`` dim dynamic: beam search grows and reorders it, and in
greedy decoding finished captions leave it, so no fixed size could serve a generation loop.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mmedge.bundle import (
    AudioPreprocess,
    Dim,
    ImagePreprocess,
    InputSpec,
    Manifest,
    TensorSpec,
    TextPreprocess,
    is_batch_symbol,
)
from mmedge.errors import BundleError, InputError
from mmedge.graph import Graph
from mmedge.mobile._ort import ort_tool

__all__ = [
    "DimPlan",
    "concrete",
    "feeding_patterns",
    "fix_inputs",
    "fix_outputs",
    "graph_io",
    "parse_fixed_shapes",
    "plan_dims",
]

OPTION = "fixed_shapes (--fixed-shapes)"


@dataclass(frozen=True)
class DimPlan:
    """Sizes for the manifest's named dims."""

    fixed: Mapping[str, int]  # baked into the mobile graphs
    probe: Mapping[str, int]  # a size for every settable dim (fixed ones included): the verification run
    origin: Mapping[str, str] = field(default_factory=dict)  # where each fixed size came from

    def pattern(self, shape: Sequence[Dim]) -> tuple[Dim, ...]:
        """``shape`` with its fixed named dims replaced by their sizes."""
        return tuple(self.fixed.get(d, d) if isinstance(d, str) else d for d in shape)


def parse_fixed_shapes(text: str) -> dict[str, int]:
    """``"batch=1,seq=16"`` → ``{"batch": 1, "seq": 16}``; InputError naming the option if malformed."""
    out: dict[str, int] = {}
    for item in (part.strip() for part in text.split(",")):
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip().lstrip("-").isdigit():
            raise InputError(
                f"{OPTION}: cannot read {item!r}; write dim-name=size pairs separated by commas, e.g. batch=1,seq=16"
            )
        if name.strip() in out:
            raise InputError(f"{OPTION}: dim {name.strip()!r} is given twice")
        out[name.strip()] = int(value)
    return out


GENERATION_AXIS = "batch"  # GenerationSpec: the one axis of every decoder state tensor the search reorders


def plan_dims(manifest: Manifest, overrides: Mapping[str, int] | None, *, fix_all: bool) -> DimPlan:
    """Sizes for every settable dim; with ``fix_all`` every one of them is fixed, else only ``overrides``."""
    overrides = dict(overrides or {})
    settable = _settable_dims(manifest)
    _check_overrides(manifest, overrides, settable)
    dynamic = {GENERATION_AXIS} if manifest.generation is not None else set()
    if dynamic & set(overrides):
        raise InputError(
            f"{OPTION}: dim {GENERATION_AXIS!r} must stay dynamic in a bundle with a decoder (beam search grows "
            "and reorders it, finished captions leave it); leave it out"
        )
    defaults, origin = _defaults(manifest, set(overrides))
    probe = {**defaults, **overrides}
    missing = sorted(settable - set(probe))
    if fix_all and missing:
        where = "; ".join(f"{name!r} ({settable_where})" for name, settable_where in _where(manifest, missing).items())
        raise InputError(
            f"{OPTION}: no size for dim(s) {where}: no preprocessing length or example shape gives one. "
            f"Pass them, e.g. --fixed-shapes {missing[0]}=N"
        )
    probe.update(dict.fromkeys(missing, 1))  # verification only: these dims stay dynamic
    fixed = {name: size for name, size in probe.items() if name not in dynamic} if fix_all else overrides
    origin = {name: ("fixed_shapes" if name in overrides else origin[name]) for name in fixed}
    return DimPlan(fixed=dict(sorted(fixed.items())), probe=dict(sorted(probe.items())), origin=origin)


def _settable_dims(m: Manifest) -> set[str]:
    names = {d for i in m.inputs for d in i.shape if isinstance(d, str)}
    graph = Graph(m)
    for c in m.components:
        unfed = graph.unfed(c.name)
        names |= {d for t in c.inputs if t.name in unfed for d in t.shape if isinstance(d, str)}
    return names


def _check_overrides(m: Manifest, overrides: Mapping[str, int], settable: set[str]) -> None:
    derived = {d for c in m.components for t in (*c.inputs, *c.outputs) for d in t.shape if isinstance(d, str)}
    problems = []
    for name, size in overrides.items():
        if name not in settable:
            kind = "is computed by the model from the input sizes" if name in derived else "is not a dim of this bundle"
            problems.append(f"dim {name!r} {kind}; settable dims are: {', '.join(sorted(settable)) or 'none'}")
        elif not isinstance(size, int) or isinstance(size, bool) or size <= 0:
            problems.append(f"dim {name!r} must be a positive integer size, found {size!r}")
    if problems:
        raise InputError(f"{OPTION}: " + "; ".join(problems))


def _defaults(m: Manifest, overridden: set[str]) -> tuple[dict[str, int], dict[str, str]]:
    """Default sizes of raw-input dims, and where each came from; conflicting defaults are errors."""
    found: dict[str, dict[int, list[str]]] = {}
    for spec in m.inputs:
        for axis, (size, source) in _axis_defaults(spec).items():
            name = spec.shape[axis]
            if isinstance(name, str):
                found.setdefault(name, {}).setdefault(size, []).append(source)
    for name, by_size in found.items():  # what the runtime feeds beats an export's example: a mask derived
        fed = {size: src for size, src in by_size.items() if any(not s.endswith(_EXAMPLE) for s in src)}
        if len(fed) == 1:  # from a text of max_length 77 was exported at the example's 32 tokens
            found[name] = fed
    conflicts = [
        f"{name!r}: " + ", ".join(f"{size} ({' and '.join(src)})" for size, src in sizes.items())
        for name, sizes in found.items()
        if len(sizes) > 1 and name not in overridden
    ]
    if conflicts:
        raise InputError(
            f"{OPTION}: dims get different default sizes from different inputs: {'; '.join(conflicts)}. "
            "Choose one, e.g. --fixed-shapes NAME=N"
        )
    sizes = {name: next(iter(by_size)) for name, by_size in found.items()}
    return sizes, {name: next(iter(by_size.values()))[0] for name, by_size in found.items()}


_EXAMPLE = "example_shape"


def _axis_defaults(spec: InputSpec) -> dict[int, tuple[int, str]]:
    rank = len(spec.shape)
    out: dict[int, tuple[int, str]] = {}
    if len(spec.example_shape) == rank:
        out.update({a: (int(s), f"{spec.name} {_EXAMPLE}") for a, s in enumerate(spec.example_shape)})
    pre, why = spec.preprocess, f"{spec.name} preprocessing"
    if isinstance(pre, TextPreprocess) and rank == 2:
        out[1] = (pre.max_length, why)
    elif isinstance(pre, AudioPreprocess) and rank >= 1:
        padded = f"{why} (max_seconds: clips are padded to it here; the source bundle keeps each clip's length)"
        length = pre.frames(round(pre.sample_rate * pre.max_seconds))
        out[rank - 1] = (length, padded if spec.keeps_length else why)
    elif isinstance(pre, ImagePreprocess) and rank == 4:
        h_axis = 2 if pre.layout == "NCHW" else 1
        out[h_axis], out[h_axis + 1] = (pre.size[0], why), (pre.size[1], why)
    if rank and is_batch_symbol(spec.shape[0]):
        out[0] = (1, f"{spec.shape[0]} = 1")
    return out


def _where(m: Manifest, names: Sequence[str]) -> dict[str, str]:
    tensors = [(f"input {i.name!r}", i.shape) for i in m.inputs] + [
        (f"{c.name}.{t.name}", t.shape) for c in m.components for t in c.inputs
    ]
    return {n: next(what for what, shape in tensors if n in shape) for n in names}


def concrete(shape: Sequence[Dim], sizes: Mapping[str, int], what: str) -> tuple[int, ...]:
    """``shape`` with every named dim replaced from ``sizes``."""
    missing = [d for d in shape if isinstance(d, str) and d not in sizes]
    if missing:
        raise BundleError(f"{what}: no size for dim(s) {missing}; pass them with --fixed-shapes NAME=N")
    return tuple(sizes[d] if isinstance(d, str) else d for d in shape)


# ---------------------------------------------------------------------------------------------
# writing sizes into an ONNX graph


def _graph_inputs(model: Any) -> list[Any]:
    initializers = {i.name for i in model.graph.initializer}
    return [v for v in model.graph.input if v.name not in initializers]


def fix_inputs(model: Any, patterns: Mapping[str, Sequence[Dim]], what: str) -> None:
    """Set each graph input's int dims from ``patterns`` (by input name); named dims stay dynamic.

    A dim the graph names is replaced through the whole graph (ORT's ``make_dim_param_fixed``),
    so outputs sharing the name (``batch``) follow.
    """
    fix_param = ort_tool("onnx_model_utils").make_dim_param_fixed
    for value in _graph_inputs(model):
        dims = value.type.tensor_type.shape.dim
        pattern = patterns[value.name]
        if len(pattern) != len(dims):
            raise BundleError(
                f"{what}: input {value.name!r} has rank {len(dims)}, the wiring feeds rank {len(pattern)}"
            )
        for axis, (dim, want) in enumerate(zip(dims, pattern, strict=True)):
            if not isinstance(want, int):
                continue
            if dim.HasField("dim_value") and dim.dim_value != want:
                raise BundleError(
                    f"{what}: input {value.name!r} dim {axis} is fixed to {dim.dim_value} in the graph, "
                    f"but the bundle's sizes give {want}; check --fixed-shapes"
                )
            if dim.HasField("dim_param"):
                fix_param(model.graph, dim.dim_param, want)
            else:
                dim.dim_value = want


def fix_outputs(model: Any, shapes: Mapping[str, Sequence[int]], what: str) -> None:
    """Set every graph output's dims to the sizes a run on the fixed input shapes produced."""
    for value in model.graph.output:
        dims = value.type.tensor_type.shape.dim
        actual = shapes[value.name]
        if len(dims) != len(actual):
            raise BundleError(
                f"{what}: output {value.name!r} has rank {len(actual)} at run time, {len(dims)} in the graph"
            )
        for axis, (dim, size) in enumerate(zip(dims, actual, strict=True)):
            if dim.HasField("dim_value") and dim.dim_value != size:
                raise BundleError(
                    f"{what}: output {value.name!r} dim {axis} is {size} at run time, {dim.dim_value} in the graph"
                )
            dim.dim_value = int(size)


def graph_io(model: Any, declared: Sequence[TensorSpec], *, outputs: bool) -> tuple[TensorSpec, ...]:
    """The manifest specs of a fixed graph's IO: the graph's sizes where fixed, declared names elsewhere."""
    values = {v.name: v for v in (model.graph.output if outputs else _graph_inputs(model))}
    specs = []
    for spec in declared:
        dims = values[spec.name].type.tensor_type.shape.dim
        shape = tuple(
            d.dim_value if d.HasField("dim_value") else want for d, want in zip(dims, spec.shape, strict=True)
        )
        specs.append(TensorSpec(spec.name, spec.dtype, shape))
    return tuple(specs)


def feeding_patterns(
    graph: Graph, plan: DimPlan, component: str, fixed_io: Mapping[str, Any]
) -> dict[str, tuple[Dim, ...]]:
    """Each input of ``component``: the raw input's fixed pattern, the feeding component's fixed
    output, or (an input no edge feeds) its own fixed pattern."""
    raw = {i.name: plan.pattern(i.shape) for i in graph.manifest.inputs}
    produced = {u: {o.name: o.shape for o in fixed_io[u]} for u in graph.upstream(component)}
    wired = graph.feeds(component, raw, produced)
    inputs = graph.manifest.component(component).inputs
    return {t.name: wired[t.name] if t.name in wired else plan.pattern(t.shape) for t in inputs}
