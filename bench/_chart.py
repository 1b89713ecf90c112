"""A PNG chart of a benchmark for slides: p50 latency per component and end to end, per variant.

Left: grouped bars per component (one bar per variant that has that component). Right: end
to end, one bar per variant, labelled with ms and the ratio to the subject. matplotlib is an
optional dependency (the ``bench`` extra) and is imported only here, with the Agg backend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmedge.bench._tables import fmt_ms, primary_batch
from mmedge.bench._types import MODEL_PART, BenchReport, VariantResult
from mmedge.errors import MMEdgeError

__all__ = ["write_chart"]

# Colour-blind-safe palette (Okabe-Ito); the subject gets the first colour.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
DPI = 160


def write_chart(report: BenchReport, path: Path, *, batch: int | None = None) -> Path:
    """Write the chart for ``batch`` (default: the first batch size) to ``path`` as PNG."""
    plt = _pyplot()
    batch = primary_batch(report) if batch is None else batch
    variants = [v for v in report.variants if v.at(batch) is not None]
    if not variants:
        raise MMEdgeError(f"nothing was measured at batch {batch}, so there is nothing to chart")
    colours = {v.name: PALETTE[i % len(PALETTE)] for i, v in enumerate(variants)}
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.2), gridspec_kw={"width_ratios": [2.2, 1]})
    _components(left, variants, batch, colours)
    _end_to_end(right, variants, batch, colours, report.subject)
    m, s = report.machine, report.settings
    title = f"{report.subject}: latency per component, batch {batch}, {s.threads} threads (p50)"
    fig.suptitle(title + (" — PARTIAL" if report.partial else ""), fontsize=13, fontweight="bold")
    fig.text(
        0.5,
        0.005,
        f"{m.cpu} · {m.arch} · {' '.join(m.flags)} · {report.created_at}",
        ha="center",
        fontsize=8,
        color="#555",
    )
    fig.tight_layout(rect=(0, 0.03, 1, 0.95))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as e:
        raise MMEdgeError("the benchmark chart needs matplotlib: pip install 'mmedge[bench]'") from e
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _components(ax: Any, variants: list[VariantResult], batch: int, colours: dict[str, str]) -> None:
    """Grouped bars: per component, one bar per variant that has it, centred on the group."""
    times = {v.name: {c.name: c.latency.p50_ms for c in v.at(batch).components} for v in variants}
    groups = list(dict.fromkeys(c for v in variants for c in times[v.name] if c != MODEL_PART))
    width = 0.8 / max(1, max(sum(g in times[v.name] for v in variants) for g in groups) if groups else 1)
    placed: dict[str, tuple[list[float], list[float]]] = {v.name: ([], []) for v in variants}
    for g, component in enumerate(groups):
        present = [v.name for v in variants if component in times[v.name]]
        for i, name in enumerate(present):
            placed[name][0].append(g + (i - (len(present) - 1) / 2) * width)
            placed[name][1].append(times[name][component])
    for name, (xs, ys) in placed.items():
        if xs:
            bars = ax.bar(xs, ys, width * 0.92, label=name, color=colours[name])
            ax.bar_label(bars, labels=[fmt_ms(y) for y in ys], fontsize=7.5, padding=2)
    ax.set_xticks(range(len(groups)), [g.replace("_", " ") for g in groups])
    ax.set_ylim(0, max((y for xs, ys in placed.values() for y in ys), default=1) * 1.15)
    ax.set_ylabel("ms inside the component (concurrent encoders overlap)")
    ax.set_title("Per component", fontsize=11)
    ax.legend(fontsize=8, frameon=False)
    _style(ax)


def _end_to_end(ax: Any, variants: list[VariantResult], batch: int, colours: dict[str, str], subject: str) -> None:
    names = [v.name for v in variants]
    times = [v.at(batch).latency.p50_ms for v in variants]
    base = next((t for n, t in zip(names, times, strict=True) if n == subject), None)
    bars = ax.barh(range(len(names)), times, color=[colours[n] for n in names])
    labels = [f"{fmt_ms(t)} ms" + _versus(t, base, n == subject) for n, t in zip(names, times, strict=True)]
    ax.bar_label(bars, labels=labels, fontsize=8, padding=3)
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlim(0, max(times) * 1.7)
    ax.set_xlabel("ms")
    ax.set_title("End to end", fontsize=11)
    _style(ax)


def _versus(t: float, base: float | None, is_subject: bool) -> str:
    if is_subject or base is None or t <= 0 or base <= 0:
        return ""
    return f"  ({t / base:.2f}× slower)" if t >= base else f"  ({base / t:.2f}× faster)"


def _style(ax: Any) -> None:
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="both", alpha=0.25, linewidth=0.6)
    ax.set_axisbelow(True)
