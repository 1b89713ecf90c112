"""Benchmarking a bundle with a decoder (a captioner): generation metrics and attribution.

A caption's latency hides where the time goes: preprocessing, the encoder and the decoder init
run once per call, the decoder step once per token. From the spans ``Pipeline``'s trace hook
reports around ``generate``:

* time to first token: from the call to the end of the first decoder step (preprocessing,
  encoder, init and one step: how long a user waits for anything);
* per-token latency: time between the ends of consecutive decoder steps (the step plus the
  search's own numpy work), averaged over the steps of one call;
* tokens per second: tokens generated over all items of the batch, per second of the whole call
  (at the median call time).

These are measured in the benchmarking process itself, on the subject bundle only, after the
worker rounds (greedy search, as ``mmedge run`` does by default). The workers time whole
``generate`` calls like ``run`` calls of other bundles; :func:`generation_sample` attributes them.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mmedge.bench._stats import RunTiming, Span, latency_stats
from mmedge.bench._tables import Table, fmt_ms
from mmedge.bench._types import LatencyStats
from mmedge.bundle import Bundle, Manifest
from mmedge.runtime.pipeline import Pipeline

__all__ = ["GenerationStats", "first_token_feed", "generation_sample", "generation_table", "measure_generation"]


@dataclass(frozen=True)
class GenerationStats:
    """Generation of the subject bundle at one batch size."""

    batch: int
    strategy: str  # "greedy"
    max_len: int  # the bundle's max_length: most tokens per item
    tokens_per_item: float  # mean tokens generated per item (<eos> included)
    time_to_first_token: LatencyStats  # call start → end of the first decoder step
    per_token: LatencyStats | None  # mean time between decoder steps per call; None if no call took 2 steps
    total: LatencyStats  # the whole generate call
    tokens_per_s: float  # tokens of all items per second, at the median call time


def measure_generation(
    bundle: Bundle,
    tensors: Mapping[int, Mapping[str, np.ndarray]],
    *,
    threads: int,
    providers: Any,
    iterations: int,
    warmup: int,
) -> tuple[GenerationStats, ...]:
    """Time ``warmup`` + ``iterations`` greedy ``generate`` calls per batch size (``tensors``);
    () for a bundle without a decoder."""
    g = bundle.manifest.generation
    if g is None:
        return ()
    spans: list[Span] = []
    results = []
    with Pipeline(bundle, providers, threads=threads, trace=lambda *span: spans.append(span)) as pipe:
        for batch, feeds in tensors.items():
            calls = []
            for i in range(warmup + iterations):
                spans.clear()
                start = time.perf_counter_ns()
                out = pipe.generate(dict(feeds))
                end = time.perf_counter_ns()
                steps = [s_end for kind, name, _, s_end in spans if kind == "component" and name == g.decoder]
                if i >= warmup:
                    calls.append((start, end, steps, sum(len(t) for t in out.token_ids)))
            results.append(_stats(batch, g.max_length, calls))
    return tuple(results)


def _stats(batch: int, max_len: int, calls: Sequence[tuple[int, int, list[int], int]]) -> GenerationStats:
    total = latency_stats([end - start for start, end, _, _ in calls])
    per_token = [(steps[-1] - steps[0]) / (len(steps) - 1) for _, _, steps, _ in calls if len(steps) > 1]
    tokens = float(np.mean([n for *_, n in calls]))
    return GenerationStats(
        batch=batch,
        strategy="greedy",
        max_len=max_len,
        tokens_per_item=tokens / batch,
        time_to_first_token=latency_stats([steps[0] - start for start, _, steps, _ in calls]),
        per_token=latency_stats(per_token) if per_token else None,
        total=total,
        tokens_per_s=tokens / (total.p50_ms / 1e3) if total.p50_ms > 0 else 0.0,
    )


def generation_sample(e2e_ns: int, spans: Sequence[Span], decoder: str) -> RunTiming:
    """One ``generate`` call attributed: preprocess, each component (the decoder's steps summed),
    and "copies" for the rest (handing outputs on, and the search's work between steps)."""
    busy: dict[str, int] = {}
    for kind, name, start, end in spans:
        if kind == "component":
            busy[name] = busy.get(name, 0) + end - start
    preprocess = sum(end - start for kind, _, start, end in spans if kind == "preprocess")
    inside = sum(busy.values())
    parts = [("preprocess", "preprocess", preprocess)]
    parts += [(name, "component", ns) for name, ns in busy.items()]
    parts += [("copies", "copies", max(0, e2e_ns - preprocess - inside)), ("postprocess", "postprocess", 0)]
    return RunTiming(e2e_ns, tuple(parts), busy)


def first_token_feed(manifest: Manifest, component: str, batch: int) -> dict[str, np.ndarray]:
    """The token input of the decoder's first step (all <bos>), which no wiring feeds; {} for others."""
    g = manifest.generation
    if g is None or component != g.decoder:
        return {}
    dtype = next(t.dtype for t in manifest.component(component).inputs if t.name == g.token_input)
    return {g.token_input: np.full((batch, 1), g.bos_id, dtype=dtype)}


def generation_table(stats: Sequence[GenerationStats]) -> Table:
    """Per batch size: time to first token, per-token latency, whole call and tokens/s (medians)."""
    rows = tuple(
        (
            str(s.batch),
            f"{s.tokens_per_item:.1f} / {s.max_len}",
            fmt_ms(s.time_to_first_token.p50_ms),
            fmt_ms(s.per_token.p50_ms if s.per_token else None),
            fmt_ms(s.total.p50_ms),
            f"{s.tokens_per_s:.0f}",
        )
        for s in stats
    )
    columns = ("batch", "tokens per item / max", "first token ms", "per token ms", "call ms", "tokens/s")
    return Table(f"Generation ({stats[0].strategy if stats else 'greedy'}, p50)", columns, rows)
