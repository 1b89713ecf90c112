"""``mmedge doctor``: list the patterns in a model that break export or mobile EPs, with their fixes.

mmedge doctor --model TriModalNet
mmedge doctor --model mypkg.models:MyNet --config export.toml --json

The model is built as ``mmedge export`` builds it (same --model, --config, --encoder, --batch),
traced once on its example inputs; the proposed split (each encoder, its raw inputs, the glue
folded into it) is shown with how it was decided, then every finding is listed per component. Exits 1 when a
finding is an error (``mmedge export`` would fail), else 0.
"""

from __future__ import annotations

import argparse
from typing import Any

from rich.markup import escape

from mmedge.console import console, print_json, table
from mmedge.export._arguments import AUDIO_FRONTENDS
from mmedge.export._doctor_types import DoctorReport

__all__ = ["configure", "run", "show_report"]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", required=True, help="package.module:ClassName, or a reference model (TextImageNet, TriModalNet, ...)"
    )
    parser.add_argument("--config", help="export.toml, as for mmedge export: [model] kwargs, [inputs], [encoders]")
    parser.add_argument("--batch", type=int, help="batch size of generated example inputs (default 2)")
    parser.add_argument(
        "--encoder", action="append", default=[], metavar="MODALITY=PATH", help="an encoder, e.g. text=text_encoder"
    )
    parser.add_argument(
        "--audio-frontend",
        choices=AUDIO_FRONTENDS,
        help="as for mmedge export (default auto: the export replaces torchaudio MelSpectrograms where that verifies)",
    )


def run(args: argparse.Namespace) -> int:
    from mmedge.export._config import build_model, encoders_option, example_inputs, load_config, resolve_class
    from mmedge.export.doctor import diagnose

    config = load_config(args.config)
    model = build_model(resolve_class(args.model), config.model)
    export: dict[str, Any] = dict(config.export)
    batch = args.batch if args.batch is not None else export.get("batch", 2)
    report = diagnose(
        model,
        example_inputs(model, config, batch),
        encoders_option(args.encoder, config.encoders),
        preprocess={
            **(getattr(model, "preprocess", None) or {}),
            **{n: i.preprocess for n, i in config.inputs.items() if i.preprocess},
        },
        modalities={n: i.modality for n, i in config.inputs.items() if i.modality},
        audio_frontend=args.audio_frontend or export.get("audio_frontend", "auto"),
    )
    if args.json:
        print_json(report.to_dict())
    else:
        show_report(report)
    return 1 if report.errors else 0


def show_report(report: DoctorReport) -> None:
    """The proposed split and why, a table of the findings, what breaks and the fix for each, the verdict."""
    if report.split:
        console.print(f"[bold]Proposed split of {report.model}[/bold]")
        for line in report.split:
            console.print(f"  {escape(line)}")
        for reason in report.reasons:
            console.print(f"  [dim]why[/dim] {escape(reason)}")
    found = sorted(report.findings, key=lambda f: (report.components.index(f.component), f.severity))
    if found:
        console.print(
            table(
                f"Pre-flight of {report.model}",
                ["#", "component", "severity", "pattern", "where"],
                [(i, f.component, f.severity, f.pattern, "\n".join(f.where)) for i, f in enumerate(found, 1)],
            )
        )
    for i, f in enumerate(found, 1):
        console.print(
            f"[bold]{i}. {f.pattern}[/bold] in {f.component}: {escape(f.problem)}.\n   [green]fix[/green]: {escape(f.fix)}"
        )
    clean = [c for c in report.components if not report.for_component(c)]
    if clean:
        console.print(f"[green]clean[/green] {', '.join(clean)}: no known export or mobile-EP breaker")
    errors, warnings = len(report.errors), len(report.warnings)
    verdict = "[red]export will fail[/red]" if errors else "[green]export should work[/green]"
    console.print(f"{verdict}: {errors} error(s), {warnings} warning(s)")
