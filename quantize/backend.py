"""Run an INT8 component on the OpenVINO runtime where that is measurably faster and keeps the accuracy.

Why: onnxruntime's CPU INT8 convolutions (QLinearConv) use no AMX and little of VNNI; OpenVINO's
CPU plugin (oneDNN) runs the same QDQ file — the recipe and the scales quantize chose — with them:
a ResNet-18 at 224² on an AMX Xeon goes from 6.6 to 3.8 ms end to end
(``benchmarks/results/peers.md``). On a CPU without those instructions the two are close, and
OpenVINO's kernels round differently from onnxruntime's. So the backend is chosen like a recipe,
by measurement on the machine that quantizes:

1. each INT8 component is timed on both at its deploy shape, every run starting from idle
   (``IDLE_MS``: what a request meets, and where the two runtimes differ most), with the speed
   check's sequential test (:func:`mmedge.quantize.speed.sequential_ratio`, same policy: OpenVINO must be
   ``min_speedup`` faster with confidence; components onnxruntime runs in under ``MIN_TIMED_MS``
   stay there); an INT8 component with an OpenVINO build that OpenVINO runs faster than
   its own file (:mod:`mmedge.quantize.openvino_build`) is timed again, its own file on
   onnxruntime against the build on OpenVINO (a BERT-style text encoder: dynamic INT8 on
   onnxruntime beats OpenVINO running the same file, the build on OpenVINO beats both);
2. the faster ones, largest saving first, are kept on OpenVINO one by one while end-to-end
   agreement with FP32 on the held-out samples stays at ``min_agreement`` (or at what the bundle
   reaches on onnxruntime, if that is lower).

The decision, both timings and the agreement go into the manifest (``quantization.backend``).
A Pipeline whose provider request for the component is ``"auto"`` or ``"cpu"`` then runs it on
OpenVINO when ``openvino`` is installed and the CPU has the INT8 instructions of the one measured
on (:func:`mmedge.runtime.policy.component_plans`). Without ``openvino`` installed at quantize time
nothing is timed and every component stays on onnxruntime.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmedge.cpu import cpu_model_and_flags, int8_dot_instructions
from mmedge.errors import QuantizationError
from mmedge.providers import OPENVINO, openvino_available
from mmedge.quantize._chain import Chain
from mmedge.quantize._samples import SampleExecutor
from mmedge.quantize.report import BackendCheck, RatioTest
from mmedge.quantize.speed import MIN_TIMED_MS, SpeedPolicy, deploy_sample, sequential_ratio, shapes_text
from mmedge.timing import interleaved_rounds

__all__ = [
    "IDLE_MS",
    "ONNXRUNTIME",
    "OPENVINO_BACKEND",
    "Timed",
    "check_backends",
    "slow_enough",
    "time_backends",
    "timed_ratio",
]

ONNXRUNTIME = "onnxruntime"
OPENVINO_BACKEND = "openvino"  # the manifest's name for it (the provider short name)
# Idle time before each timed run, so each starts with the runtime's threads asleep as a request
# does; back-to-back runs favour OpenVINO where a benchmark of whole requests does not (benchmarks/NOTES.md).
IDLE_MS = 5.0


@dataclass(frozen=True)
class Timed:
    """One INT8 component's file timed on onnxruntime against OpenVINO at its deploy shape."""

    test: RatioTest | None  # None: OpenVINO could not compile or run it
    shapes: str
    feeds: dict[str, np.ndarray]


def time_backends(chain: Chain, threads: int, policy: SpeedPolicy, say: Callable[[str], None]) -> dict[str, Timed]:
    """Time every INT8 component's own file on onnxruntime and on OpenVINO ({} without OpenVINO)."""
    candidates = [c for c in chain.graph.order() if chain.int8_built(c)]
    if not candidates or not openvino_available():
        return {}
    say("timing each INT8 component on onnxruntime and on OpenVINO")
    deploy = SampleExecutor(chain.graph, [deploy_sample(chain.calibration.samples[0], chain.manifest.inputs)])
    timed = {}
    for name in candidates:
        feeds = deploy.feeds(chain.versions, name)[0]
        shapes = "input " + shapes_text({k: tuple(int(d) for d in np.shape(v)) for k, v in feeds.items()})
        timed[name] = Timed(
            _time(chain.versions[name], chain.versions[name], feeds, threads=threads, policy=policy, name=name),
            shapes,
            feeds,
        )
    return timed


def slow_enough(timed: Mapping[str, Timed], floor_ms: float) -> dict[str, Timed]:
    """The timed components onnxruntime runs in ``floor_ms`` or more."""
    return {n: t for n, t in timed.items() if t.test is not None and t.test.base_ms >= floor_ms}


def check_backends(
    chain: Chain,
    timed: Mapping[str, Timed],
    builds: Mapping[str, Path],
    *,
    threads: int,
    policy: SpeedPolicy,
    min_agreement: float,
) -> dict[str, BackendCheck]:
    """Keep on OpenVINO the components it runs measurably faster, while agreement holds.

    ``builds``: the OpenVINO builds of components (:mod:`mmedge.quantize.openvino_build`), which
    OpenVINO runs instead of their own files: such a component is timed again, onnxruntime running
    its own file against OpenVINO running the build, and the bundle carries the build where it is
    kept on OpenVINO (``chain.openvino``).
    """
    timed, used = dict(timed), {}
    for name, build in builds.items():
        again = _time(chain.versions[name], build, timed[name].feeds, threads=threads, policy=policy, name=name)
        if again is not None:
            timed[name], used[name] = Timed(again, timed[name].shapes, timed[name].feeds), build
    runs = {n: used.get(n, chain.versions[n]) for n in timed}  # the file OpenVINO runs of each
    faster = [n for n, t in timed.items() if t.test is not None and t.test.won and not t.test.tiny]
    faster.sort(key=lambda n: _saving(timed[n].test), reverse=True)
    bar = min(min_agreement, chain.score(chain.versions))
    kept: list[str] = []
    agreement: dict[str, float] = {}
    for name in faster:
        trial = [*kept, name]
        versions = {**chain.versions, **{n: runs[n] for n in trial}}
        agreement[name] = chain.score(versions, chain.holdout.on_openvino(frozenset(runs[n] for n in trial)))
        if agreement[name] >= bar:
            kept = trial
    chain.openvino = {n: used[n] for n in kept if n in used}
    return {
        name: _record(
            name,
            t.test,
            policy,
            shapes=t.shapes,
            threads=threads,
            agreement=agreement.get(name),
            bar=bar,
            chosen=name in kept,
            build=name in used,
        )
        for name, t in timed.items()
    }


def _time(
    path: Path, openvino_path: Path, feeds: dict, *, threads: int, policy: SpeedPolicy, name: str
) -> RatioTest | None:
    """The sequential test of ``path`` on onnxruntime against ``openvino_path`` on OpenVINO; None if
    OpenVINO cannot run it."""
    contenders = {ONNXRUNTIME: (path, ONNXRUNTIME), OPENVINO_BACKEND: (openvino_path, OPENVINO_BACKEND)}
    return timed_ratio(contenders, feeds, threads, policy, name)


def timed_ratio(
    contenders: Mapping[str, tuple[Path, str]],
    feeds: Mapping[str, np.ndarray],
    threads: int,
    policy: SpeedPolicy,
    name: str,
) -> RatioTest | None:
    """The sequential test of two contenders, label → (file, ``ONNXRUNTIME`` or ``OPENVINO_BACKEND``),
    the first the base; each run starts after ``IDLE_MS`` idle. None if one cannot run."""
    (base, _), (candidate, _) = contenders.items()
    try:
        rounds = interleaved_rounds(
            {label: path for label, (path, _) in contenders.items()},
            feeds,
            threads=threads,
            runs=policy.runs,
            error=QuantizationError,
            backends={label: OPENVINO for label, (_, b) in contenders.items() if b == OPENVINO_BACKEND},
            idle_s=IDLE_MS / 1e3,
        )
        try:
            return sequential_ratio(name, rounds, policy, base, candidate)
        finally:
            rounds.close()
    except QuantizationError:
        return None


def _saving(test: RatioTest | None) -> float:
    return 0.0 if test is None else test.base_ms - test.candidate_ms


def _record(
    name: str,
    test: RatioTest | None,
    policy: SpeedPolicy,
    *,
    shapes: str,
    threads: int,
    agreement: float | None,
    bar: float,
    chosen: bool,
    build: bool,
) -> BackendCheck:
    cpu = cpu_model_and_flags()[0]
    if test is None:
        why = "OpenVINO could not compile or run it; onnxruntime runs it"
        test = RatioTest.not_run()
    else:
        times = f"{test.candidate_ms:.3f} vs {test.base_ms:.3f} ms at {threads} threads, {shapes}"
        runs = "its OpenVINO build" if build else "it"
        faster = f"OpenVINO runs {runs} {test.interval(policy.confidence)} faster than onnxruntime ({times})"
        if test.tiny:
            why = (
                f"onnxruntime runs it in {test.base_ms:.3f} ms < {MIN_TIMED_MS} ms: too fast to matter; it stays there"
            )
        elif chosen:
            why = f"{faster}, and held-out agreement with FP32 stays {agreement:.2%} (≥ {bar:.2%}) with it there"
        elif agreement is not None:
            why = (
                f"{faster}, but held-out agreement with FP32 falls to {agreement:.2%} (< {bar:.2%}) with it "
                "there (its INT8 kernels round differently); onnxruntime runs it"
            )
        else:
            why = (
                f"OpenVINO is not measurably faster{' running its OpenVINO build' if build else ''}: "
                f"{test.interval(policy.confidence)} against the {policy.min_speedup}× threshold ({times}); "
                "onnxruntime runs it"
            )
    return BackendCheck(
        component=name,
        backend=OPENVINO_BACKEND if chosen else ONNXRUNTIME,
        timing=test,
        threads=threads,
        confidence=policy.confidence,
        threshold=policy.min_speedup,
        agreement=agreement,
        cpu=cpu,
        int8_instructions=int8_dot_instructions(),
        why=why,
    )
