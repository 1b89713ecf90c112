"""The result of mobile packaging, as data (JSON) and as a Markdown page for people."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mmedge.bundle import Dim, Verification
from mmedge.mobile._eps import Blocker, EPReport

__all__ = ["MobileComponentReport", "MobileReport"]


@dataclass(frozen=True)
class MobileComponentReport:
    """One component before and after packaging, and how the mobile EPs would run it."""

    name: str
    source_file: str
    mobile_file: str
    size_before: int  # bytes of the source ONNX file
    size_after: int  # bytes of the .ort file
    inputs: Mapping[str, tuple[Dim, ...]]  # shapes in the mobile graph (ints = fixed)
    outputs: Mapping[str, tuple[Dim, ...]]
    ops: Mapping[str, int]  # "domain:Op" -> node count in the .ort graph
    eps: tuple[EPReport, ...]
    blockers: tuple[Blocker, ...]
    verification: Verification
    # Max abs difference from the source run with onnxruntime's default (all) optimisations, as
    # Pipeline runs it. Nonzero for INT8 at 'basic': ORT's fused int8 CPU kernels round differently
    # from the float Q/DQ path the .ort file keeps for NNAPI/CoreML.
    difference_from_default: float = 0.0

    @property
    def dynamic_dims(self) -> tuple[str, ...]:
        """Named dims still dynamic in the mobile graph."""
        shapes = (*self.inputs.values(), *self.outputs.values())
        return tuple(sorted({d for shape in shapes for d in shape if isinstance(d, str)}))


@dataclass(frozen=True)
class MobileReport:
    """What ``package_mobile`` produced: sizes, fixed dims, EP usability per component, operators."""

    source: str
    out: str
    target: str
    optimization: str  # ORT graph optimisation level baked into the .ort files
    eps: tuple[str, ...]  # the execution providers checked for this target
    fixed_dims: Mapping[str, int]
    fixed_dim_origin: Mapping[str, str]  # where each size came from
    components: tuple[MobileComponentReport, ...]
    required_operators: tuple[str, ...]  # lines of required_operators.config: "domain;opset;Op1,Op2"
    onnxruntime_version: str
    # bytes on disk: what inference on the source bundle reads (not its monolithic baseline graph),
    # and every file of the mobile bundle, this report and the manifest included
    bundle_size_before: int = 0
    bundle_size_after: int = 0

    @property
    def size_before(self) -> int:
        return sum(c.size_before for c in self.components)

    @property
    def size_after(self) -> int:
        return sum(c.size_after for c in self.components)

    def component(self, name: str) -> MobileComponentReport:
        return next(c for c in self.components if c.name == name)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (also written to the bundle as ``mobile_report.json``)."""
        data = dataclasses.asdict(self)
        data["size_before"], data["size_after"] = self.size_before, self.size_after
        for comp, c in zip(data["components"], self.components, strict=True):
            comp["dynamic_dims"] = list(c.dynamic_dims)
            for ep_dict, ep in zip(comp["eps"], c.eps, strict=True):
                ep_dict["fully_supported"] = ep.fully_supported
            for blocker_dict, blocker in zip(comp["blockers"], c.blockers, strict=True):
                blocker_dict["actionable"] = blocker.actionable
        return data

    def to_markdown(self) -> str:
        """A readable page (also written to the bundle as ``mobile_report.md``)."""
        from mmedge.console import human_bytes

        fixed = ", ".join(f"{k}={v} ({self.fixed_dim_origin.get(k, '')})" for k, v in self.fixed_dims.items())
        lines = [
            f"# Mobile bundle: {self.out}",
            "",
            f"Source `{self.source}`, target **{self.target}** (checked for {', '.join(self.eps)}), "
            f"ORT optimisation `{self.optimization}`, onnxruntime {self.onnxruntime_version}.",
            f"Fixed dims: {fixed or 'none (all dims stay dynamic)'}.",
            f"Size on disk: {human_bytes(self.bundle_size_before)} (source bundle, without a monolithic baseline "
            f"graph) → {human_bytes(self.bundle_size_after)} (this bundle, all files).",
            "",
            "| component | before | after | max abs error | vs source at ORT defaults | dynamic dims |",
            "|---|---:|---:|---:|---:|---|",
        ]
        lines += [
            f"| {c.name} | {human_bytes(c.size_before)} | {human_bytes(c.size_after)} | "
            f"{c.verification.max_abs_error:.3g} | {c.difference_from_default:.3g} | {', '.join(c.dynamic_dims) or '-'} |"
            for c in self.components
        ]
        lines.append(f"| **total** | {human_bytes(self.size_before)} | {human_bytes(self.size_after)} | | | |")
        for c in self.components:
            lines += ["", *_component_markdown(c)]
        lines += [
            "",
            "## Reduced build",
            "",
            "`required_operators.config`:",
            "",
            "```",
            *self.required_operators,
            "```",
        ]
        return "\n".join(lines) + "\n"


def _component_markdown(c: MobileComponentReport) -> list[str]:
    shapes = "; ".join(f"{k} {list(v)}" for k, v in c.inputs.items())
    lines = [
        f"## {c.name}",
        "",
        f"Inputs: {shapes}. {sum(c.ops.values())} nodes: "
        + ", ".join(f"{op.split(':')[1]}×{n}" for op, n in c.ops.items())
        + ".",
        "",
        "| EP | nodes taken | partitions | partition sizes | suitability | not taken |",
        "|---|---:|---:|---|---|---|",
    ]
    for ep in c.eps:
        per_op: dict[str, int] = {}
        for u in ep.unsupported:
            per_op[u.op.split(":")[1]] = per_op.get(u.op.split(":")[1], 0) + u.nodes
        missing = ", ".join(f"{op}×{n}" for op, n in per_op.items()) or "-"
        if ep.dynamic_shape_nodes:
            missing += f"; {ep.dynamic_shape_nodes} for dynamic shapes"
        sizes = ", ".join(map(str, ep.partition_sizes)) or "-"
        lines.append(
            f"| {ep.ep} | {ep.supported_nodes}/{ep.total_nodes} | {ep.partitions} | {sizes} | {ep.suitability} | {missing} |"
        )
    to_fix = [b for b in c.blockers if b.actionable]
    on_cpu = [b for b in c.blockers if not b.actionable]
    if not c.blockers:
        return [*lines, "", "Every checked EP takes the whole component."]
    lines += ["", "What blocks full offload:", ""]
    lines += [f"- **{b.op}** ({b.nodes} node(s); {b.reason}). Fix: {b.fix}." for b in to_fix]
    if on_cpu:
        ops = ", ".join(f"{b.op.split(':')[-1]} ({'/'.join(b.eps)})" for b in on_cpu)
        lines.append(f"- Left to the CPU EP, no fix needed: {ops}.")
    return lines
