"""``quantize_bundle``: an FP32 bundle in, an INT8 bundle with an accuracy report out.

Steps: load and check the bundle (an already-quantized bundle is refused); read and validate
calibration and held-out samples; pre-process each component and pick its recipe; quantize in
wiring order with chained calibration; measure against FP32 on the held-out samples; while
agreement is below ``min_agreement``, keep the most damaging tensors FP32 (fallback rounds);
write the bundle atomically with precision, recipe record, verification and report.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from mmedge.bundle import Bundle, check_replaceable, load_bundle, scratch_directory
from mmedge.errors import QuantizationError
from mmedge.graph import Graph
from mmedge.quantize._apply import METHODS
from mmedge.quantize._chain import Chain
from mmedge.quantize._isolation import prepare_all
from mmedge.quantize._report_build import build_report, write_bundle
from mmedge.quantize._samples import SampleExecutor
from mmedge.quantize.backend import check_backends, slow_enough, time_backends
from mmedge.quantize.calibration import Sample, collect_samples
from mmedge.quantize.fallback import fallback_round, keep_component_fp32
from mmedge.quantize.openvino_build import MIN_BUILD_MS, openvino_builds
from mmedge.quantize.recipes import Recipe, auto_components, quantized_ops, resolve_recipes
from mmedge.quantize.report import FallbackRound, QuantizationReport
from mmedge.quantize.saturation import fix_saturation
from mmedge.quantize.speed import SpeedPolicy, check_speed
from mmedge.quantize.whole_graph import check_whole_graph
from mmedge.sessions import default_thread_budget

__all__ = ["AccuracyWarning", "quantize_bundle"]

HOLDOUT_FRACTION = 0.2  # of the calibration samples, when no holdout is given


class AccuracyWarning(UserWarning):
    """The quantized bundle misses the agreement target (the report says why)."""


def quantize_bundle(
    bundle: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    calibration: Any,
    recipe: str | Recipe | Mapping[str, str | Recipe] = "auto",
    method: str = "minmax",
    holdout: Any = None,
    labels: Any = None,
    min_agreement: float = 0.99,
    max_fallback_rounds: int = 4,
    strict: bool = False,
    speed_check: bool | SpeedPolicy = True,
    progress: Callable[[str], None] | None = None,
    force: bool = False,
) -> QuantizationReport:
    """Quantize the bundle at ``bundle`` into a new bundle at ``out`` and return the report.

    ``calibration`` and ``holdout``: a directory of ``.npz`` files (one sample each, keys = raw
    input names), an iterable of input dicts, or a ``CalibrationDataReader``. Without
    ``holdout``, the last 20% of the calibration samples are held out (not calibrated on) for
    the report. ``labels`` (one int per held-out example, in order) adds task accuracy.
    ``recipe``: "auto", a mode ("static", "dynamic", "fp16", "fp32"), a :class:`Recipe`, or a
    dict of those per component. ``method``: "minmax", "entropy" or "percentile". Below
    ``min_agreement`` (end-to-end top-1 agreement with FP32), up to ``max_fallback_rounds``
    rounds keep sensitive tensors FP32; if still below, whole components are kept FP32 (the most
    damaging first) when that reaches it with some component still quantized; else an
    :class:`AccuracyWarning` is issued (``strict=True``: a :class:`QuantizationError`, and nothing
    is written). ``max_fallback_rounds=0`` turns every fallback off. A component whose
    pre-processing, calibration or quantization raises is retried without that step where that is
    sound (no ``quant_pre_process``; dynamic instead of calibrated static INT8), else kept FP32; the
    report (``ComponentReport.failures``) and the manifest say why (``strict=True``: an error). ``speed_check``:
    components with an "auto" recipe stay FP32 where their quantized graph is not measurably faster on
    this CPU (timed interleaved with FP32 at the deploy shape until a confidence interval decides, or
    a cap: see :mod:`mmedge.quantize.speed`; a :class:`SpeedPolicy` sets threshold and caps); with
    ``openvino`` installed, each INT8 component is also timed on the OpenVINO runtime, and recorded to
    run there where that is measurably faster and held-out agreement holds (:mod:`mmedge.quantize.backend`),
    then the components together as one OpenVINO graph against that split plan, recorded the same way
    (:mod:`mmedge.quantize.whole_graph`). An existing ``out`` is replaced only if it is an mmedge bundle (``force=True``: any folder); that is checked first.
    The output carries only what inference needs: not the source's monolithic ``model.onnx``
    (benchmark against it with ``bench(out, compare=[bundle])``); the report's ``bundle_size_*``
    are sizes on disk.
    """
    _check_options(method, min_agreement, max_fallback_rounds)
    check_replaceable(out, force=force)
    say = progress or (lambda _message: None)
    src = load_bundle(bundle)
    manifest = src.manifest
    originals = {
        c.name: onnx.load(str(src.component_path(c.name)), load_external_data=False) for c in manifest.components
    }
    unchanged = _already_quantized(src, originals)
    _check_recipe_targets(recipe, unchanged)
    # Fail on a bad recipe now, not after minutes of work; auto choices are made again below on
    # the pre-processed graphs (constants folded).
    requested = resolve_recipes(recipe, {name: m for name, m in originals.items() if name not in unchanged})
    kept_fp32 = {n for n, r in requested.items() if r.mode == "fp32" and n not in auto_components(recipe, requested)}
    del originals
    say("reading calibration samples")
    calib = collect_samples(calibration, manifest, "calibration")
    held, calib, labels, holdout_note = _split_holdout(holdout, calib, labels, manifest)
    calib, held, paired_note = _paired_batches(manifest, calib, held)
    holdout_note = "; ".join(filter(None, (holdout_note, paired_note)))
    with scratch_directory("quantize") as tmp:
        work = Path(tmp)
        prepared, failures = prepare_all(
            ((c.name, src.component_path(c.name)) for c in manifest.components if c.name not in unchanged),
            work,
            fp32=kept_fp32,
            strict=strict,
            say=say,
        )
        recipes = resolve_recipes(recipe, {name: onnx.load(str(p)) for name, p in prepared.items()})
        fp32 = {c.name: src.component_path(c.name) for c in manifest.components}
        graph = Graph(manifest)
        calibration, holdout = SampleExecutor(graph, calib), SampleExecutor(graph, held)
        chain = Chain(manifest, fp32, prepared, recipes, work, method, calibration, holdout)
        chain.versions = dict(fp32)
        chain.failures, chain.strict = failures, strict
        say("quantizing components (chained calibration)")
        chain.rebuild()
        saturation = fix_saturation(chain, say)
        speed, backends, whole_graph = {}, {}, None
        policy = speed_check if isinstance(speed_check, SpeedPolicy) else SpeedPolicy()
        if speed_check:
            say("timing each quantized component against FP32")
            speed = check_speed(chain, auto_components(recipe, prepared), default_thread_budget(), policy)
        rounds, notes = _fallback(chain, min_agreement, max_fallback_rounds, say)
        if speed_check:
            threads = default_thread_budget()
            timed = time_backends(chain, threads, policy, say)
            builds = openvino_builds(chain, slow_enough(timed, MIN_BUILD_MS), threads, policy, say)
            backends = check_backends(
                chain, timed, builds[0], threads=threads, policy=policy, min_agreement=min_agreement
            )
            whole_graph = check_whole_graph(
                chain,
                backends=backends,
                builds=builds,
                threads=threads,
                policy=policy,
                min_agreement=min_agreement,
                say=say,
            )
        say("measuring against FP32")
        report = build_report(
            chain,
            src,
            out,
            unchanged=unchanged,
            labels=labels,
            min_agreement=min_agreement,
            rounds=rounds,
            holdout_source=holdout_note,
            notes=[*saturation, *notes],
            speed=speed,
            backends=backends,
            whole_graph=whole_graph,
        )
        if strict and not report.met:
            raise QuantizationError(_missed(report))
        say(f"writing {out}")
        report = write_bundle(chain, src, out, report, force=force)
    if not report.met:
        warnings.warn(_missed(report), AccuracyWarning, stacklevel=2)
    return report


def _check_options(method: str, min_agreement: float, max_fallback_rounds: int) -> None:
    problems = []
    if method not in METHODS:
        problems.append(f"method {method!r} is not one of {METHODS}")
    if not 0.0 <= min_agreement <= 1.0:
        problems.append(f"min_agreement must be a fraction in [0, 1], got {min_agreement}")
    if max_fallback_rounds < 0:
        problems.append(f"max_fallback_rounds must be >= 0, got {max_fallback_rounds}")
    if problems:
        raise QuantizationError("; ".join(problems))


def _already_quantized(src: Bundle, models: Mapping[str, onnx.ModelProto]) -> dict[str, str]:
    """Components to copy unchanged (already INT8/FP16), with why; all of them is an error."""
    found = {}
    for c in src.manifest.components:
        ops = quantized_ops(models[c.name])
        if c.precision != "fp32":
            found[c.name] = f"already {c.precision} in the source bundle; copied unchanged"
        elif ops:
            found[c.name] = f"graph already has quantization ops ({', '.join(ops)}); copied unchanged"
    if len(found) == len(src.manifest.components):
        listing = "; ".join(f"{name}: {why.split(';')[0]}" for name, why in found.items())
        raise QuantizationError(
            f"bundle {src.path} is already quantized ({listing}). Quantize the FP32 bundle that `mmedge export` wrote."
        )
    return found


def _check_recipe_targets(recipe: Any, unchanged: Mapping[str, str]) -> None:
    if isinstance(recipe, Mapping):
        clash = sorted(set(recipe) & set(unchanged))
        if clash:
            raise QuantizationError(
                f"recipe given for {clash}, which cannot be quantized again ({unchanged[clash[0]].split(';')[0]}); "
                "drop them from the recipe or quantize the FP32 bundle"
            )


def _split_holdout(
    holdout: Any, calib: list[Sample], labels: Any, manifest: Any
) -> tuple[list[Sample], list[Sample], Any, str]:
    """(held-out samples, calibration samples, labels of the held-out examples, a note for the report)."""
    if holdout is not None:
        held = collect_samples(holdout, manifest, "holdout")
        return held, calib, labels, f"{len(held)} held-out samples given by the caller"
    if len(calib) < 2:
        raise QuantizationError(
            f"need at least 2 calibration samples to hold some out for the report, found {len(calib)}; "
            "give more samples or pass holdout="
        )
    n_held = max(1, round(len(calib) * HOLDOUT_FRACTION))
    cut = len(calib) - n_held
    if labels is not None:
        examples = sum(_examples(s) for s in calib[:cut])
        labels = np.asarray(labels).reshape(-1)[examples:]
    note = (
        f"no holdout given: the last {n_held} of {len(calib)} calibration samples were held out and not calibrated on"
    )
    return calib[cut:], calib[:cut], labels, note


def _paired_batches(manifest: Any, calib: list[Sample], held: list[Sample]) -> tuple[list[Sample], list[Sample], str]:
    """Calibration and held-out samples as one batch each where an output pairs every row with every
    other (a CLIP-style similarity matrix): scored one sample at a time, a one-example sample gives a
    1×1 matrix whose top-1 always agrees, so the accuracy check would pass whatever INT8 did. As one
    batch, each row's top-1 picks among all the samples' items (retrieval among them)."""
    paired = manifest.paired_outputs()
    if not paired:
        return calib, held, ""
    names = ", ".join(map(repr, paired))
    stacked = [_stacked(samples) for samples in (calib, held)]
    if stacked[0] is None or stacked[1] is None:
        return (
            calib,
            held,
            (
                f"output(s) {names} pair every row with every other, but the samples differ in shape and are scored "
                "one at a time: give samples of one shape so each row is scored against all of them"
            ),
        )
    return (
        [stacked[0]],
        [stacked[1]],
        (
            f"output(s) {names} pair every row with every other: the {_examples(stacked[1])} held-out examples are "
            f"scored as one batch (and the {_examples(stacked[0])} calibration examples calibrate as one), each row "
            "against all of them"
        ),
    )


def _stacked(samples: list[Sample]) -> Sample | None:
    """The samples as one batch, or None where their inputs or per-row shapes differ."""
    names = set(samples[0])
    first = samples[0]
    if any(
        set(s) != names or any(s[n].ndim == 0 or s[n].shape[1:] != first[n].shape[1:] for n in names) for s in samples
    ):
        return None
    return {n: np.concatenate([s[n] for s in samples]) for n in samples[0]}


def _examples(sample: Sample) -> int:
    """Examples in one sample: its batch size (first dim of its first input)."""
    first = next(iter(sample.values()))
    return int(first.shape[0]) if first.ndim else 1


def _fallback(
    chain: Chain, min_agreement: float, max_rounds: int, say: Callable[[str], None]
) -> tuple[list[FallbackRound], list[str]]:
    """Fallback rounds until the agreement target is met, then a whole component kept FP32 if
    the rounds fall short and that reaches it; the rounds and an explanation."""
    score = chain.score(chain.versions)
    rounds: list[FallbackRound] = []
    if np.isnan(score):
        return rounds, ["no model output can be computed from raw samples, so agreement was not measured"]
    stopped = ""
    while score < min_agreement and len(rounds) < max_rounds:
        say(f"fallback round {len(rounds) + 1}: agreement {score:.2%} < {min_agreement:.2%}")
        done, why = fallback_round(chain, len(rounds) + 1, score)
        if done is None:
            stopped = f"fallback stopped at {score:.2%}: {why}"
            break
        rounds.append(done)
        score = done.agreement_after
    if score < min_agreement:
        stopped = stopped or (
            f"agreement {score:.2%} is still below {min_agreement:.2%} after {len(rounds)} fallback rounds "
            "(max_fallback_rounds)"
        )
        reverted = keep_component_fp32(chain, min_agreement) if max_rounds else None
        if reverted is None:
            return rounds, [stopped]
        say(reverted)
        return rounds, [
            f"{stopped}; then {reverted}; held-out agreement {score:.2%} → {chain.score(chain.versions):.2%}"
        ]
    if rounds:
        return rounds, [f"{len(rounds)} fallback round(s) raised agreement to {score:.2%}"]
    return rounds, []


def _missed(report: QuantizationReport) -> str:
    return (
        f"quantized bundle agrees with FP32 on {report.agreement:.2%} of held-out predictions, below "
        f"min_agreement {report.min_agreement:.2%}. " + " ".join(report.notes) + " Try method='entropy' or "
        "'percentile', more calibration samples, more fallback rounds, or recipe='dynamic' for the worst component."
    )
