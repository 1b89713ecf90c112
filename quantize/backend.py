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
   stay there);
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

__all__ = ["IDLE_MS", "ONNXRUNTIME", "OPENVINO_BACKEND", "check_backends", "timed_ratio"]

ONNXRUNTIME = "onnxruntime"
OPENVINO_BACKEND = "openvino"  # the manifest's name for it (the provider short name)
# Idle time before each timed run, so each starts with the runtime's threads asleep as a request
# does; back-to-back runs favour OpenVINO where a benchmark of whole requests does not (benchmarks/NOTES.md).
IDLE_MS = 5.0


def check_backends(
    chain: Chain, threads: int, policy: SpeedPolicy, min_agreement: float, say: Callable[[str], None]
) -> dict[str, BackendCheck]:
    """Time every INT8 component on onnxruntime and OpenVINO; keep OpenVINO where faster and as accurate."""
    candidates = [c for c in chain.graph.order() if chain.int8_built(c)]
    if not candidates or not openvino_available():
        return {}
    say("timing each INT8 component on onnxruntime and on OpenVINO")
    deploy = SampleExecutor(chain.graph, [deploy_sample(chain.calibration.samples[0], chain.manifest.inputs)])
    timed: dict[str, tuple[RatioTest | None, str]] = {}
    for name in candidates:
        feeds = deploy.feeds(chain.versions, name)[0]
        shapes = "input " + shapes_text({k: tuple(int(d) for d in np.shape(v)) for k, v in feeds.items()})
        timed[name] = (_time(chain.versions[name], feeds, threads, policy, name), shapes)
    faster = [n for n, (t, _) in timed.items() if t is not None and t.won and not t.tiny]
    faster.sort(key=lambda n: _saving(timed[n][0]), reverse=True)
    bar = min(min_agreement, chain.score(chain.versions))
    on_openvino: frozenset[Path] = frozenset()
    agreement: dict[str, float] = {}
    for name in faster:
        trial = on_openvino | {chain.versions[name]}
        agreement[name] = chain.score(chain.versions, chain.holdout.on_openvino(trial))
        if agreement[name] >= bar:
            on_openvino = trial
    chosen = {n for n in faster if chain.versions[n] in on_openvino}
    return {
        name: _record(
            name,
            test,
            policy,
            shapes=shapes,
            threads=threads,
            agreement=agreement.get(name),
            bar=bar,
            chosen=name in chosen,
        )
        for name, (test, shapes) in timed.items()
    }


def _time(path: Path, feeds: dict, threads: int, policy: SpeedPolicy, name: str) -> RatioTest | None:
    """The sequential test of ``path`` on onnxruntime against OpenVINO; None if OpenVINO cannot run it."""
    contenders = {ONNXRUNTIME: (path, ONNXRUNTIME), OPENVINO_BACKEND: (path, OPENVINO_BACKEND)}
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
) -> BackendCheck:
    cpu = cpu_model_and_flags()[0]
    if test is None:
        why = "OpenVINO could not compile or run it; onnxruntime runs it"
        test = RatioTest.not_run()
    else:
        times = f"{test.candidate_ms:.3f} vs {test.base_ms:.3f} ms at {threads} threads, {shapes}"
        faster = f"OpenVINO runs it {test.interval(policy.confidence)} faster than onnxruntime ({times})"
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
                f"OpenVINO is not measurably faster: {test.interval(policy.confidence)} against the "
                f"{policy.min_speedup}× threshold ({times}); onnxruntime runs it"
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
