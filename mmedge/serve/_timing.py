"""Run a Pipeline while timing each component, for the per-component latency metrics.

``Pipeline.run`` has no timing hook, so a predict call is run in two steps that do the same work:
every encoder through ``Pipeline.encode`` (concurrently, as ``run`` would, each timed with its
preprocessing), then the rest of the graph through ``Pipeline.run`` with those encoder outputs
passed as precomputed (timed under the head's name). Bundles where that split is not exact
(components fed by both raw inputs and other components, omittable inputs whose default fill
depends on the whole call) run as one ``Pipeline.run`` timed as ``pipeline``; the reason is kept
in :attr:`TimedPipeline.note` and shown by ``/v1/model``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import numpy as np

from mmedge.bundle import RAW_INPUTS, Manifest
from mmedge.errors import InputError

__all__ = ["PipelineLike", "TimedPipeline"]

Timings = dict[str, float]


class PipelineLike(Protocol):
    """What serving needs from :class:`mmedge.runtime.Pipeline`."""

    @property
    def manifest(self) -> Manifest: ...

    def run(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]: ...

    def encode(self, name: str, x: Any) -> dict[str, np.ndarray]: ...


def _encoders(manifest: Manifest) -> dict[str, tuple[str, ...]]:
    """Encoder components fed only by raw inputs, with those inputs' names."""
    fed: dict[str, set[str]] = {c.name: set() for c in manifest.components}
    upstream: dict[str, set[str]] = {c.name: set() for c in manifest.components}
    for e in manifest.wiring:
        (fed if e.source == RAW_INPUTS else upstream)[e.target].add(e.output if e.source == RAW_INPUTS else e.source)
    roles = {c.name: c.role for c in manifest.components}
    return {c: tuple(sorted(fed[c])) for c in fed if fed[c] and not upstream[c] and roles[c] == "encoder"}


def _split_problem(manifest: Manifest, encoders: Mapping[str, tuple[str, ...]]) -> str:
    """Why a predict call cannot be split into encoders + rest ('' when it can)."""
    output_components = {o.component for o in manifest.outputs}
    if not encoders:
        return "no component is fed by raw inputs alone"
    if output_components & encoders.keys():
        return "a model output comes straight from an encoder"
    mixed = sorted({e.target for e in manifest.wiring if e.source == RAW_INPUTS} - encoders.keys())
    if mixed:
        return f"components {mixed} take raw inputs and component outputs together"
    if any(i.default is not None for i in manifest.inputs):
        return "the bundle has omittable inputs, whose fill size depends on the whole call"
    return ""


class TimedPipeline:
    """``run`` and ``encode`` that also return seconds per component."""

    def __init__(self, pipeline: PipelineLike) -> None:
        self.pipeline = pipeline
        manifest = pipeline.manifest
        self._encoders = _encoders(manifest)
        problem = _split_problem(manifest, self._encoders)
        self.per_component = not problem
        rest = [c.name for c in manifest.components if c.name not in self._encoders]
        self._rest_label = "+".join(rest)
        self.note = "per component" if self.per_component else f"whole pipeline only: {problem}"
        width = len(self._encoders) if self.per_component else 0
        self._pool = ThreadPoolExecutor(width, thread_name_prefix="mmedge-serve-encoder") if width > 1 else None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def run(self, inputs: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], Timings]:
        """Model outputs (as ``Pipeline.run``) and seconds per component; keys are input names."""
        if not self.per_component:
            return _timed(self.pipeline.run, dict(inputs), label="pipeline")
        jobs = {c: {name: inputs[name] for name in names if name in inputs} for c, names in self._encoders.items()}
        if self._pool is None:
            done = {c: self._encode(c, x) for c, x in jobs.items()}
        else:
            futures = {c: self._pool.submit(self._encode, c, x) for c, x in jobs.items()}
            done = {c: f.result() for c, f in futures.items()}
        problems = [str(r) for r in done.values() if isinstance(r, InputError)]
        if problems:
            raise InputError(problems[0] if len(problems) == 1 else "\n".join(problems))
        provided = {f"{c}.{name}": value for c, (outputs, _) in done.items() for name, value in outputs.items()}
        outputs, rest = _timed(self.pipeline.run, provided, label=self._rest_label)
        return outputs, {c: seconds for c, (_, seconds) in done.items()} | rest

    def encode(self, component: str, inputs: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], Timings]:
        """One encoder's outputs and its seconds; ``inputs`` by raw input name."""
        return _timed(self.pipeline.encode, component, dict(inputs), label=component)

    def _encode(self, component: str, inputs: dict[str, Any]) -> tuple[dict[str, np.ndarray], float] | InputError:
        try:
            outputs, timings = _timed(self.pipeline.encode, component, inputs, label=component)
        except InputError as e:
            return e
        return outputs, timings[component]


def _timed(fn: Any, *args: Any, label: str) -> tuple[dict[str, np.ndarray], Timings]:
    started = time.perf_counter()
    result = fn(*args)
    return result, {label: time.perf_counter() - started}
