"""The order components run in, derived from the manifest wiring (any DAG, not a fixed shape).

A run needs the components that produce the requested tensors and, transitively, their
sources, except components whose outputs the caller supplied (cached encoder embeddings).
Those needed components are grouped into stages: every component of a stage has all its
inputs once the earlier stages are done, so a stage's components can run concurrently.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

from mmedge.bundle import RAW_INPUTS, Manifest
from mmedge.errors import BundleError

__all__ = ["Graph"]

T = TypeVar("T")
Key = tuple[frozenset[str], frozenset[str]]


class Graph:
    """Dependencies between a manifest's components."""

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest
        self._upstream: dict[str, set[str]] = {c.name: set() for c in manifest.components}
        self._raw: dict[str, set[str]] = {c.name: set() for c in manifest.components}
        for edge in manifest.wiring:
            if edge.source == RAW_INPUTS:
                self._raw[edge.target].add(edge.output)
            else:
                self._upstream[edge.target].add(edge.source)
        self.outputs = frozenset(o.component for o in manifest.outputs)
        # every call asks the same few questions (all outputs, nothing precomputed): answer each once
        self._plans: dict[Key, tuple[tuple[str, ...], ...]] = {}
        self._needed: dict[Key, frozenset[str]] = {}
        self.full_plan = self.stages(self.outputs)  # raises on cycles, once, at load time

    def upstream(self, component: str) -> frozenset[str]:
        """Components whose outputs feed ``component`` directly."""
        return frozenset(self._upstream[component])

    def raw_inputs(self, components: Iterable[str]) -> frozenset[str]:
        """Names of the raw model inputs that feed any of ``components``."""
        return frozenset(name for c in components for name in self._raw[c])

    def consumers(self, raw_input: str) -> tuple[str, ...]:
        """Components fed by the raw input ``raw_input``, in manifest order."""
        return tuple(c for c, names in self._raw.items() if raw_input in names)

    def needed(self, targets: Iterable[str], provided: frozenset[str] = frozenset()) -> frozenset[str]:
        """Components to run to get ``targets``' outputs, given those of ``provided`` are known."""
        return _memo(self._needed, self._search, frozenset(targets), provided)

    def _search(self, targets: frozenset[str], provided: frozenset[str]) -> frozenset[str]:
        needed: set[str] = set()
        todo = [t for t in targets if t not in provided]
        while todo:
            c = todo.pop()
            if c not in needed:
                needed.add(c)
                todo += [u for u in self._upstream[c] if u not in provided]
        return frozenset(needed)

    def stages(self, targets: Iterable[str], provided: frozenset[str] = frozenset()) -> tuple[tuple[str, ...], ...]:
        """The needed components grouped into stages that can each run concurrently, in order."""
        return _memo(self._plans, self._stages, frozenset(targets), provided)

    def _stages(self, targets: frozenset[str], provided: frozenset[str]) -> tuple[tuple[str, ...], ...]:
        left = set(self.needed(targets, provided))
        done = set(provided)
        order = [c.name for c in self.manifest.components]
        stages: list[tuple[str, ...]] = []
        while left:
            ready = tuple(c for c in order if c in left and self._upstream[c] <= done)
            if not ready:
                raise BundleError(
                    f"the manifest wiring has a cycle through components {sorted(left)}; re-export the bundle"
                )
            stages.append(ready)
            left -= set(ready)
            done |= set(ready)
        return tuple(stages)


def _memo(
    cache: dict[Key, T],
    compute: Callable[[frozenset[str], frozenset[str]], T],
    targets: frozenset[str],
    provided: frozenset[str],
) -> T:
    """``compute(targets, provided)``, once per pair (a racing thread may compute it twice: harmless)."""
    found = cache.get((targets, provided))
    if found is None:
        found = cache[(targets, provided)] = compute(targets, provided)
    return found
