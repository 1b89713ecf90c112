"""A benchmark report as Markdown: what ran where, headline latency, ratios, and where time goes."""

from __future__ import annotations

from mmedge.bench._generate import generation_table
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
from mmedge.bench._types import BenchReport, MachineInfo
from mmedge.console import human_bytes

__all__ = ["busy_warning", "cache_note", "machine_line", "markdown", "render_markdown_table"]

TOP_OPS_MARKDOWN = 10
ATTRIBUTION_LEGEND = (
    "\n*preprocess*: input checks and preprocessing; a component: time inside its session (encoders that run "
    "concurrently share their stage's wall time by busy time); *copies*: gathering each component's inputs "
    "from earlier outputs and handing work to encoder threads; *postprocess*: collecting the outputs. "
    "Measured, not derived: the sum row shows how much of the end-to-end time they cover.\n"
)


def render_markdown_table(table: Table, *, heading: str = "###") -> str:
    def row(cells: tuple[str, ...]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    align = "| " + " | ".join("---:" if is_numeric(table, i) else "---" for i in range(len(table.columns))) + " |"
    lines = [f"{heading} {table.title}", "", row(table.columns), align, *(row(r) for r in table.rows)]
    return "\n".join(lines) + "\n"


def machine_line(m: MachineInfo) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in m.versions.items())
    flags = " ".join(m.flags) or "none detected"
    return (
        f"{m.cpu} ({m.arch}; {flags}); {m.physical_cores} physical / {m.logical_cores} logical cores, "
        f"{m.usable_cores} usable; {human_bytes(m.memory_bytes)} RAM; {m.os}; Python {m.python}; {versions}"
    )


def busy_warning(m: MachineInfo) -> str:
    what = f"{m.cpu_busy:.0%} of CPU time in use" if m.cpu_busy is not None else f"load average {m.load_average[0]:.1f}"
    return (
        f"the machine was busy when the run started ({what} on {m.usable_cores} "
        "usable cores): absolute times are inflated and noisy; the interleaved ratios are less affected"
    )


def cache_note(cache_dir: str) -> str:
    """What a run with ``bench(cache_dir=)`` measured: start-up and memory of a cache hit."""
    return (
        f"the bundles opened with the OpenVINO cache {cache_dir} (`Pipeline(cache_dir=)`, `--cache-dir`), "
        "filled by a process of their own before the measured ones started: start-up and peak memory are "
        "a cache hit's, as on a machine that ran the bundle before"
    )


def markdown(report: BenchReport) -> str:
    s = report.settings
    batch = primary_batch(report)
    budget = f"a {s.time_budget_s:g} s budget" if s.time_budget_s else f"{s.iterations} timed rounds"
    title = f"# mmedge bench: {report.subject}" + (" (PARTIAL: interrupted)" if report.partial else "")
    intro = [
        title,
        "",
        f"- **When**: {report.created_at}, {report.duration_s:.0f} s",
        f"- **Machine**: {machine_line(report.machine)}",
        f"- **Run**: {s.threads} threads, providers {', '.join(s.providers)}, batch sizes "
        f"{', '.join(map(str, s.batch_sizes))}"
        + "".join(f" ({n} {symbol.removesuffix('_batch')} items in every call)" for symbol, n in s.items.items())
        + f"; {s.warmup} warm-up rounds then {budget} per batch size, "
        f"{s.schedule}; inputs {s.inputs}",
        (
            "- **Method**: every variant in its own fresh process, same input tensors; "
            if s.processes == 1
            else f"- **Method**: every variant in {s.processes} fresh processes, taken in turn by the rounds "
            "(so the intervals include where a process landed), same input tensors; "
        )
        + "ratios are between medians of this one run. Cold start = process start to first result. A round's "
        "run meets the machine as the other variants left it (a request after other work)"
        + (
            f"; {s.warm_runs} more runs of each variant follow it back to back, reported as warm "
            "(the steady state of a busy server)."
            if s.warm_runs
            else "."
        ),
        *([f"- **Warning**: {busy_warning(report.machine)}"] if report.machine.busy else []),
        *([f"- **Cache**: {cache_note(s.cache_dir)}"] if s.cache_dir else []),
        "",
    ]
    tables = [latency_table(report, batch)]
    if any(v.agreement for v in report.variants):
        tables.append(agreement_table(report, batch))
    if report.comparisons:
        tables.append(ratio_table(report))
    tables += [startup_table(report)]
    if len(s.batch_sizes) > 1:
        tables.append(throughput_table(report))
    tables += [components_table(report, batch), attribution_table(report, batch)]
    if any(v.hotspots for v in report.variants):
        tables.append(hotspot_table(report, TOP_OPS_MARKDOWN))
    if report.generation:
        tables.append(generation_table(report.generation))
    body = "\n".join(
        render_markdown_table(t) + (ATTRIBUTION_LEGEND if t.title.startswith("Where") else "") for t in tables
    )
    return "\n".join(intro) + "\n" + body + _notes(report)


def _notes(report: BenchReport) -> str:
    lines = [f"- {v.name}: {note}" for v in report.variants for note in v.notes]
    return "\n### Notes\n\n" + "\n".join(lines) + "\n" if lines else ""
