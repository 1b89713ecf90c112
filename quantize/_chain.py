"""The working state of one ``quantize_bundle`` call: quantize components in wiring order.

Chained calibration: a component is calibrated on the outputs of its upstream components *as
quantized*, so the head's ranges are those it will see in the INT8 bundle, not the FP32
ones. A change to one component (a fallback round) therefore re-quantizes it and everything
downstream. Every quantized file gets a fresh name so that cached outputs never go stale.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from mmedge.bundle import Manifest, OutputSpec
from mmedge.errors import QuantizationError
from mmedge.graph import Graph
from mmedge.quantize._apply import QuantizerError, StepError, apply, excluded_nodes
from mmedge.quantize._generation import caption_spec, compare_captions
from mmedge.quantize._isolation import without_step
from mmedge.quantize._metrics import AGREEMENT_KINDS, agreement, compare
from mmedge.quantize._samples import SampleExecutor
from mmedge.quantize.calibration import SampleReader
from mmedge.quantize.recipes import Recipe, quantized_ops
from mmedge.quantize.report import StepFailure, TensorComparison

__all__ = ["Chain", "OutputResult"]


@dataclass(frozen=True)
class OutputResult:
    """One model output compared end to end."""

    spec: OutputSpec
    metric: str
    agreement: float
    comparison: TensorComparison
    fp32: list[np.ndarray]
    quantized: list[np.ndarray]


@dataclass
class Chain:
    """Files, recipes and current quantized versions of every component."""

    manifest: Manifest
    fp32: dict[str, Path]  # the source bundle's files: the reference, and what fp32 recipes copy
    prepared: dict[str, Path]  # named + pre-processed FP32 files the quantizers read
    recipes: dict[str, Recipe]  # components absent here are copied unchanged (already quantized)
    work: Path
    method: str
    calibration: SampleExecutor
    holdout: SampleExecutor
    versions: dict[str, Path] = field(default_factory=dict)  # current file of each component
    excluded: dict[str, dict[str, str]] = field(default_factory=dict)  # node -> why, per component
    kept: dict[str, dict[str, str]] = field(default_factory=dict)  # fallback exclusions, node -> why
    failures: dict[str, list[StepFailure]] = field(default_factory=dict)  # steps that raised, per component
    strict: bool = False  # a step that raises is an error, not retried without it (mmedge.quantize._isolation)
    openvino: dict[str, Path] = field(default_factory=dict)  # OpenVINO builds the bundle carries (whole_graph)
    _models: dict[str, onnx.ModelProto] = field(default_factory=dict)
    _counter: itertools.count = field(default_factory=itertools.count)

    @property
    def graph(self) -> Graph:
        """The bundle's wiring graph (the one the executors run by)."""
        return self.calibration.graph

    def quantizes(self, component: str) -> bool:
        recipe = self.recipes.get(component)
        return recipe is not None and recipe.mode != "fp32"

    def int8_built(self, component: str, modes: tuple[str, ...] = ("static", "dynamic")) -> bool:
        """Whether this call quantized ``component`` to INT8 by one of ``modes`` (a file of its own, not
        the FP32 one) and the wiring feeds it, so it can be timed from raw samples."""
        recipe = self.recipes.get(component)
        return (
            recipe is not None
            and recipe.mode in modes
            and self.versions[component] != self.fp32[component]
            and self.graph.fed_by_wiring(component)
        )

    def model(self, component: str) -> onnx.ModelProto:
        """The prepared FP32 graph of ``component`` (node names match the quantized files)."""
        if component not in self._models:
            self._models[component] = onnx.load(str(self.prepared[component]))
        return self._models[component]

    def build(
        self, component: str, extra: Mapping[str, str] | None = None, recipe: Recipe | None = None
    ) -> tuple[Path, dict[str, str]]:
        """Quantize ``component`` against the current upstream versions; a new file and its exclusions.

        ``extra`` are further nodes to keep FP32 (a fallback candidate), on top of ``kept``.
        ``recipe``: instead of the component's own (another backend's build of it).
        """
        if recipe is None and not self.quantizes(component):
            return self.fp32[component], {}
        recipe = recipe or self.recipes[component]
        exclude = excluded_nodes(self.model(component), recipe, {**self.kept.get(component, {}), **(extra or {})})
        out = self.new_path(component)
        samples = cache = None
        if recipe.mode == "static":
            samples = SampleReader(self.calibration.feeds(self.versions, component))
            cache = self.work / f"{component}.{self._upstream_digest(component)}.ranges.json"
        apply(
            recipe,
            self.prepared[component],
            out,
            exclude=list(exclude),
            samples=samples,
            method=self.method,
            cache=cache,
        )
        if recipe.mode != "fp16" and not quantized_ops(onnx.load(str(out), load_external_data=False)):
            out.unlink()  # the mode supports no op of this graph: keep the untouched FP32 file
            return self.fp32[component], exclude
        return out, exclude

    def new_path(self, component: str) -> Path:
        """A fresh file name for a version of ``component`` (cached outputs are keyed by path)."""
        return self.work / f"{component}.{next(self._counter)}.onnx"

    def discard(self, path: Path) -> None:
        """Forget a candidate file: its sessions and cached outputs, and the file if it is ours."""
        self.calibration.release(path)
        self.holdout.release(path)
        if path.parent == self.work and path not in self.versions.values():
            path.unlink(missing_ok=True)

    def rebuild(self, start: str | None = None) -> None:
        """Re-quantize ``start`` and everything downstream of it (everything when None), in order."""
        affected = None if start is None else {start} | self.graph.downstream(start)
        for c in self.graph.order():
            if affected is None or c in affected:
                self.versions[c], self.excluded[c] = self._isolated_build(c)

    def _isolated_build(self, component: str) -> tuple[Path, dict[str, str]]:
        """``build``; where a step raises, again without it, or FP32 (each recorded in ``failures``).

        Ends: a calibration failure retries once as dynamic INT8, anything else turns FP32, which builds nothing.
        """
        while True:
            try:
                path, excluded = self.build(component)
                self._check_runs(component, path)
            except StepError as e:
                self.recipes[component], failure = without_step(
                    component, self.recipes[component], e, strict=self.strict
                )
                self.failures.setdefault(component, []).append(failure)
            else:
                return path, excluded

    def _check_runs(self, component: str, path: Path) -> None:
        """A quantized graph that onnxruntime cannot load or run on a calibration sample failed quantization."""
        if path == self.fp32[component] or not self.graph.fed_by_wiring(component):
            return
        feeds = self.calibration.feeds(self.versions, component)  # upstream outputs: cached, and not ours to blame
        try:
            for feed in feeds[:1]:
                self.calibration.run(component, path, feed)
        except QuantizationError as e:
            self.discard(path)
            raise QuantizerError(f"quantizing {component!r}: the quantized graph does not run: {e}") from e

    def calibrated_on(self, component: str) -> str:
        """Where ``component``'s calibration inputs came from, for the report."""
        if not self.quantizes(component) or self.recipes[component].mode != "static":
            return ""
        sources = self.calibration.upstream(component)
        if not sources:
            return "raw inputs"
        return "outputs of " + ", ".join(f"{u} ({'quantized' if self.quantizes(u) else 'FP32'})" for u in sources)

    def evaluable(self) -> list[OutputSpec]:
        """Model outputs whose component (and its upstream) can run from raw samples, and the
        generated caption of a bundle with a decoder (scored by whole-caption exact match)."""
        caption = caption_spec(self.manifest)
        runnable = [o for o in self.manifest.outputs if self._runnable(o.component)]
        return runnable + ([caption] if caption else [])

    def end_to_end(
        self,
        versions: Mapping[str, Path],
        executor: SampleExecutor | None = None,
        produced: Sequence[Mapping[tuple[str, str], np.ndarray]] | None = None,
    ) -> list[OutputResult]:
        """Every evaluable model output of ``versions`` against the FP32 bundle.

        ``produced``: per held-out sample, the outputs by (component, tensor) that something else
        computed (the components as one OpenVINO graph), scored instead of running ``versions``.
        """
        executor = executor or self.holdout
        results = []
        for spec in self.evaluable():
            if spec == caption_spec(self.manifest):
                results.append(
                    OutputResult(spec, "exact", *compare_captions(self.manifest, executor, self.fp32, versions))
                )
                continue
            ref = [o[spec.tensor] for o in executor.outputs(self.fp32, spec.component)]
            if produced is None:
                test = [o[spec.tensor] for o in executor.outputs(versions, spec.component)]
            else:
                test = [o[(spec.component, spec.tensor)] for o in produced]
            comparison = compare(spec.tensor, ref, test)
            metric = AGREEMENT_KINDS.get(spec.kind, "cosine")
            value = comparison.cosine if metric == "cosine" else agreement(spec.kind, ref, test)
            results.append(OutputResult(spec, metric, value, comparison, ref, test))
        return results

    def score(
        self,
        versions: Mapping[str, Path],
        executor: SampleExecutor | None = None,
        produced: Sequence[Mapping[tuple[str, str], np.ndarray]] | None = None,
    ) -> float:
        """The fallback criterion: mean agreement of the discrete outputs (mean cosine if none)."""
        results = self.end_to_end(versions, executor, produced)
        discrete = [r.agreement for r in results if r.metric != "cosine"] or [r.agreement for r in results]
        return float(np.mean(discrete)) if discrete else math.nan

    def only(self, component: str, path: Path | None = None) -> dict[str, Path]:
        """FP32 everywhere except ``component`` (its current, or the given, quantized file)."""
        return {**self.fp32, component: path or self.versions[component]}

    def _upstream_digest(self, component: str) -> str:
        key = tuple(self.calibration.key(self.versions, u) for u in self.calibration.upstream(component))
        return hashlib.sha256(repr(key).encode()).hexdigest()[:12]

    def _runnable(self, component: str) -> bool:
        """Whether raw samples drive ``component``: the wiring feeds it and everything it needs."""
        return all(self.graph.fed_by_wiring(c) for c in self.graph.needed([component]))
