"""Run a bundle's components with onnxruntime over a fixed list of samples, with caching.

Quantization needs the same samples pushed through many mixes of FP32 and quantized
components: chained calibration (a head calibrated on the quantized encoders' outputs), the
per-component and end-to-end report, and every candidate of a fallback round. :class:`Runner`
caches each component's outputs under the exact files that produced them (its own and all its
upstream components'), so a change to the head never re-runs the encoders. This is a small
private executor on purpose: quantize must not depend on the runtime package.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmedge.bundle import RAW_INPUTS, Component, InputSpec, Manifest
from mmedge.errors import QuantizationError, translated

__all__ = ["Runner", "downstream", "fed_by_wiring", "topological", "upstream"]

Outputs = dict[str, np.ndarray]


def topological(manifest: Manifest) -> list[Component]:
    """Components ordered so that every component comes after the components feeding it."""
    remaining = {c.name: c for c in manifest.components}
    done: list[Component] = []
    while remaining:
        ready = [c for c in remaining.values() if all(u in {d.name for d in done} for u in upstream(manifest, c.name))]
        if not ready:
            raise QuantizationError(f"the wiring of components {sorted(remaining)} has a cycle; re-export the bundle")
        done.extend(remaining.pop(c.name) for c in ready)
    return done


def upstream(manifest: Manifest, component: str) -> list[str]:
    """The components whose outputs feed ``component`` (not raw inputs), sorted."""
    return sorted({e.source for e in manifest.edges_into(component) if e.source != RAW_INPUTS})


def downstream(manifest: Manifest, component: str) -> set[str]:
    """The components that depend, directly or not, on ``component``."""
    found: set[str] = set()
    frontier = [component]
    while frontier:
        current = frontier.pop()
        for e in manifest.wiring:
            if e.source == current and e.target not in found:
                found.add(e.target)
                frontier.append(e.target)
    return found


def fed_by_wiring(manifest: Manifest, component: str) -> bool:
    """Whether every input of ``component`` comes from the wiring (false for loop-fed decoder state)."""
    fed = {e.input for e in manifest.edges_into(component)}
    return all(t.name in fed for t in manifest.component(component).inputs)


class Runner:
    """Runs components over ``samples``; ``versions`` maps each component to the ONNX file to use."""

    def __init__(self, manifest: Manifest, samples: Sequence[Mapping[str, np.ndarray]]) -> None:
        self.manifest = manifest
        self.samples = [_with_defaults(s, manifest.inputs) for s in samples]
        self._sessions: dict[Path, Any] = {}
        self._cache: dict[tuple, list[Outputs]] = {}

    def outputs(self, versions: Mapping[str, Path], component: str) -> list[Outputs]:
        """Every output of ``component`` for each sample, its inputs computed by ``versions``."""
        key = self.key(versions, component)
        if key not in self._cache:
            path = versions[component]
            self._cache[key] = [self.run(component, path, feed) for feed in self.feeds(versions, component)]
        return self._cache[key]

    def run(self, component: str, path: Path, feed: Mapping[str, np.ndarray]) -> Outputs:
        """Every output of ``component``'s file ``path`` on one input dict (not cached)."""
        session = self._session(component, path)
        with translated(QuantizationError, f"running component {component!r} ({path.name})"):
            names = [o.name for o in session.get_outputs()]
            return dict(zip(names, session.run(names, dict(feed)), strict=True))

    def feeds(self, versions: Mapping[str, Path], component: str) -> list[Outputs]:
        """The input dict of ``component`` for each sample, upstream components run by ``versions``."""
        if not fed_by_wiring(self.manifest, component):
            raise QuantizationError(
                f"component {component!r} has inputs no wiring feeds (decoder state from a generation "
                "loop); it cannot be calibrated or evaluated from raw samples. Give it recipe 'dynamic' or 'fp32'."
            )
        edges = self.manifest.edges_into(component)
        produced = {u: self.outputs(versions, u) for u in upstream(self.manifest, component)}
        return [
            {e.input: sample[e.output] if e.source == RAW_INPUTS else produced[e.source][i][e.output] for e in edges}
            for i, sample in enumerate(self.samples)
        ]

    def release(self, path: Path) -> None:
        """Forget a file's session and cached outputs (a discarded fallback candidate)."""
        self._sessions.pop(path, None)
        for key in [k for k in self._cache if _mentions(k, path)]:
            del self._cache[key]

    def key(self, versions: Mapping[str, Path], component: str) -> tuple:
        """What ``component``'s outputs depend on: its file and, recursively, its upstream files."""
        return (
            component,
            versions[component],
            tuple(self.key(versions, u) for u in upstream(self.manifest, component)),
        )

    def _session(self, component: str, path: Path) -> Any:
        if path not in self._sessions:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.log_severity_level = 3  # ORT's own warnings are not the user's problem
            with translated(QuantizationError, f"loading component {component!r} from {path.name}"):
                self._sessions[path] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return self._sessions[path]


def _mentions(key: tuple, path: Path) -> bool:
    return key[1] == path or any(_mentions(k, path) for k in key[2])


def _with_defaults(sample: Mapping[str, np.ndarray], specs: Sequence[InputSpec]) -> dict[str, np.ndarray]:
    """``sample`` plus omitted optional inputs, filled with their default value."""
    full = dict(sample)
    sizes: dict[str, int] = {}
    for spec in specs:
        if spec.name in sample:
            sizes.update(
                (d, n) for d, n in zip(spec.shape, sample[spec.name].shape, strict=False) if isinstance(d, str)
            )
    for spec in specs:
        if spec.name not in full and spec.default is not None:
            shape = tuple(
                d if isinstance(d, int) else sizes.get(d, spec.example_shape[axis] if spec.example_shape else 1)
                for axis, d in enumerate(spec.shape)
            )
            full[spec.name] = np.full(shape, spec.default, dtype=spec.dtype)
    return full
