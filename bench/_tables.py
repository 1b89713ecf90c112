"""The tables of a benchmark report, built once and rendered as Markdown or terminal tables.

Each builder returns a :class:`Table` of already formatted cells, so the Markdown report and
the terminal show the same numbers with the same rounding.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from mmedge.bench._stats import CONFIDENCE
from mmedge.bench._types import BenchReport, VariantResult
from mmedge.console import human_bytes

__all__ = [
    "Table",
    "agreement_table",
    "attribution_table",
    "components_table",
    "fmt_ms",
    "fmt_ratio",
    "hotspot_table",
    "is_numeric",
    "latency_table",
    "primary_batch",
    "ratio_table",
    "startup_table",
    "throughput_table",
]

MISSING = "—"
_NUMERIC = re.compile(r"^[\d—.]")  # cells that start like a number


@dataclass(frozen=True)
class Table:
    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


def is_numeric(table: Table, column: int) -> bool:
    """Whether a column holds numbers (right-aligned); the first column never does."""
    return column > 0 and all(_NUMERIC.match(row[column]) for row in table.rows)


def fmt_ms(ms: float | None) -> str:
    if ms is None:
        return MISSING
    return f"{ms:.0f}" if ms >= 100 else f"{ms:.1f}" if ms >= 10 else f"{ms:.2f}" if ms >= 1 else f"{ms:.3f}"


def fmt_ratio(r: float | None) -> str:
    return MISSING if r is None else f"{r:.2f}×"


def fmt_interval(interval: tuple[float, float] | None) -> str:
    return MISSING if interval is None else f"{interval[0]:.2f}–{interval[1]:.2f}×"


def primary_batch(report: BenchReport) -> int:
    """The batch size headline tables are about: the first one measured."""
    return report.settings.batch_sizes[0]


def latency_table(report: BenchReport, batch: int) -> Table:
    subject = report.variant(report.subject).at(batch) if _has(report, report.subject) else None
    warm = report.settings.warm_runs > 0
    rows = []
    for v in report.variants:
        b = v.at(batch)
        if b is None:
            continue
        lat = b.latency
        vs = subject.latency.p50_ms / lat.p50_ms if subject is not None and lat.p50_ms > 0 else None
        rows.append(
            (
                v.name,
                fmt_ms(lat.p50_ms),
                fmt_ms(lat.p90_ms),
                fmt_ms(lat.p99_ms),
                fmt_ms(lat.mean_ms),
                fmt_ms(lat.min_ms),
                f"{b.throughput_per_s:.1f}",
                fmt_ratio(vs) if v.name != report.subject else "1.00× (subject)",
                str(lat.count),
                *((fmt_ms(b.warm_latency.p50_ms) if b.warm_latency else MISSING,) if warm else ()),
            )
        )
    columns = ("variant", "p50 ms", "p90 ms", "p99 ms", "mean ms", "min ms", "items/s", "time vs subject", "runs")
    columns += ("warm p50 ms",) if warm else ()
    return Table(f"End-to-end latency, batch {batch}", columns, tuple(rows))


def agreement_table(report: BenchReport, batch: int) -> Table:
    """Each variant's latency beside how closely its outputs follow PyTorch FP32 (speed alone misleads)."""
    reference = next((v for v in report.variants if v.kind == "torch"), None)
    ref = reference.at(batch) if reference else None
    rows = []
    for v in report.variants:
        b = v.at(batch)
        agree = (
            "reference"
            if v is reference
            else "; ".join(f"{a.output} {fmt_agreement(a.metric, a.value, a.worst)}" for a in v.agreement) or MISSING
        )
        speed = ref.latency.p50_ms / b.latency.p50_ms if b and ref and b.latency.p50_ms > 0 else None
        rows.append((v.name, v.precision, fmt_ms(b.latency.p50_ms if b else None), fmt_ratio(speed), agree))
    samples = report.settings.agreement_samples
    columns = ("variant", "precision", "p50 ms", "speed-up vs PyTorch", "agreement with PyTorch FP32")
    return Table(
        f"Speed beside accuracy, batch {batch} (agreement on {samples} samples: top-1 for logits and scores, cosine otherwise)",
        columns,
        tuple(rows),
    )


def fmt_agreement(metric: str, value: float, worst: float) -> str:
    return f"top-1 {value:.1%}" if metric == "top1" else f"cosine {value:.4f} (min {worst:.4f})"


def ratio_table(report: BenchReport) -> Table:
    warm = report.settings.warm_runs > 0
    rows = tuple(
        (
            c.baseline,
            str(c.batch),
            fmt_ratio(c.speedup),
            fmt_interval(c.speedup_interval),
            *((fmt_ratio(c.warm_speedup),) if warm else ()),
            fmt_ratio(c.memory_ratio),
            fmt_ratio(c.size_ratio),
        )
        for c in report.comparisons
    )
    columns = ("baseline", "batch", "speed-up (p50)", f"{CONFIDENCE:.0%} interval")
    columns += (("warm speed-up (p50)",) if warm else ()) + ("peak RSS ratio", "size ratio")
    return Table(
        f"{report.subject} against each baseline (speed-up > 1× = faster; ratios < 1× = smaller)", columns, rows
    )


def startup_table(report: BenchReport) -> Table:
    rows = []
    for v in report.variants:
        s = v.startup
        rows.append(
            (
                v.name,
                fmt_ms(s.cold_start_ms) if s else MISSING,
                fmt_ms(s.import_ms) if s else MISSING,
                fmt_ms(s.load_ms) if s else MISSING,
                fmt_ms(s.first_run_ms) if s else MISSING,
                human_bytes(v.peak_rss_bytes) if v.peak_rss_bytes else MISSING,
                human_bytes(v.size_bytes),
                v.precision,
            )
        )
    columns = (
        "variant",
        "cold start ms",
        "import ms",
        "load ms",
        "first run ms",
        "peak RSS",
        "size on disk",
        "precision",
    )
    return Table("Start-up (fresh process each), memory and size", columns, tuple(rows))


def throughput_table(report: BenchReport) -> Table:
    sizes = report.settings.batch_sizes
    rows = tuple(
        (v.name, *(f"{b.throughput_per_s:.1f}" if (b := v.at(n)) else MISSING for n in sizes)) for v in report.variants
    )
    return Table("Throughput (items/s at the median latency)", ("variant", *(f"batch {n}" for n in sizes)), rows)


def components_table(report: BenchReport, batch: int) -> Table:
    """p50 time inside each component, per variant (busy time: concurrent encoders overlap)."""
    variants = [v for v in report.variants if v.at(batch)]
    names = _ordered(c.name for v in variants for c in v.at(batch).components)
    rows = []
    for name in names:
        cells = []
        for v in variants:
            found = next((c for c in v.at(batch).components if c.name == name), None)
            cells.append(fmt_ms(found.latency.p50_ms) if found else MISSING)
        rows.append((name, *cells))
    rows.append(("end to end", *(fmt_ms(v.at(batch).latency.p50_ms) for v in variants)))
    title = f"Per component, p50 ms inside each, batch {batch} (concurrent encoders overlap and share the CPU)"
    return Table(title, ("component", *(v.name for v in variants)), tuple(rows))


def attribution_table(report: BenchReport, batch: int) -> Table:
    """Mean ms (share) of each part of the end-to-end time, per variant; the sum row checks coverage."""
    variants = [v for v in report.variants if v.at(batch)]
    names = _ordered(p.name for v in variants for p in v.at(batch).attribution.parts)
    rows = []
    for name in names:
        cells = []
        for v in variants:
            part = next((p for p in v.at(batch).attribution.parts if p.name == name), None)
            cells.append(f"{fmt_ms(part.mean_ms)} ({part.share:.0%})" if part else MISSING)
        rows.append((name, *cells))
    rows.append(("sum of parts", *(_coverage(v, batch) for v in variants)))
    rows.append(("end to end (mean)", *(fmt_ms(v.at(batch).attribution.end_to_end_ms) for v in variants)))
    return Table(
        f"Where the time goes, mean ms per run, batch {batch}", ("part", *(v.name for v in variants)), tuple(rows)
    )


def hotspot_table(report: BenchReport, top: int) -> Table:
    rows = []
    for v in report.variants:
        for h in v.hotspots:
            ops = ", ".join(f"{o.op} {fmt_ms(o.ms_per_run)} ({o.share:.0%})" for o in h.ops[:top])
            rows.append((v.name, h.component, fmt_ms(h.kernel_ms_per_run), ops))
    columns = ("variant", "component", "kernel ms/run", f"top {top} ops: ms/run (share of kernel time)")
    return Table("Hot spots (profiled separately from the timed runs)", columns, tuple(rows))


def _coverage(v: VariantResult, batch: int) -> str:
    a = v.at(batch).attribution
    return f"{fmt_ms(a.attributed_ms)} ({a.coverage:.1%})"


def _has(report: BenchReport, name: str) -> bool:
    return any(v.name == name for v in report.variants)


def _ordered(names: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(names))
