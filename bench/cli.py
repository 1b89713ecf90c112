"""``mmedge bench BUNDLE [--compare OTHER ...] [--torch MODEL]``: latency per component and end to end.

Prints readable tables (stderr), the report as JSON (``--json``, stdout), and writes a Markdown
report and a PNG chart on request. Ctrl-C stops the measurement and prints what was measured so
far (marked partial; exit code 130).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table as RichTable

from mmedge.bench._generate import generation_table
from mmedge.bench._markdown import busy_warning, cache_note, machine_line
from mmedge.bench._tables import (
    Table,
    agreement_table,
    attribution_table,
    components_table,
    hotspot_table,
    is_numeric,
    latency_table,
    primary_batch,
    ratio_table,
    startup_table,
    throughput_table,
)
from mmedge.bench._types import BenchProgress, BenchReport
from mmedge.bench.api import bench
from mmedge.console import console, print_json, progress
from mmedge.errors import ConfigError, InputError
from mmedge.runtime.pipeline import CACHE_DIR_HELP
from mmedge.runtime.policy import parse_policy

__all__ = ["configure", "run", "write_outputs"]

TOP_OPS_TERMINAL = 5
INTERRUPTED = 130


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", help="bundle directory to measure (ratios are about it)")
    parser.add_argument(
        "--compare",
        nargs="+",
        action="extend",
        default=[],
        metavar="BUNDLE",
        help="other bundles to run in the same benchmark",
    )
    parser.add_argument(
        "--torch", metavar="MODEL", help="add PyTorch eager: a reference model (TriModalNet) or package.module:Class"
    )
    parser.add_argument("--checkpoint", help="weights for --torch (state_dict: .pt or .safetensors)")
    parser.add_argument(
        "--config",
        metavar="TOML",
        help="export.toml whose [model] table gives --torch's constructor arguments (as `mmedge export --config`)",
    )
    parser.add_argument(
        "--inputs",
        help=".npz of model tensors keyed by input name, or a .jsonl of your files and text (per line "
        '{"image": "a.jpg", "text": "a cat"}, preprocessed as the bundle will); default: seeded synthetic tensors',
    )
    parser.add_argument("--batch-sizes", default="1", help="comma-separated batch sizes, e.g. 1,2,4,8 (default 1)")
    parser.add_argument(
        "--items",
        action="append",
        default=[],
        metavar="MODALITY=N",
        help="N items of that modality (or input) in every call, whatever the batch size, for a bundle that "
        "counts each modality's items (CLIP-style): --items text=20 times one photo against 20 label texts",
    )
    parser.add_argument("--iterations", type=int, default=50, help="timed rounds per batch size (default 50)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed rounds first (default 5)")
    parser.add_argument(
        "--warm-runs",
        type=int,
        default=0,
        help="after each variant's run in a round, N more back to back, reported apart as warm (steady-state) latency",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="start each variant in N processes, taken in turn by the rounds, so the intervals include where a "
        "process lands (cores, memory layout), which moves its latency by a few percent (default 1)",
    )
    parser.add_argument("--time-budget", type=float, help="seconds of timed rounds in all, instead of --iterations")
    parser.add_argument("--threads", type=int, help="CPU threads for every variant (default: physical cores)")
    parser.add_argument(
        "--providers", default="cpu", help="providers of the ONNX variants: cpu (default), auto, cuda, or cuda,cpu"
    )
    parser.add_argument(
        "--subject-providers",
        action="append",
        default=[],
        metavar="POLICY",
        help="also time the bundle under this per-component provider policy, e.g. 'image=openvino;*=cpu' "
        "(the OpenVINO runtime for the image encoder); repeatable, each a variant of its own",
    )
    parser.add_argument(
        "--no-monolithic",
        action="store_true",
        help="skip the monolithic ONNX an FP32 bundle (given or --compare'd) carries",
    )
    parser.add_argument("--no-profile", action="store_true", help="skip per-op hot spots (ORT / torch profiler)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic inputs (default 0)")
    parser.add_argument(
        "--peers",
        default="",
        metavar="LIST",
        help="peer toolchains built from --torch/--checkpoint and timed alongside, comma-separated: "
        "ort-int8, openvino, executorch (each with its INT8 and front-end-kept-FP32 variants), all, or single "
        "variants (openvino-int8-keepfe, ...); needs pip install 'mmedge[peers]'",
    )
    parser.add_argument(
        "--peer-python", metavar="PATH", help="interpreter with executorch (and mmedge) for the ExecuTorch peers"
    )
    parser.add_argument(
        "--peer-calibration",
        metavar="NPZ",
        help="samples (first axis) the peers' INT8 calibrates on (default: 32 generated)",
    )
    parser.add_argument(
        "--agreement-samples",
        type=int,
        metavar="N",
        help="generated samples each variant's outputs are compared with PyTorch FP32's on (default 64 with --peers, else 0)",
    )
    parser.add_argument(
        "--agreement-inputs",
        metavar="NPZ|JSONL",
        help="real samples to compare on instead: an .npz (first axis) or a .jsonl as --inputs takes",
    )
    parser.add_argument("--markdown", metavar="PATH", help="write a Markdown report")
    parser.add_argument("--chart", metavar="PATH", help="write a PNG chart (needs matplotlib: mmedge[bench])")
    parser.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="open the bundles as `mmedge run|serve --cache-dir DIR` would: " + CACHE_DIR_HELP + " (filled "
        "before timing, so start-up and peak memory are a cache hit's)",
    )
    parser.add_argument("--out", metavar="DIR", help="write bench.json, bench.md and bench.png into DIR")


def _policy(text: str) -> Mapping[str, Any]:
    policy = parse_policy(text)
    if not isinstance(policy, Mapping):
        raise ConfigError(f"--subject-providers {text!r}: give a per-component policy, e.g. 'image=openvino;*=cpu'")
    return policy


def run(args: argparse.Namespace) -> int:
    batch_sizes = _batch_sizes(args.batch_sizes)
    providers = parse_policy(args.providers)
    if isinstance(providers, Mapping):
        raise ConfigError(
            f"--providers {args.providers!r}: bench runs every variant (monolithic included) on the same "
            "providers; give names only, e.g. cuda,cpu (per-component policies: --subject-providers)"
        )
    subject_providers = [_policy(text) for text in args.subject_providers]
    with _progress_bar(enabled=not args.json) as report_progress:
        report = bench(
            args.bundle,
            compare=args.compare,
            torch_model=args.torch,
            checkpoint=args.checkpoint,
            config=args.config,
            inputs=args.inputs,
            batch_sizes=batch_sizes,
            items=_items(args.items),
            iterations=args.iterations,
            warmup=args.warmup,
            warm_runs=args.warm_runs,
            processes=args.processes,
            time_budget_s=args.time_budget,
            threads=args.threads,
            providers=providers,
            subject_providers=subject_providers,
            monolithic=not args.no_monolithic,
            profile=not args.no_profile,
            seed=args.seed,
            progress=report_progress,
            peers=[p.strip() for p in args.peers.split(",") if p.strip()],
            peer_python=args.peer_python,
            peer_calibration=args.peer_calibration,
            agreement_samples=args.agreement_samples,
            agreement_inputs=args.agreement_inputs,
            cache_dir=args.cache_dir,
        )
    written = write_outputs(report, Path(args.out) if args.out else None, args.markdown, args.chart)
    if args.json:
        print_json(report.to_dict())
    else:
        show(report)
    for path in written:
        console.print(f"wrote {escape(str(path))}")
    if report.partial:
        console.print("[yellow]interrupted: the tables show what was measured before Ctrl-C[/yellow]")
        return INTERRUPTED
    return 0


def write_outputs(report: BenchReport, out: Path | None, markdown: str | None, chart: str | None) -> list[Path]:
    """Write the requested files; ``out`` is a directory that gets bench.json, bench.md and bench.png."""
    written = []
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
        written.append(out / "bench.json")
        markdown = markdown or str(out / "bench.md")
        chart = chart or str(out / "bench.png")
    if markdown:
        Path(markdown).write_text(report.to_markdown(), encoding="utf-8")
        written.append(Path(markdown))
    if chart and any(v.batches for v in report.variants):
        written.append(report.write_chart(chart))
    elif chart:
        console.print("[yellow]no chart: nothing was measured before the interruption[/yellow]")
    return written


def show(report: BenchReport) -> None:
    """The report as terminal tables on stderr."""
    batch = primary_batch(report)
    console.print(f"[bold]{escape(report.subject)}[/bold] on {escape(machine_line(report.machine))}")
    tables = [latency_table(report, batch)]
    if any(v.agreement for v in report.variants):
        tables.append(agreement_table(report, batch))
    if report.comparisons:
        tables.append(ratio_table(report))
    tables.append(startup_table(report))
    if len(report.settings.batch_sizes) > 1:
        tables.append(throughput_table(report))
    tables += [components_table(report, batch), attribution_table(report, batch)]
    if any(v.hotspots for v in report.variants):
        tables.append(hotspot_table(report, TOP_OPS_TERMINAL))
    if report.generation:
        tables.append(generation_table(report.generation))
    for t in tables:
        console.print(_rich(t))
    if report.machine.busy:
        console.print(f"[yellow]{escape(busy_warning(report.machine))}[/yellow]")
    if report.settings.cache_dir:
        console.print(escape(cache_note(report.settings.cache_dir)))
    for v in report.variants:
        for note in v.notes:
            console.print(f"[yellow]{escape(v.name)}: {escape(note)}[/yellow]")


def _rich(table: Table) -> RichTable:
    t = RichTable(title=table.title, title_justify="left")
    for i, column in enumerate(table.columns):
        t.add_column(column, justify="right" if is_numeric(table, i) else "left", overflow="fold")
    for row in table.rows:
        t.add_row(*(escape(c) for c in row))
    return t


def _items(given: Sequence[str]) -> dict[str, int]:
    counts = {}
    for text in given:
        key, sep, count = text.partition("=")
        if not sep or not key.strip() or not count.strip().isdigit():
            raise InputError(f"--items takes MODALITY=N, e.g. text=20; found {text!r}")
        counts[key.strip()] = int(count)
    return counts


def _batch_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError as e:
        raise InputError(f"--batch-sizes must be comma-separated integers like 1,2,4,8, found {text!r}") from e
    if not sizes or min(sizes) < 1:
        raise InputError(f"--batch-sizes must be positive integers, found {text!r}")
    return sizes


@contextmanager
def _progress_bar(*, enabled: bool) -> Iterator[Any]:
    """A progress callback drawing one bar that follows bench's phases."""
    with progress(enabled=enabled) as bar:
        task = bar.add_task("starting", total=1, status="")

        def update(event: BenchProgress) -> None:
            where = event.variant or (f"batch {event.batch}" if event.batch is not None else "")
            if event.total is None:  # a time budget: show percent of it
                bar.update(task, total=100, completed=round(event.fraction * 100), status="% of the time budget")
            else:
                bar.update(task, total=event.total, completed=event.done, status="")
            bar.update(task, description=f"{event.phase} {escape(where)}")

        yield update
