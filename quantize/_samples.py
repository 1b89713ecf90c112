"""Run a bundle's components with onnxruntime over a fixed list of samples, with caching.

Quantization needs the same samples pushed through many mixes of FP32 and quantized
components: chained calibration (a head calibrated on the quantized encoders' outputs), the
per-component and end-to-end report, and every candidate of a fallback round.
:class:`SampleExecutor` caches each component's outputs under the exact files that produced them
(its own and all its upstream components'), so a change to the head never re-runs the encoders.
What feeds what comes from :class:`mmedge.graph.Graph` and sessions from
:func:`mmedge.sessions.create_session`; only the caching is quantize's own (it must not depend
on the runtime package).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmedge.bundle import InputSpec
from mmedge.errors import QuantizationError, translated
from mmedge.graph import Graph
from mmedge.sessions import create_session, default_thread_budget, plain_options

__all__ = ["SampleExecutor"]

Outputs = dict[str, np.ndarray]


class SampleExecutor:
    """Runs components over ``samples``; ``versions`` maps each component to the ONNX file to use.

    ``openvino``: files to run on the OpenVINO runtime instead of onnxruntime (the backend check).
    """

    def __init__(
        self, graph: Graph, samples: Sequence[Mapping[str, np.ndarray]], *, openvino: frozenset[Path] = frozenset()
    ) -> None:
        self.graph = graph
        self.samples = [_with_defaults(s, graph.manifest.inputs) for s in samples]
        self.openvino = openvino
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
        if not self.graph.fed_by_wiring(component):
            raise QuantizationError(
                f"component {component!r} has inputs no wiring feeds (decoder state from a generation "
                "loop); it cannot be calibrated or evaluated from raw samples. Give it recipe 'dynamic' or 'fp32'."
            )
        return self.wired(versions, component)

    def wired(self, versions: Mapping[str, Path], component: str) -> list[Outputs]:
        """What the wiring feeds ``component`` for each sample (inputs no edge feeds are left out)."""
        produced = {u: self.outputs(versions, u) for u in self.upstream(component)}
        return [
            self.graph.feeds(component, sample, {u: outs[i] for u, outs in produced.items()})
            for i, sample in enumerate(self.samples)
        ]

    def on_openvino(self, paths: frozenset[Path]) -> SampleExecutor:
        """The same samples with the files ``paths`` run on OpenVINO; outputs cached here that
        depend on none of them (the FP32 reference, upstream components) are shared."""
        other = SampleExecutor(self.graph, self.samples, openvino=paths)
        other._cache = {k: v for k, v in self._cache.items() if not any(_mentions(k, p) for p in paths)}
        return other

    def upstream(self, component: str) -> list[str]:
        """The components feeding ``component``, sorted (cache keys and reports list them in this order)."""
        return sorted(self.graph.upstream(component))

    def release(self, path: Path) -> None:
        """Forget a file's session and cached outputs (a discarded fallback candidate)."""
        self._sessions.pop(path, None)
        for key in [k for k in self._cache if _mentions(k, path)]:
            del self._cache[key]

    def key(self, versions: Mapping[str, Path], component: str) -> tuple:
        """What ``component``'s outputs depend on: its file and, recursively, its upstream files."""
        return (component, versions[component], tuple(self.key(versions, u) for u in self.upstream(component)))

    def _session(self, component: str, path: Path) -> Any:
        if path not in self._sessions:
            self._sessions[path] = self._open(component, path)
        return self._sessions[path]

    def _open(self, component: str, path: Path) -> Any:
        if path in self.openvino:
            from mmedge.openvino_backend import OpenVINOSession

            with translated(QuantizationError, f"OpenVINO compiling component {component!r} ({path.name})"):
                return OpenVINOSession(path, default_thread_budget())
        return create_session(
            path, plain_options(), error=QuantizationError, what=f"loading component {component!r} from {path.name}"
        )


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
