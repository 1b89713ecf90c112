"""``mmedge quantize BUNDLE --out DIR``: INT8 bundle + accuracy report from the command line."""

from __future__ import annotations

import argparse
import warnings

from rich.markup import escape

from mmedge.bundle import check_replaceable, load_bundle
from mmedge.console import console, human_bytes, note, print_json, table
from mmedge.errors import QuantizationError
from mmedge.quantize._apply import METHODS
from mmedge.quantize.api import AccuracyWarning, quantize_bundle
from mmedge.quantize.calibration import collect_samples, synthetic_calibration
from mmedge.quantize.recipes import MODES
from mmedge.quantize.report import REPORT_MD, ComponentReport, QuantizationReport

__all__ = ["configure", "run"]

SYNTHETIC = "synthetic"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", help="FP32 bundle directory (from `mmedge export`)")
    parser.add_argument("--out", required=True, help="directory to write the quantized bundle to")
    parser.add_argument(
        "--force", action="store_true", help="replace --out even if it is not an mmedge bundle (its files are deleted)"
    )
    parser.add_argument(
        "--calibration",
        default=SYNTHETIC,
        help="a .jsonl of raw samples (per line, input name → file path, text or numbers, preprocessed as the "
        "bundle will), a folder of .npz samples (one per file, keys = input names), or 'synthetic' for a "
        "reference model (default)",
    )
    parser.add_argument(
        "--holdout",
        help="held-out samples for the report, as --calibration takes them (default: synthetic, or 20%% of "
        "--calibration)",
    )
    parser.add_argument(
        "--recipe",
        default="auto",
        help=f"'auto', one of {MODES}, or per component: text_encoder=dynamic,fusion_head=static",
    )
    parser.add_argument("--method", default="minmax", choices=METHODS, help="calibration method (default minmax)")
    parser.add_argument("--samples", type=int, default=200, help="calibration samples to use (default 200)")
    parser.add_argument("--holdout-samples", type=int, default=200, help="synthetic held-out samples (default 200)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic samples")
    parser.add_argument(
        "--min-agreement", type=float, default=0.99, help="end-to-end top-1 agreement target (default 0.99)"
    )
    parser.add_argument("--max-rounds", type=int, default=4, help="accuracy fallback rounds at most (default 4)")
    parser.add_argument(
        "--strict",
        action="store_true",
        help="fail (write nothing) if the agreement target is missed, or if a component's pre-processing, "
        "calibration or quantization fails (default: retry it without that step, else keep it FP32, and report why)",
    )
    parser.add_argument(
        "--no-speed-check",
        dest="speed_check",
        action="store_false",
        help="quantize auto-recipe components even where INT8 is not faster than FP32 on this CPU",
    )


def parse_recipe(text: str) -> str | dict[str, str]:
    """``auto`` / a mode, or ``comp=mode,comp=mode`` as a dict."""
    if "=" not in text:
        return text
    recipes = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, mode = part.partition("=")
        if not sep or not name or not mode:
            raise QuantizationError(f"--recipe part {part!r} is not COMPONENT=MODE (e.g. fusion_head=static)")
        recipes[name.strip()] = mode.strip()
    return recipes


def run(args: argparse.Namespace) -> int:
    check_replaceable(args.out, force=args.force)  # before calibration data is read or made
    manifest = load_bundle(args.bundle).manifest
    labels = None
    if args.calibration == SYNTHETIC:
        calibration = synthetic_calibration(manifest, args.samples, seed=args.seed)
        holdout = synthetic_calibration(manifest, args.holdout_samples, seed=args.seed + 1)
        labels = holdout.labels
    else:
        calibration = collect_samples(args.calibration, manifest, "calibration", limit=args.samples)
        holdout = args.holdout
    say = None if args.json else (lambda message: console.print(f"[dim]… {escape(message)}[/dim]"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", AccuracyWarning)
        report = quantize_bundle(
            args.bundle,
            args.out,
            force=args.force,
            calibration=calibration,
            holdout=holdout,
            labels=labels,
            recipe=parse_recipe(args.recipe),
            method=args.method,
            min_agreement=args.min_agreement,
            max_fallback_rounds=args.max_rounds,
            strict=args.strict,
            speed_check=args.speed_check,
            progress=say,
        )
    if args.json:
        print_json(report.to_dict())
    else:
        show_report(report)
    for c in report.components:
        for f in c.failures:
            note("WARNING", f"{c.name}: {f.error}; {f.action}")
    for w in caught:
        note("WARNING", str(w.message))
    return 0


def _speed(c: ComponentReport) -> str:
    """The speed check's speed-up with its interval, and '?' where a cap left it undecided."""
    if c.speed is None:
        return "-" if c.speedup is None else f"{c.speedup:.2f}×"
    s = c.speed
    return f"{s.speedup:.2f}× [{s.low:.2f}–{s.high:.2f}]{'' if s.conclusive else ' ?'}"


def show_report(report: QuantizationReport) -> None:
    """Per-component and end-to-end tables of a quantization report, on stderr (also used by the demo)."""
    rows = [
        (
            c.name,
            c.precision,
            c.recipe.get("mode", "unchanged"),
            human_bytes(c.size_before),
            human_bytes(c.size_after),
            _cosine(c),
            len(c.excluded),
            _speed(c),
        )
        for c in report.components
    ]
    header = ["component", "precision", "recipe", "FP32", "quantized", "cosine", "kept FP32", "speed-up"]
    console.print(table("Components", header, rows))
    console.print(
        table(
            "End to end (held-out samples)",
            ["output", "metric", "agreement", "FP32 accuracy", "quantized accuracy"],
            [
                (o.name, o.metric, _pct(o.agreement), _pct(o.fp32_accuracy), _pct(o.quantized_accuracy))
                for o in report.outputs
            ],
        )
    )
    verdict = "[green]met[/green]" if report.met else "[red]NOT met[/red]"
    console.print(
        f"agreement {report.agreement:.2%} (target {report.min_agreement:.2%}: {verdict}); "
        f"on disk {human_bytes(report.bundle_size_before)} → {human_bytes(report.bundle_size_after)} "
        f"(model files {report.size_ratio:.0%} of FP32); "
        f"{len(report.fallback)} fallback round(s). Report: {report.output}/{REPORT_MD}",
        soft_wrap=True,  # one line: the report path stays copyable
    )


def _cosine(c: ComponentReport) -> str:
    """The lowest output cosine against FP32; '-' where nothing was compared (a component kept FP32)."""
    return "-" if not c.outputs else f"{min(t.cosine for t in c.outputs):.4f}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.2%}"
