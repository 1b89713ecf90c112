"""The onnxruntime variants a benchmark worker runs: a split bundle (``Pipeline``) or one ONNX file.

A split bundle is timed through ``Pipeline.run`` with its ``trace`` hook, which records when
preprocessing, each component's session, the whole execution and postprocessing start and end;
:func:`pipeline_sample` turns those spans into the attribution. Hot spots come from separate
sessions with ORT profiling on, built with the same options as the pipeline's, so profiling
never slows down the timed runs.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmedge.bench._generate import first_token_feed, generation_sample
from mmedge.bench._profile import hotspots, ort_op_totals
from mmedge.bench._stats import RunTiming, Span
from mmedge.bench._types import MODEL_PART, Hotspots
from mmedge.bundle import MONOLITHIC_ASSET, load_bundle
from mmedge.errors import BundleError, InputError
from mmedge.graph import Graph
from mmedge.openvino_graph import MAX_SHAPES
from mmedge.providers import OPENVINO, resolve_providers
from mmedge.runtime.pipeline import Pipeline
from mmedge.sessions import SessionSettings, create_session, session_options

__all__ = ["OnnxRunner", "PipelineRunner", "import_onnxruntime", "load_variant", "pipeline_sample"]


def import_onnxruntime() -> None:
    import onnxruntime  # noqa: F401 - timed on its own: the framework's import cost


def load_variant(spec: Mapping[str, Any]) -> PipelineRunner | OnnxRunner:
    if spec["kind"] == "split":
        return PipelineRunner(spec)
    if spec["kind"] == "monolithic":
        return OnnxRunner(spec)
    raise BundleError(f"unknown benchmark variant kind {spec['kind']!r}")


def pipeline_sample(e2e_ns: int, spans: Sequence[Span], plan: Sequence[Sequence[str]]) -> RunTiming:
    """Attribute one ``Pipeline.run`` to preprocess, each component, copies between them and postprocess.

    Components of one stage run concurrently: the stage's wall time (first start to last end)
    is shared among them in proportion to their busy times. ``copies`` is the rest of the
    execution: gathering each component's inputs from earlier outputs and handing work to threads.
    """
    single = {kind: end - start for kind, _, start, end in spans if kind != "component"}
    inside = {name: (start, end) for kind, name, start, end in spans if kind == "component"}
    parts: list[tuple[str, str, int]] = [("preprocess", "preprocess", single.get("preprocess", 0))]
    windows = 0
    for stage in plan:
        ran = [(c, inside[c]) for c in stage if c in inside]
        if not ran:
            continue
        window = max(end for _, (_, end) in ran) - min(start for _, (start, _) in ran)
        busy = sum(end - start for _, (start, end) in ran) or 1
        parts += [(c, "component", window * (end - start) // busy) for c, (start, end) in ran]
        windows += window
    planned = {c for stage in plan for c in stage}
    for name, (start, end) in inside.items():  # a span of several components (one OpenVINO graph)
        if name not in planned:
            parts.append((name, "component", end - start))
            windows += end - start
    parts += [("copies", "copies", max(0, single.get("execute", 0) - windows))]
    parts += [("postprocess", "postprocess", single.get("postprocess", 0))]
    order = [c for stage in plan for c in stage if c in inside] + [c for c in inside if c not in planned]
    busy = {c: inside[c][1] - inside[c][0] for c in order}
    return RunTiming(e2e_ns, tuple(parts), busy)


_RECORDED = " (mmedge quantize measured it faster there on this kind of CPU: the manifest's quantization.backend)"
_RECORDED_WHOLE = (
    " (mmedge quantize measured it faster than the split plan on this kind of CPU: the manifest's whole_graph)"
)


class PipelineRunner:
    """A split bundle run through :class:`Pipeline`, as a user would."""

    def __init__(self, spec: Mapping[str, Any]) -> None:
        self._spans: list[Span] = []
        self._threads = int(spec["threads"])
        self._providers = spec["providers"]
        self.pipe = Pipeline(
            spec["path"],
            self._providers,
            threads=self._threads,
            trace=self._record,
            cache_dir=spec.get("cache_dir"),
            max_graph_shapes=spec.get("graph_shapes", MAX_SHAPES),
        )
        self._graph = Graph(self.pipe.manifest)
        self._plan = self._graph.full_plan
        self._decoder = self.pipe.manifest.generation.decoder if self.pipe.manifest.generation else None
        self._path = Path(spec["path"])
        placement = self.pipe.providers_used.values()
        self.precision = "+".join(sorted({c.precision for c in self.pipe.manifest.components}))
        self.providers = tuple(dict.fromkeys(p for c in placement for p in c.registered))
        # on disk, what inference reads: components, vocabularies, OpenVINO builds (not a monolithic
        # baseline), from the sizes the manifest records: reading the files here would count in this
        # variant's start-up time and peak memory
        manifest = self.pipe.manifest
        self.size_bytes = sum(c.size_bytes for c in manifest.components) + sum(
            a.size_bytes for a in manifest.assets if a.name != MONOLITHIC_ASSET
        )
        whole = self.pipe.whole_graph
        on_openvino = [c.component for c in placement if OPENVINO in c.registered and c.component not in whole]
        why = "" if isinstance(self._providers, Mapping) else _RECORDED
        self.notes = tuple(f"{c.component}: {note}" for c in placement for note in c.fallbacks) + tuple(
            f"{name}: on the OpenVINO runtime{why}" for name in on_openvino
        )
        if whole:
            chosen = bool((self.pipe.manifest.whole_graph or {}).get("chosen"))
            asked = str(self._providers).lower() in ("auto", "cpu")  # a policy dict, or a named provider: as asked
            recorded = _RECORDED_WHOLE if chosen and asked else ""
            self.notes += (f"{', '.join(whole)}: one OpenVINO graph, one request per call{recorded}",)
        self._on_openvino = bool(on_openvino or whole)

    def _record(self, kind: str, name: str, start: int, end: int) -> None:
        self._spans.append((kind, name, start, end))  # list.append is atomic: encoder threads call this too

    def run(self, feeds: Mapping[str, np.ndarray]) -> RunTiming:
        self._spans.clear()
        start = time.perf_counter_ns()
        if self._decoder is not None:  # a captioner: time the whole generation
            self.pipe.generate(feeds)
            return generation_sample(time.perf_counter_ns() - start, list(self._spans), self._decoder)
        self.pipe.run(feeds)
        e2e = time.perf_counter_ns() - start
        return pipeline_sample(e2e, list(self._spans), self._plan)

    def outputs(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """The model outputs in the manifest's order (for the agreement with PyTorch)."""
        found = self.pipe.run(feeds)
        return [found[o.name] for o in self.pipe.manifest.outputs]

    def profile(self, feeds: Mapping[str, np.ndarray], runs: int) -> list[Hotspots]:
        """Run each component ``runs`` times in profiled sessions, fed like the pipeline feeds it.

        A bundle with a component on another backend (a per-component policy, or the OpenVINO
        runtime quantize recorded for it) is not profiled: onnxruntime's profiler would time the
        CPU EP's kernels, not the ones that ran."""
        if isinstance(self._providers, Mapping) or self._on_openvino:
            return []
        manifest = self.pipe.manifest
        found = []
        with tempfile.TemporaryDirectory(prefix="mmedge-bench-") as tmp:
            values: dict[str, dict[str, np.ndarray]] = {}
            for stage in self._plan:
                for name in stage:
                    threads = max(1, self._threads // len(stage))  # the Pipeline's split of the budget
                    session = _profiled_session(
                        self._path / manifest.component(name).file, name, threads, tmp, self._providers
                    )
                    feed = self._graph.feeds(name, feeds, values) | first_token_feed(
                        manifest, name, len(next(iter(feeds.values())))
                    )
                    for _ in range(runs):
                        out = session.run(None, feed)
                    values[name] = dict(zip((o.name for o in session.get_outputs()), out, strict=True))
                    found.append(hotspots(name, *ort_op_totals(Path(session.end_profiling()))))
        return found


class OnnxRunner:
    """One ONNX file (the monolithic export) in one session with the pipeline's session options."""

    def __init__(self, spec: Mapping[str, Any]) -> None:
        self._path = Path(spec["path"])
        self._threads = int(spec["threads"])
        self._providers = spec["providers"]
        plan = resolve_providers(self._providers)
        options = session_options(MODEL_PART, self._threads, SessionSettings())
        self.session = create_session(self._path, options, providers=plan.providers)
        expected = [i.name for i in load_bundle(spec["bundle"], check_hashes=False).manifest.inputs]
        found = [i.name for i in self.session.get_inputs()]
        if sorted(found) != sorted(expected):
            raise InputError(f"{self._path.name} takes inputs {found}, but the bundle's inputs are {expected}")
        self.precision = spec.get("precision", "fp32")
        self.providers = tuple(self.session.get_providers())
        self.size_bytes = self._path.stat().st_size
        self.notes = plan.fallbacks

    def run(self, feeds: Mapping[str, np.ndarray]) -> RunTiming:
        start = time.perf_counter_ns()
        self.session.run(None, dict(feeds))
        e2e = time.perf_counter_ns() - start
        return RunTiming(e2e, ((MODEL_PART, "component", e2e),), {MODEL_PART: e2e})

    def outputs(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """The graph's outputs in its order (an exported whole model keeps the manifest's order)."""
        return list(self.session.run(None, dict(feeds)))

    def profile(self, feeds: Mapping[str, np.ndarray], runs: int) -> list[Hotspots]:
        with tempfile.TemporaryDirectory(prefix="mmedge-bench-") as tmp:
            session = _profiled_session(self._path, MODEL_PART, self._threads, tmp, self._providers)
            for _ in range(runs):
                session.run(None, dict(feeds))
            return [hotspots(MODEL_PART, *ort_op_totals(Path(session.end_profiling())))]


def _profiled_session(path: Path, name: str, threads: int, directory: str, providers: Any) -> Any:
    options = session_options(name, threads, SessionSettings())
    options.enable_profiling = True
    options.profile_file_prefix = str(Path(directory) / name)
    return create_session(path, options, providers=resolve_providers(providers).providers)
