"""The file OpenVINO runs of an INT8 component: a static build laid out for OpenVINO's INT8 kernels.

Why: the INT8 files quantize writes are laid out for onnxruntime's kernels, and OpenVINO runs some
of them slowly. Dynamic INT8 (``DynamicQuantizeLinear`` + ``MatMulInteger``) is onnxruntime's fast
path for transformer and recurrent text encoders, and OpenVINO has none for it: ResNetBert's
BERT-style text encoder (4 layers, 768 wide, 32 tokens) runs 6.6 ms on onnxruntime and 15.8 ms on
OpenVINO. Static QDQ with U8 activations on every quantizable op suits onnxruntime's CPU kernels,
but leaves a transformer's Q/DQ pairs around ops OpenVINO keeps in FP32: a ViT image encoder's
static file ran 7.7 ms on OpenVINO, its build 3.8, NNCF's INT8 4.0. OpenVINO's INT8 kernels want
static activations with zero point 0 on the matrix products and convolutions (NNCF's layout):
static QDQ of MatMul/Gemm/Conv only (and Gather: embedding tables INT8), symmetric INT8
activations, per-channel INT8 weights, calibrated on the same samples (onnxruntime's CPU kernels,
which want U8 activations, run such a file at up to 38 ms: it is a build for OpenVINO only).
Numbers in ``benchmarks/NOTES.md``.

So each INT8 component onnxruntime runs in ``MIN_BUILD_MS`` or more is built again this way and
timed against its own file, both on OpenVINO, with the speed check's sequential test at the deploy
shape; where the build wins, OpenVINO runs the build: the backend check
(:mod:`mmedge.quantize.backend`) times it against the own file on onnxruntime, and the whole-graph
check (:mod:`mmedge.quantize.whole_graph`) composes the one graph from it. A build's accuracy is
judged where it runs: the held-out agreement with it on OpenVINO, alone or in the one graph. The
bundle carries a build (asset ``openvino_build:<component>``) where the component is kept on
OpenVINO or the one graph is chosen, and the runtime then runs it wherever that component runs on
OpenVINO (:meth:`mmedge.bundle.Bundle.openvino_path`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from mmedge.errors import QuantizationError
from mmedge.quantize._chain import Chain
from mmedge.quantize.backend import OPENVINO_BACKEND, Timed, timed_ratio
from mmedge.quantize.recipes import Recipe
from mmedge.quantize.report import OpenVINOBuild, RatioTest
from mmedge.quantize.speed import SpeedPolicy

__all__ = ["MIN_BUILD_MS", "OPENVINO_RECIPE", "openvino_builds"]

# A component onnxruntime runs faster than this has too little to save for a build (another
# calibration and two timings) to pay: it is not built.
MIN_BUILD_MS = 1.0

OPENVINO_RECIPE = Recipe(
    "static",
    per_channel=True,
    activation_type="int8",
    weight_type="int8",
    # Gather: the embedding tables stored INT8 as the dynamic file stores them (weights only in
    # effect: OpenVINO folds the table's DequantizeLinear at compile); without it a BERT-style
    # build keeps its vocabulary FP32 and is twice the dynamic file's size
    op_types=("MatMul", "Gemm", "Conv", "Gather"),
    activation_symmetric=True,
    reason="OpenVINO build: static QDQ of MatMul/Gemm/Conv/Gather, symmetric INT8 activations, per-channel INT8 "
    "weights",
)


def openvino_builds(
    chain: Chain, timed: Mapping[str, Timed], threads: int, policy: SpeedPolicy, say: Callable[[str], None]
) -> tuple[dict[str, Path], tuple[OpenVINOBuild, ...]]:
    """Build and time the OpenVINO build of each INT8 one of the ``timed`` components (those
    the backend check found onnxruntime running in ``MIN_BUILD_MS`` or more), at the deploy feeds
    the backend check timed them on.

    Returns the files of the builds that OpenVINO runs measurably faster, by component, and the
    record of every build tried.
    """
    candidates = [c for c in timed if chain.int8_built(c)]
    if not candidates:
        return {}, ()
    ops = "/".join(OPENVINO_RECIPE.op_types)
    say(f"building and timing OpenVINO builds of {', '.join(candidates)} (static symmetric INT8 {ops})")
    chosen: dict[str, Path] = {}
    records = []
    for name in candidates:
        own, mode = chain.versions[name], chain.recipes[name].mode
        try:
            path, _ = chain.build(name, recipe=OPENVINO_RECIPE)
        except QuantizationError as e:
            records.append(_record(name, None, f"it could not be built ({e}); OpenVINO runs its own file"))
            continue
        if path == chain.fp32[name]:
            say(f"{name}: no {ops} to quantize; its OpenVINO build is its FP32 file")
        feeds, shapes = timed[name].feeds, timed[name].shapes
        contenders = {"own": (own, OPENVINO_BACKEND), "build": (path, OPENVINO_BACKEND)}
        test = timed_ratio(contenders, feeds, threads, policy, name)
        if test is None:
            why = "OpenVINO could not run the build or the component's own file; OpenVINO runs its own file"
        else:
            times = f"{test.candidate_ms:.3f} vs {test.base_ms:.3f} ms on OpenVINO at {threads} threads, {shapes}"
            if test.won and not test.tiny:
                why = f"OpenVINO runs it {test.interval(policy.confidence)} faster than its {mode} INT8 file ({times})"
                chosen[name] = path
            else:
                why = (
                    f"not measurably {policy.min_speedup}× faster than its {mode} INT8 file on OpenVINO: "
                    f"{test.interval(policy.confidence)} ({times}); OpenVINO runs its own file"
                )
        records.append(_record(name, test, why, chosen=name in chosen))
    return chosen, tuple(records)


def _record(name: str, test: RatioTest | None, why: str, *, chosen: bool = False) -> OpenVINOBuild:
    if test is None:
        test = RatioTest.not_run()
    return OpenVINOBuild(component=name, chosen=chosen, recipe=OPENVINO_RECIPE.record(), timing=test, why=why)
