"""``mmedge mobile BUNDLE --out DIR [--target android|ios|generic] [--fixed-shapes NAME=N,...]``.

Writes the mobile bundle (``.ort`` components, ``required_operators.config``, the report as
``mobile_report.json``/``.md``) and prints a table: sizes before/after, the verification error,
and per execution provider the nodes it would take and in how many partitions; then what blocks
full offload, with the fix.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from rich.markup import escape

from mmedge.console import console, human_bytes, print_json, progress, table

if TYPE_CHECKING:
    from mmedge.mobile.api import MobileReport

__all__ = ["configure", "run"]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", help="the ONNX bundle to package (FP32 or INT8)")
    parser.add_argument("--out", required=True, help="directory of the mobile bundle (replaced if it is a bundle)")
    parser.add_argument(
        "--force", action="store_true", help="replace --out even if it is not an mmedge bundle (its files are deleted)"
    )
    parser.add_argument(
        "--target",
        choices=("android", "ios", "generic"),
        default="generic",
        help="android: NNAPI + XNNPACK; ios: CoreML + XNNPACK (both fix every dim, basic optimisations); "
        "generic: all three, dims stay dynamic unless --fixed-shapes names them (default)",
    )
    parser.add_argument(
        "--fixed-shapes",
        metavar="NAME=N[,NAME=N]",
        help="sizes of named dims, e.g. batch=1,seq=16,samples=16000 (default: the preprocessing lengths, batch=1)",
    )
    parser.add_argument(
        "--optimization",
        choices=("basic", "extended", "all"),
        help="ORT graph optimisations baked into the .ort files (default: basic for android/ios, extended for generic)",
    )


def run(args: argparse.Namespace) -> int:
    from mmedge.mobile.api import package_mobile, parse_fixed_shapes

    fixed = parse_fixed_shapes(args.fixed_shapes) if args.fixed_shapes else None
    with progress(enabled=not args.json) as bar:
        task = bar.add_task("packaging", total=None, status="")
        report = package_mobile(
            args.bundle,
            args.out,
            target=args.target,
            fixed_shapes=fixed,
            optimization=args.optimization,
            force=args.force,
            progress=lambda name: bar.update(task, advance=1, status=name),
        )
    if args.json:
        print_json(report.to_dict())
        return 0
    show_report(report)
    return 0


def show_report(report: MobileReport) -> None:
    """Sizes, verification and EP coverage per component, then the fixes, on stderr."""
    rows = [
        (
            c.name,
            human_bytes(c.size_before),
            human_bytes(c.size_after),
            c.verification.max_abs_error,
            *(f"{e.supported_nodes}/{e.total_nodes} in {e.partitions}" for e in c.eps),
        )
        for c in report.components
    ]
    columns = ["component", "before", "after", "max error", *report.eps]
    fixed_dims = ", ".join(f"{k}={v}" for k, v in report.fixed_dims.items()) or "none"
    console.print(table(f"{report.out} ({report.target}, {report.optimization}; fixed {fixed_dims})", columns, rows))
    console.print("EP cells: nodes the EP would take / all nodes, in how many partitions")
    for c in report.components:
        for b in c.blockers:
            if b.actionable:
                console.print(
                    f"{escape(c.name)}: [bold]{escape(b.op)}[/bold] ({escape(', '.join(b.eps))}) -> {escape(b.fix)}"
                )
    console.print(
        f"wrote {escape(report.out)} ({human_bytes(report.bundle_size_after)} on disk; source "
        f"{human_bytes(report.bundle_size_before)}): required_operators.config, mobile_report.md, mobile_report.json"
    )
