"""``mmedge inspect BUNDLE``: what a bundle holds, for people (tables) and machines (--json)."""

from __future__ import annotations

import argparse

from mmedge.bundle import Bundle, Manifest, Verification, load_bundle, manifest_to_dict
from mmedge.console import console, human_bytes, note, print_json, table
from mmedge.runtime.policy import openvino_record

__all__ = ["configure", "describe", "run"]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", help="bundle directory")
    parser.add_argument("--no-hash-check", action="store_true", help="skip sha256 checks (faster on big bundles)")


def describe(bundle: Bundle) -> dict:
    """The manifest plus derived totals: what ``--json`` prints."""
    d = manifest_to_dict(bundle.manifest)
    d["path"] = str(bundle.path)
    d["total_bytes"] = sum(c.size_bytes for c in bundle.manifest.components) + sum(
        a.size_bytes for a in bundle.manifest.assets
    )
    return d


def _preprocess(p: object) -> str:
    """One line per preprocessing spec: its non-default fields."""
    if p is None:
        return ""
    fields = {k: v for k, v in vars(p).items() if v is not None}
    return f"{type(p).__name__.removesuffix('Preprocess').lower()}: " + ", ".join(f"{k}={v}" for k, v in fields.items())


def _shape(shape: tuple) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _runs(v: Verification) -> str:
    """The input shapes of each checked run: "2x6 / 3x5" (inputs of one run joined by commas)."""
    return " / ".join(", ".join("x".join(map(str, shape)) or "scalar" for shape in run) for run in v.shapes)


def _show_verification(m: Manifest) -> None:
    """Every stage's check of every component, then why each failed one failed."""
    checks = [(c.name, v) for c in m.components for v in c.verification]
    if not checks:
        return
    console.print(
        table(
            "Verification per stage (same check at every stage: numerics vs the reference, dynamic dims on a second shape)",
            [
                "component",
                "stage",
                "vs",
                "result",
                "max abs err",
                "max rel err",
                "dynamic dims",
                "input shapes checked",
            ],
            [
                (
                    n,
                    v.stage,
                    v.reference,
                    "ok" if v.passed else "FAIL",
                    v.max_abs_error,
                    v.max_rel_error,
                    "kept" if v.dynamic_dims_ok else "LOST",
                    _runs(v),
                )
                for n, v in checks
            ],
        )
    )
    for n, v in checks:
        if not v.passed:
            note("FAIL", f"{n} after {v.stage} (vs {v.reference}): {v.detail}", style="red")


def run(args: argparse.Namespace) -> int:
    bundle = load_bundle(args.bundle, check_hashes=not args.no_hash_check)
    if args.json:
        print_json(describe(bundle))
        return 0
    m = bundle.manifest
    console.print(f"[bold]{m.model.name}[/bold]  ({bundle.path}, format v{m.format_version})")
    console.print(
        table(
            "Inputs",
            ["name", "modality", "dtype", "shape", "preprocess"],
            [(i.name, i.modality, i.dtype, _shape(i.shape), _preprocess(i.preprocess)) for i in m.inputs],
        )
    )
    console.print(
        table(
            "Components",
            ["name", "role", "modality", "precision", "format", "exporter", "size", "sha256"],
            [
                (
                    c.name,
                    c.role,
                    c.modality or "",
                    c.precision,
                    c.format,
                    c.exporter,
                    human_bytes(c.size_bytes),
                    c.sha256[:12],
                )
                for c in m.components
            ],
        )
    )
    for c in m.components:
        record = openvino_record(c)
        if record is not None:
            console.print(
                f"{c.name}: runs on the OpenVINO runtime when asked for 'auto' or 'cpu' with openvino installed "
                f"(mmedge quantize measured it there on {record.get('cpu') or 'its CPU'}: {record.get('why', '')})"
            )
    whole = m.whole_graph or {}
    if whole:
        runs = "run as one OpenVINO graph" if whole.get("chosen") else "stay split (not one OpenVINO graph)"
        console.print(
            f"{', '.join(whole.get('components') or ())}: {runs} when asked for 'auto' or 'cpu' with openvino "
            f"installed (mmedge quantize measured on {whole.get('cpu') or 'its CPU'}: {whole.get('why', '')})"
        )
    for c in m.components:
        built = bundle.openvino_path(c.name)
        if built != bundle.component_path(c.name):
            console.print(
                f"{c.name}: OpenVINO runs {built.name}, its build for OpenVINO's INT8 kernels "
                f"(onnxruntime runs {c.file})"
            )
    console.print(
        table(
            "Component IO",
            ["component", "direction", "name", "dtype", "shape"],
            [
                (c.name, direction, t.name, t.dtype, _shape(t.shape))
                for c in m.components
                for direction, tensors in (("in", c.inputs), ("out", c.outputs))
                for t in tensors
            ],
        )
    )
    console.print(
        table("Wiring", ["from", "to"], [(f"{e.source}.{e.output}", f"{e.target}.{e.input}") for e in m.wiring])
    )
    console.print(
        table(
            "Outputs",
            ["name", "from", "kind", "labels"],
            [
                (
                    o.name,
                    f"{o.component}.{o.tensor}",
                    o.kind,
                    ", ".join(o.labels[:8]) + (" …" if len(o.labels) > 8 else ""),
                )
                for o in m.outputs
            ],
        )
    )
    _show_verification(m)
    total = describe(bundle)["total_bytes"]
    console.print(f"total size: {human_bytes(total)}")
    return 0
