"""The one wiring graph: what feeds each component, the order components run in, which are
encoders — derived from the manifest wiring (any DAG, not a fixed shape).

Every stage and app asks :class:`Graph` these questions instead of walking ``manifest.wiring``
itself: :meth:`Graph.order` (dependency order), :meth:`Graph.upstream` / :meth:`Graph.downstream`,
:meth:`Graph.feeds` (one component's input dict from raw inputs and upstream outputs),
:meth:`Graph.encoders` / :meth:`Graph.encoder_for`, :meth:`Graph.fed_by_wiring`.

A run needs the components that produce the requested tensors and, transitively, their
sources, except components whose outputs the caller supplied (cached encoder embeddings).
Those needed components are grouped into stages: every component of a stage has all its
inputs once the earlier stages are done, so a stage's components can run concurrently.
"""

from __future__ import annotations

import reprlib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar

from mmedge.bundle import RAW_INPUTS, Edge, Manifest, wiring_stages
from mmedge.errors import InputError

__all__ = ["Graph"]

T = TypeVar("T")
V = TypeVar("V")  # a value flowing along an edge: numpy array, OrtValue, a shape pattern...
Key = tuple[frozenset[str], frozenset[str]]


class Graph:
    """Dependencies between a manifest's components."""

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest
        self._edges: dict[str, list[Edge]] = {c.name: [] for c in manifest.components}
        self._upstream: dict[str, set[str]] = {c.name: set() for c in manifest.components}
        self._downstream: dict[str, set[str]] = {c.name: set() for c in manifest.components}
        self._raw: dict[str, set[str]] = {c.name: set() for c in manifest.components}
        for edge in manifest.wiring:
            self._edges[edge.target].append(edge)
            if edge.source == RAW_INPUTS:
                self._raw[edge.target].add(edge.output)
            else:
                self._upstream[edge.target].add(edge.source)
                self._downstream[edge.source].add(edge.target)
        fed = {c: {e.input for e in edges} for c, edges in self._edges.items()}
        self._unfed = {
            c.name: tuple(t.name for t in c.inputs if t.name not in fed[c.name]) for c in manifest.components
        }
        self.outputs = frozenset(o.component for o in manifest.outputs)
        # every call asks the same few questions (all outputs, nothing precomputed): answer each once
        self._plans: dict[Key, tuple[tuple[str, ...], ...]] = {}
        self._needed: dict[Key, frozenset[str]] = {}
        self.full_plan = self.stages(self.outputs)  # raises on cycles, once, at load time
        self._order = tuple(c for stage in self.stages(self._edges) for c in stage)

    def order(self) -> tuple[str, ...]:
        """Every component, each after the components feeding it (manifest order among equals)."""
        return self._order

    def edges_into(self, component: str) -> tuple[Edge, ...]:
        """The wiring edges that feed ``component``, in manifest order."""
        return tuple(self._edges[component])

    def upstream(self, component: str) -> frozenset[str]:
        """Components whose outputs feed ``component`` directly."""
        return frozenset(self._upstream[component])

    def downstream(self, component: str) -> frozenset[str]:
        """Components that depend, directly or not, on ``component``'s outputs."""
        found: set[str] = set()
        todo = list(self._downstream[component])
        while todo:
            c = todo.pop()
            if c not in found:
                found.add(c)
                todo += self._downstream[c]
        return frozenset(found)

    def unfed(self, component: str) -> tuple[str, ...]:
        """Inputs of ``component`` no edge feeds (a decoder's token and state, fed by the generation loop)."""
        return self._unfed[component]

    def fed_by_wiring(self, component: str) -> bool:
        """Whether the wiring feeds every input of ``component`` (so raw samples can drive it)."""
        return not self._unfed[component]

    def feeds(self, component: str, raw: Mapping[str, V], produced: Mapping[str, Mapping[str, V]]) -> dict[str, V]:
        """``component``'s inputs by name: raw inputs by raw-input name, upstream outputs by component
        and output name, each taken along its edge (unfed inputs are left out)."""
        return {
            e.input: raw[e.output] if e.source == RAW_INPUTS else produced[e.source][e.output]
            for e in self._edges[component]
        }

    def encoders(self) -> tuple[str, ...]:
        """Components whose every input is a raw model input, in manifest order."""
        return tuple(c for c in self._edges if self._raw[c] and not self._upstream[c] and not self._unfed[c])

    def encoder_for(self, name: str) -> str:
        """The encoder ``name`` names: an encoder component, or the one component a raw input (or
        the one input of a modality) feeds. InputError when that is no encoder or there is none."""
        if not isinstance(name, str):
            raise InputError(
                f"an encoder is named by a modality, input or component (a str), found {type(name).__name__}"
            )
        keys = self.input_keys()
        if name in self._edges:
            component = name
        elif name in keys:
            consumers = self.consumers(keys[name])
            if len(consumers) != 1:
                raise InputError(f"input {name!r} feeds {list(consumers)}; name the component to encode")
            component = consumers[0]
        else:
            raise InputError(
                f"nothing to encode named {_SHORT.repr(name)}; use a modality or input ({', '.join(keys)}) "
                f"or a component ({', '.join(sorted(self._edges))})"
            )
        if self._upstream[component]:
            raise InputError(f"{component!r} is fed by other components, so it is not an encoder; run the whole model")
        if component not in self.encoders():
            raise InputError(
                f"{component!r} has inputs no raw input feeds ({', '.join(self._unfed[component]) or 'none wired'}), "
                "so it is not an encoder; run the whole model"
            )
        return component

    def input_keys(self) -> dict[str, str]:
        """Raw input by the keys a caller may use for it: its name, and its modality if no other input has it."""
        keys = {i.name: i.name for i in self.manifest.inputs}
        modalities = Counter(i.modality for i in self.manifest.inputs)
        for i in self.manifest.inputs:
            if modalities[i.modality] == 1:
                keys.setdefault(i.modality, i.name)  # an input's own name wins over a modality
        return keys

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
        needed = self.needed(targets, provided)
        # provided components are no keys, so wiring_stages counts them as done
        return wiring_stages({c.name: self._upstream[c.name] for c in self.manifest.components if c.name in needed})


_SHORT = reprlib.Repr()  # user-given names in messages, cut to about 80 characters
_SHORT.maxstring = _SHORT.maxother = 80


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
