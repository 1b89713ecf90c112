"""The results of ``mmedge bench`` as frozen dataclasses, and their stable JSON form.

A :class:`BenchReport` holds one :class:`VariantResult` per model variant (the bundle under
test, bundles to compare with, the monolithic ONNX, PyTorch eager), each with per-batch latency
statistics, per-component times, the end-to-end attribution, start-up costs, memory, size and
per-op hot spots. ``to_dict`` is versioned by ``SCHEMA_VERSION``: bump it when a key changes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmedge.errors import MMEdgeError

if TYPE_CHECKING:
    from mmedge.bench._generate import GenerationStats

__all__ = [
    "MODEL_PART",
    "SCHEMA_VERSION",
    "Agreement",
    "Attribution",
    "BatchResult",
    "BenchProgress",
    "BenchReport",
    "BenchSettings",
    "Comparison",
    "ComponentLatency",
    "Hotspots",
    "LatencyStats",
    "MachineInfo",
    "OpTime",
    "Part",
    "Startup",
    "VariantResult",
]

SCHEMA_VERSION = 8
KINDS = ("split", "monolithic", "torch", "peer")  # VariantResult.kind
AGREEMENT_METRICS = ("top1", "cosine")  # Agreement.metric
PART_KINDS = ("preprocess", "component", "copies", "postprocess")  # Part.kind
MODEL_PART = "model"  # the one component of a variant that is a single graph (monolithic ONNX, torch profile)


@dataclass(frozen=True)
class BenchProgress:
    """What a long benchmark is doing, passed to the ``progress`` callback after each step."""

    phase: str  # "load", "warmup", "measure" or "profile"
    batch: int | None
    done: int  # steps of this phase done: variants loaded or profiled, rounds run
    total: int | None  # None when a time budget, not a count, ends the phase
    fraction: float  # of this phase, 0..1
    variant: str = ""  # the variant being loaded or profiled


@dataclass(frozen=True)
class LatencyStats:
    """Distribution of one timed quantity over the measured iterations, in milliseconds."""

    count: int
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    min_ms: float
    max_ms: float
    std_ms: float


@dataclass(frozen=True)
class ComponentLatency:
    """Time spent inside one component (an ONNX session, or a PyTorch submodule) per run."""

    name: str
    latency: LatencyStats


@dataclass(frozen=True)
class Part:
    """One slice of the end-to-end time (mean over the iterations)."""

    name: str  # "preprocess", a component name, "copies" or "postprocess"
    kind: str  # one of PART_KINDS
    mean_ms: float
    share: float  # of the mean end-to-end time, 0..1


@dataclass(frozen=True)
class Attribution:
    """Where the end-to-end time goes. Parts are measured, not derived from the total.

    Encoders that run concurrently share their stage's wall time in proportion to their busy
    time, so the parts add up to the end-to-end time; ``unattributed_ms`` is what no part
    covers (call overhead), so ``coverage`` close to 1 means the breakdown is complete.
    """

    parts: tuple[Part, ...]
    end_to_end_ms: float  # mean
    unattributed_ms: float

    @property
    def attributed_ms(self) -> float:
        return sum(p.mean_ms for p in self.parts)

    @property
    def coverage(self) -> float:
        return self.attributed_ms / self.end_to_end_ms if self.end_to_end_ms > 0 else 0.0


@dataclass(frozen=True)
class BatchResult:
    """Measurements of one variant at one batch size."""

    batch: int
    latency: LatencyStats  # end to end
    throughput_per_s: float  # items per second at the median latency
    components: tuple[ComponentLatency, ...]
    attribution: Attribution
    # end to end over the back-to-back runs after each timed one (``warm_runs``); None: not measured
    warm_latency: LatencyStats | None = None


@dataclass(frozen=True)
class OpTime:
    """One operator type's share of a component's kernel time (from the profiler)."""

    op: str
    ms_per_run: float
    calls_per_run: float
    share: float  # of the component's total kernel time


@dataclass(frozen=True)
class Hotspots:
    """The top operator types of one component by time."""

    component: str
    ops: tuple[OpTime, ...]
    kernel_ms_per_run: float  # all ops of the component, not only the top ones
    runs: int  # profiled runs the numbers are averaged over


@dataclass(frozen=True)
class Startup:
    """What it costs to get the first result, each step in its own fresh process."""

    cold_start_ms: float  # process start → first result
    process_ms: float  # interpreter start and mmedge imports
    import_ms: float  # importing the inference framework (onnxruntime or torch)
    load_ms: float  # building sessions / the model and loading weights
    first_run_ms: float  # the first inference (allocations, lazy initialisation)


@dataclass(frozen=True)
class Agreement:
    """How closely one output of a variant follows PyTorch FP32 on the same generated samples.

    Logits are scored by top-1 agreement (share of samples whose arg-max class is PyTorch's),
    every other output by the cosine similarity of each sample's values to PyTorch's.
    """

    output: str
    metric: str  # one of AGREEMENT_METRICS
    value: float  # top-1: share of samples that agree; cosine: mean over samples
    worst: float  # top-1: same as value; cosine: the lowest sample
    samples: int


@dataclass(frozen=True)
class VariantResult:
    """One model variant: how it was run and everything measured about it."""

    name: str
    kind: str  # one of KINDS
    source: str  # bundle directory, ONNX file, or PyTorch model spec
    precision: str  # "fp32", "int8", "mixed", ...
    providers: tuple[str, ...]
    size_bytes: int  # model files on disk
    peak_rss_bytes: int  # peak resident memory of its process, before profiling
    startup: Startup | None
    batches: tuple[BatchResult, ...]
    hotspots: tuple[Hotspots, ...] = ()
    notes: tuple[str, ...] = ()  # fallbacks and anything else a reader must know
    agreement: tuple[Agreement, ...] = ()  # with PyTorch FP32, one per output (empty: not measured)

    def at(self, batch: int) -> BatchResult | None:
        """The result at batch size ``batch``, or None if it was not measured."""
        return next((b for b in self.batches if b.batch == batch), None)


@dataclass(frozen=True)
class Comparison:
    """The subject variant against one other variant at one batch size."""

    baseline: str
    batch: int
    speedup: float | None  # baseline p50 / subject p50: > 1 means the subject is faster
    # its 95% interval over the interleaved rounds (bench._stats.median_ratio_interval); None: too few rounds
    speedup_interval: tuple[float, float] | None
    memory_ratio: float | None  # subject peak RSS / baseline peak RSS (None: not measured)
    size_ratio: float | None  # subject size / baseline size
    warm_speedup: float | None = None  # baseline / subject over the warm runs' p50 (None: no warm runs)


@dataclass(frozen=True)
class MachineInfo:
    """What the numbers were measured on; INT8 speed depends on the CPU's instruction sets."""

    cpu: str
    arch: str
    flags: tuple[str, ...]  # the SIMD features that matter to inference kernels
    physical_cores: int
    logical_cores: int
    usable_cores: int  # this process's CPU affinity
    memory_bytes: int
    os: str
    python: str
    versions: Mapping[str, str] = field(default_factory=dict)  # mmedge, onnxruntime, numpy, torch, ...
    load_average: tuple[float, ...] = ()  # 1, 5 and 15 minute load when the run started (where the OS tells)
    # Share of all CPU time in use over the second before the run (None: not measured). Unlike the
    # load average, which decays over minutes, it is not raised by work that just finished.
    cpu_busy: float | None = None

    @property
    def busy(self) -> bool:
        """Other work was competing for the CPU: absolute numbers are noisy (interleaved ratios less so)."""
        if self.cpu_busy is not None:
            return self.cpu_busy > 0.25
        return bool(self.load_average) and self.load_average[0] > max(1, self.usable_cores) * 0.5


@dataclass(frozen=True)
class BenchSettings:
    """How the benchmark was run."""

    iterations: int
    warmup: int
    time_budget_s: float | None
    threads: int
    batch_sizes: tuple[int, ...]
    warm_runs: int  # back-to-back runs after each variant's timed run in a round (0: none)
    inputs: str  # "synthetic (seed N)" or the .npz path
    providers: tuple[str, ...]
    profile: bool
    agreement_samples: int = 0  # generated samples each variant's outputs are compared with PyTorch's on
    processes: int = 1  # processes per variant, taken in turn by the rounds
    cache_dir: str | None = None  # the bundles' OpenVINO cache (Pipeline(cache_dir=)), filled before timing
    items: Mapping[str, int] = field(default_factory=dict)  # batch symbol → items per call at every batch size
    schedule: str = "interleaved rounds, order shuffled each round (seeded) so each variant follows each other alike"


@dataclass(frozen=True)
class BenchReport:
    """Everything one ``bench`` call measured; ``partial`` if it was interrupted."""

    subject: str  # name of the variant the comparisons are about
    variants: tuple[VariantResult, ...]
    comparisons: tuple[Comparison, ...]
    machine: MachineInfo
    settings: BenchSettings
    created_at: str  # ISO 8601, UTC
    duration_s: float
    partial: bool = False
    schema_version: int = SCHEMA_VERSION
    generation: tuple[GenerationStats, ...] = ()  # per batch size, for a subject with a decoder (a captioner)

    def variant(self, name: str) -> VariantResult:
        for v in self.variants:
            if v.name == name:
                return v
        raise MMEdgeError(
            f"no variant named {name!r} in the report; it has: {', '.join(v.name for v in self.variants)}"
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form; its keys are stable for a given ``schema_version`` (``generation``
        is there only for a bundle with a decoder)."""
        data = _plain(self)
        if not self.generation:
            del data["generation"]
        return data

    def to_markdown(self) -> str:
        """A Markdown report: headline table, ratios, components, attribution, hot spots, machine."""
        from mmedge.bench._markdown import markdown

        return markdown(self)

    def write_chart(self, path: str | Path, *, batch: int | None = None) -> Path:
        """Write a PNG bar chart of latency per component per variant (needs matplotlib)."""
        from mmedge.bench._chart import write_chart

        return write_chart(self, Path(path), batch=batch)


def _plain(value: Any) -> Any:
    """Dataclasses → dicts (computed properties of Attribution included), tuples → lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, Attribution):
            out["attributed_ms"] = value.attributed_ms
            out["coverage"] = value.coverage
        return out
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
