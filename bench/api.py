"""``bench``: latency, throughput, start-up, memory, size and hot spots of a bundle and its rivals.

Every variant (this bundle, bundles to compare, the monolithic ONNX a bundle carries, PyTorch
eager, peer toolchains built from the same model) runs in its own fresh process on the same input tensors with the same thread budget;
runs are interleaved (order shuffled each round) so machine drift hits every variant equally, and ratios are
taken between medians of the same run. Torch is only imported in the PyTorch variant's process
(and ExecuTorch's). With PyTorch in the run, each variant's outputs on generated samples are scored
against PyTorch FP32's (top-1 agreement for logits, cosine otherwise), beside its latency.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from mmedge.bench._agreement import measure_agreement
from mmedge.bench._coord import Measurement, Plan, VariantSpec, Worker, measure
from mmedge.bench._generate import GenerationStats, measure_generation
from mmedge.bench._inputs import bench_inputs, item_counts, items_by_input, load_arrays, save_npz
from mmedge.bench._machine import machine_info
from mmedge.bench._peers import PeerJob, build_peers, plan_peers
from mmedge.bench._plan import check_same_inputs, variant_specs
from mmedge.bench._profile import hotspots_from_json
from mmedge.bench._stats import RunTiming, batch_result, median_ratio_interval
from mmedge.bench._types import (
    BenchProgress,
    BenchReport,
    BenchSettings,
    Comparison,
    MachineInfo,
    Startup,
    VariantResult,
)
from mmedge.bundle import Bundle, OutputSpec, load_bundle
from mmedge.errors import ConfigError, InputError
from mmedge.openvino_graph import MAX_SHAPES
from mmedge.providers import ProviderRequest
from mmedge.sessions import default_thread_budget, make_folder

__all__ = ["bench"]

MAX_PROCESSES = 16  # per variant: each holds a model in memory


def bench(
    bundle: str | os.PathLike[str] | Bundle,
    *,
    compare: Sequence[str | os.PathLike[str] | Bundle] = (),
    torch_model: str | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    config: str | os.PathLike[str] | None = None,
    inputs: Mapping[str, np.ndarray] | str | os.PathLike[str] | None = None,
    batch_sizes: Sequence[int] = (1,),
    items: Mapping[str, int] | None = None,
    iterations: int = 50,
    warmup: int = 5,
    warm_runs: int = 0,
    processes: int = 1,
    time_budget_s: float | None = None,
    threads: int | None = None,
    providers: ProviderRequest = "cpu",
    subject_providers: Sequence[Mapping[str, ProviderRequest]] = (),
    monolithic: bool = True,
    profile: bool = True,
    profile_runs: int = 10,
    seed: int = 0,
    progress: Callable[[BenchProgress], None] | None = None,
    peers: Sequence[str] = (),
    peer_python: str | os.PathLike[str] | None = None,
    peer_calibration: str | os.PathLike[str] | None = None,
    agreement_samples: int | None = None,
    agreement_inputs: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> BenchReport:
    """Measure ``bundle`` against ``compare`` bundles, monolithic ONNX and PyTorch eager in one run.

    Args:
        bundle: the bundle under test; ratios in the report are about it.
        compare: other bundles (e.g. the FP32 bundle an INT8 one came from); same inputs required.
        torch_model: add PyTorch eager: a reference model name (``"TriModalNet"``) or
            ``"package.module:Class"`` built without arguments; ``checkpoint`` loads its weights.
        config: an ``export.toml`` (as ``mmedge export --config`` reads it) whose ``[model]`` table
            gives ``torch_model``'s constructor arguments (or its config dataclass's fields).
        inputs: model tensors by input name, or an ``.npz`` of them (cycled to each batch size);
            default: seeded synthetic tensors of the manifest's example shapes.
        batch_sizes: measure latency and throughput at each of these.
        items: items per call for a modality (or input) that counts its own, whatever the batch size:
            ``{"text": 20}`` times one photo against 20 label texts, the shape a CLIP-style bundle
            (exported with a batch per modality) is deployed at.
        iterations: timed rounds per batch size (each round runs every variant once), after
            ``warmup`` untimed rounds. With ``time_budget_s`` the rounds run until that many
            seconds (split evenly over the batch sizes) are spent, instead of ``iterations``.
            A round's run meets the machine as the other variants left it: a request after other
            work. ``warm_runs``: that many more runs of the variant right after it, reported apart
            (``warm_latency``, ``warm_speedup``) as the steady-state latency of a busy server.
        processes: start each variant in this many processes and let the rounds take them in turn
            (round ``r`` runs process ``r mod processes`` of every variant). Where a process lands
            (cores, memory layout) moves its latency by a few percent for its whole life, which
            the rounds of one process cannot show; with several, the intervals include it (as
            pyperf's worker processes do). Start-up figures are the first process's, peak
            memory the largest one's.
        threads: CPU threads every variant may use (default: physical cores).
        providers: execution providers of the ONNX variants (default CPU, like PyTorch here).
        subject_providers: also time ``bundle`` under each of these per-component provider
            policies, e.g. ``{"image": "openvino", "*": "cpu"}`` (the OpenVINO runtime for the image
            encoder), each as a variant of its own.
        monolithic: include the whole-model ONNX of bundles that carry one.
        profile: after timing, profile ``profile_runs`` runs per variant for per-op hot spots.
        progress: called after each step; raising KeyboardInterrupt there (or Ctrl-C) stops the
            benchmark and returns what was measured, marked ``partial``.
        peers: other toolchains to build from ``torch_model`` and time: ``"ort-int8"``, ``"openvino"``,
            ``"executorch"`` (each with its INT8 and keep-front-end variants), ``"all"``, or single
            variants such as ``"openvino-int8-keepfe"``. Needs ``mmedge[peers]``; the onnxruntime
            and OpenVINO peers start from the monolithic FP32 ONNX a bundle carries.
        peer_python: the interpreter ExecuTorch builds and runs under (it pins its own torch).
        peer_calibration: an ``.npz`` of samples (first axis) the peers' INT8 is calibrated on;
            default: 32 generated samples.
        agreement_samples: how many generated samples every variant's outputs are compared with
            PyTorch's on (needs ``torch_model``); default 64 with peers, else 0 (not measured).
        agreement_inputs: an ``.npz`` of real samples (first axis) to compare on instead.
        cache_dir: open the bundles with ``Pipeline(cache_dir=)``, the machine-local OpenVINO cache
            (:mod:`mmedge.openvino_cache`), as ``mmedge serve --cache-dir`` would. A process of each
            bundle variant's own fills it first (every batch size), so the measured processes start
            from a cache hit: the start-up and peak memory of a machine that ran the bundle before.
    """
    _check_options(
        batch_sizes=batch_sizes,
        iterations=iterations,
        warmup=warmup,
        warm_runs=warm_runs,
        processes=processes,
        time_budget_s=time_budget_s,
        threads=threads,
        profile_runs=profile_runs,
        cache_dir=cache_dir,
    )
    subject = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    others = [b if isinstance(b, Bundle) else load_bundle(b) for b in compare]
    check_same_inputs(subject, others)
    budget = threads or default_thread_budget()
    sizes = tuple(dict.fromkeys(batch_sizes))
    counts = item_counts(subject, items or {})
    model_kwargs = _model_kwargs(config, torch_model)
    jobs = plan_peers(
        peers,
        [subject, *others],
        torch_spec=None
        if torch_model is None
        else {
            "model": torch_model,
            "checkpoint": str(checkpoint) if checkpoint else None,
            "model_kwargs": model_kwargs,
        },
        peer_python=str(peer_python) if peer_python is not None else None,
        threads=budget,
        batch_sizes=sizes,
        items=items_by_input(subject, counts),
    )
    given, how = (
        load_arrays(Path(inputs), subject, mixed="largest") if isinstance(inputs, str | os.PathLike) else (inputs, "")
    )
    default_agreement = 64 if jobs else 0
    agreement = _samples(
        subject, agreement_inputs, default_agreement if agreement_samples is None else agreement_samples, seed + 2
    )
    if agreement is not None and torch_model is None:
        raise ConfigError("agreement is measured against PyTorch FP32: pass torch_model (--torch) too")
    variants = variant_specs(
        subject,
        others,
        torch_model=torch_model,
        checkpoint=Path(checkpoint) if checkpoint is not None else None,
        model_kwargs=model_kwargs,
        threads=budget,
        providers=providers,
        monolithic=monolithic,
        subject_providers=subject_providers,
        cache_dir=str(cache_dir) if cache_dir is not None else None,
        # every batch size timed as deployed, compiled (not in chunks of others); 1 more: the example shape
        graph_shapes=max(MAX_SHAPES, len(sizes) + 1),
    )
    plan = Plan(
        batch_sizes=sizes,
        iterations=iterations,
        warmup=warmup,
        time_budget_s=time_budget_s / len(sizes) if time_budget_s is not None else None,
        profile_runs=profile_runs if profile else 0,
        warm_runs=warm_runs,
        processes=processes,
    )
    settings = BenchSettings(
        iterations=iterations,
        warmup=warmup,
        time_budget_s=time_budget_s,
        threads=budget,
        batch_sizes=sizes,
        items=counts,
        warm_runs=warm_runs,
        processes=processes,
        inputs=f"synthetic (seed {seed})"
        if inputs is None
        else f"{inputs}{f': {how}' if how else ''}"
        if isinstance(inputs, str | os.PathLike)
        else "given arrays",
        providers=(providers,) if isinstance(providers, str) else tuple(str(p) for p in providers),
        profile=profile,
        agreement_samples=len(next(iter(agreement.values()))) if agreement else 0,
        cache_dir=str(cache_dir) if cache_dir is not None else None,
    )
    created_at = datetime.now(UTC).isoformat(timespec="seconds")
    started = time.monotonic()
    tensors = bench_inputs(subject, sizes, given, seed, counts)
    machine = machine_info()  # before the run: its load average is the other work on the machine
    extra = _Extra(
        jobs=jobs,
        providers=providers,
        calibration=_samples(subject, peer_calibration, 32 if jobs else 0, seed + 1),
        agreement=agreement,
        outputs=subject.manifest.outputs,
        together=bool(subject.manifest.paired_outputs()),
    )
    into = _run(variants, tensors, plan, progress or (lambda _event: None), extra)
    generation = (  # a bundle with a decoder: time to first token, per-token latency, tokens/s
        ()
        if into.partial
        else measure_generation(
            subject, tensors, threads=budget, providers=providers, iterations=iterations, warmup=warmup
        )
    )
    return _report(
        variants,
        into=into,
        machine=machine,
        settings=settings,
        created_at=created_at,
        duration_s=time.monotonic() - started,
        generation=generation,
    )


def _check_options(
    *,
    batch_sizes: Sequence[int],
    iterations: int,
    warmup: int,
    warm_runs: int,
    processes: int,
    time_budget_s: float | None,
    threads: int | None,
    profile_runs: int,
    cache_dir: Any,
) -> None:
    problems = []
    if not batch_sizes or any(not isinstance(b, int) or isinstance(b, bool) or b < 1 for b in batch_sizes):
        problems.append(f"batch_sizes must be positive ints, found {list(batch_sizes)}")
    if iterations < 1:
        problems.append(f"iterations must be at least 1, found {iterations}")
    if warmup < 0:
        problems.append(f"warmup must be 0 or more, found {warmup}")
    if warm_runs < 0:
        problems.append(f"warm_runs must be 0 or more, found {warm_runs}")
    if not isinstance(processes, int) or isinstance(processes, bool) or not 1 <= processes <= MAX_PROCESSES:
        problems.append(f"processes must be an int from 1 to {MAX_PROCESSES}, found {processes!r}")
    if time_budget_s is not None and time_budget_s <= 0:
        problems.append(f"time_budget_s must be positive, found {time_budget_s}")
    if threads is not None and threads < 1:
        problems.append(f"threads must be at least 1, found {threads}")
    if profile_runs < 1:
        problems.append(f"profile_runs must be at least 1, found {profile_runs}")
    if cache_dir is not None and not isinstance(cache_dir, str | os.PathLike):
        problems.append(f"cache_dir must be a directory path or None, found {type(cache_dir).__name__}")
    if problems:
        raise ConfigError("; ".join(problems))
    if cache_dir is not None:
        make_folder("cache_dir", cache_dir)


def _fill_cache(variant: VariantSpec, inputs: Mapping[int, Path], scratch: Path, batch_sizes: Sequence[int]) -> None:
    """Open ``variant`` once in a process of its own and run every batch size, so that its cache
    folder holds what the measured processes will open (each input shape is an entry of its own)."""
    worker = Worker(variant, inputs, scratch)
    try:
        for batch in batch_sizes[1:]:  # the first ran at start-up
            worker.request({"cmd": "run", "batch": batch})
    finally:
        worker.close()


@dataclass(frozen=True)
class _Extra:
    """Peers to build before the workers start, and the samples they calibrate and agree on."""

    jobs: Sequence[PeerJob]
    providers: ProviderRequest
    calibration: Mapping[str, np.ndarray] | None
    agreement: Mapping[str, np.ndarray] | None
    outputs: Sequence[OutputSpec]  # the subject's, in order: what agreement scores
    # the samples run as one batch: an output pairs every row with every other (a similarity matrix), and
    # one sample at a time would score 1x1 matrices, which agree whatever a variant computes
    together: bool = False


def _run(
    variants: list[VariantSpec],
    tensors: Mapping[int, Mapping[str, np.ndarray]],
    plan: Plan,
    progress: Callable[[BenchProgress], None],
    extra: _Extra,
) -> Measurement:
    """Build the peers (appended to ``variants``), start ``plan.processes`` workers per variant (one
    at a time, so cold starts do not overlap), measure, then score every variant's outputs against
    PyTorch's (each variant's first process)."""
    into = Measurement()
    with tempfile.TemporaryDirectory(prefix="mmedge-bench-") as tmp:
        scratch = Path(tmp)
        paths = {b: save_npz(scratch / f"inputs-{b}.npz", t) for b, t in tensors.items()}
        replicas: dict[str, list[Worker]] = {}
        try:
            if extra.jobs and extra.calibration is not None:
                _add_peers(variants, extra, extra.calibration, scratch, into=into, progress=progress)
            for i, v in enumerate(variants):
                progress(BenchProgress("load", None, i, len(variants), i / len(variants), v.name))
                if v.spec.get("cache_dir"):
                    _fill_cache(v, paths, scratch, plan.batch_sizes)
                for _ in range(plan.processes):
                    replicas.setdefault(v.name, []).append(Worker(v, paths, scratch))
                into.ready[v.name] = replicas[v.name][0].ready
            measure(replicas, plan, into, progress)
            workers = [processes[0] for processes in replicas.values()]
            reference = next((v.name for v in variants if v.kind == "torch"), None)
            if extra.agreement is not None and reference is not None and not into.partial:
                progress(BenchProgress("agreement", None, 0, 1, 0.0, reference))
                samples = save_npz(scratch / "agreement.npz", extra.agreement)
                into.agreement, failed = measure_agreement(
                    workers, reference, samples, scratch, extra.outputs, together=extra.together
                )
                for name, why in failed.items():
                    into.notes.setdefault(name, []).append(why)
        except KeyboardInterrupt:
            into.partial = True
        finally:
            for processes in replicas.values():
                for w in processes:
                    w.close()
    return into


def _add_peers(
    variants: list[VariantSpec],
    extra: _Extra,
    calibration: Mapping[str, np.ndarray],
    scratch: Path,
    *,
    into: Measurement,
    progress: Callable[[BenchProgress], None],
) -> None:
    """Build every peer (each in its own process) and append its timed variant."""
    total = len(extra.jobs)

    def started(i: int, peer: Any) -> None:
        progress(BenchProgress("build", None, i, total, i / total, peer.name))

    built, failed = build_peers(
        extra.jobs,
        calibration=save_npz(scratch / "calibration.npz", calibration),
        scratch=scratch,
        bundle=Path(variants[0].source),
        providers=extra.providers,
        on_start=started,
    )
    for spec, notes in built:
        variants.append(spec)
        into.notes.setdefault(spec.name, []).extend(notes)
    into.notes.setdefault(variants[0].name, []).extend(failed)  # the subject's notes: the report shows them


def _samples(
    subject: Bundle, given: str | os.PathLike[str] | None, count: int, seed: int
) -> dict[str, np.ndarray] | None:
    """Samples along the first axis: the given ``.npz``, else ``count`` generated ones (None if 0)."""
    if given is not None:
        arrays = load_arrays(Path(given), subject)[0]
        n = min((len(a) for a in arrays.values() if np.ndim(a)), default=1)
        return bench_inputs(subject, (n,), arrays, seed)[n]  # checked against the inputs, like --inputs
    if count <= 0:
        return None
    return bench_inputs(subject, (count,), None, seed)[count]


def _report(
    variants: Sequence[VariantSpec],
    *,
    into: Measurement,
    machine: MachineInfo,
    settings: BenchSettings,
    created_at: str,
    duration_s: float,
    generation: tuple[GenerationStats, ...],
) -> BenchReport:
    results = tuple(_variant(v, into) for v in variants if v.name in into.ready)
    subject = variants[0].name
    return BenchReport(
        subject=subject,
        variants=results,
        comparisons=_comparisons(results, subject, into.samples),
        machine=machine,
        settings=settings,
        created_at=created_at,
        duration_s=duration_s,
        partial=into.partial,
        generation=generation,
    )


def _variant(v: VariantSpec, into: Measurement) -> VariantResult:
    ready: dict[str, Any] = into.ready[v.name]
    ms = {k: ready[f"{k}_ns"] / 1e6 for k in ("cold_start", "process", "import", "load", "first_run")}
    return VariantResult(
        name=v.name,
        kind=v.kind,
        source=v.source,
        precision=ready["precision"],
        providers=tuple(ready["providers"]),
        size_bytes=int(ready["size_bytes"]),
        peak_rss_bytes=into.peak_rss.get(v.name, 0),
        startup=Startup(
            cold_start_ms=ms["cold_start"],
            process_ms=ms["process"],
            import_ms=ms["import"],
            load_ms=ms["load"],
            first_run_ms=ms["first_run"],
        ),
        batches=tuple(
            batch_result(b, s, into.warm.get(v.name, {}).get(b, ()))
            for b, s in into.samples.get(v.name, {}).items()
            if s
        ),
        hotspots=tuple(hotspots_from_json(h) for h in into.hotspots.get(v.name, [])),
        notes=tuple(ready["notes"]) + tuple(into.notes.get(v.name, ())),
        agreement=tuple(into.agreement.get(v.name, ())),
    )


def _comparisons(
    results: Sequence[VariantResult], subject: str, samples: Mapping[str, Mapping[int, Sequence[RunTiming]]]
) -> tuple[Comparison, ...]:
    """The subject against every other variant, at every batch size both were measured at."""
    main = next((r for r in results if r.name == subject), None)
    if main is None:
        return ()
    out = []
    for other in results:
        if other is main:
            continue
        for mine in main.batches:
            theirs = other.at(mine.batch)
            if theirs is None:
                continue
            out.append(
                Comparison(
                    baseline=other.name,
                    batch=mine.batch,
                    speedup=_ratio(theirs.latency.p50_ms, mine.latency.p50_ms),
                    speedup_interval=median_ratio_interval(
                        [t.e2e_ns for t in samples.get(other.name, {}).get(mine.batch, ())],
                        [t.e2e_ns for t in samples.get(subject, {}).get(mine.batch, ())],
                    ),
                    warm_speedup=_ratio(theirs.warm_latency.p50_ms, mine.warm_latency.p50_ms)
                    if theirs.warm_latency and mine.warm_latency
                    else None,
                    memory_ratio=_ratio(main.peak_rss_bytes, other.peak_rss_bytes),
                    size_ratio=_ratio(main.size_bytes, other.size_bytes),
                )
            )
    return tuple(out)


def _ratio(a: float, b: float) -> float | None:
    return a / b if b > 0 and a > 0 else None


def _model_kwargs(config: str | os.PathLike[str] | None, torch_model: str | None) -> dict[str, Any] | None:
    """The ``[model]`` table of ``config``, read with export's loader (None without a config)."""
    if config is None:
        return None
    if torch_model is None:
        raise InputError("a config was given without a PyTorch model; pass torch_model (--torch) too")
    from mmedge.export import load_config

    return dict(load_config(config).model)
