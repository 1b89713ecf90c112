"""The order components run in: the wiring's dependencies grouped into stages, linear in its size.

The one implementation of wiring order: ``load_bundle`` uses it to refuse cycles, and
:class:`mmedge.graph.Graph` to plan the components a run needs.
"""

from __future__ import annotations

from collections.abc import Mapping, Set

from mmedge.errors import BundleError

__all__ = ["wiring_stages"]

_SHOWN = 20  # names listed in an error; a hostile manifest may have thousands


def wiring_stages(upstream: Mapping[str, Set[str]]) -> tuple[tuple[str, ...], ...]:
    """Group the components of ``upstream`` (name → the components that feed it) into stages.

    Every component of a stage has all its inputs once the earlier stages are done, so a stage's
    components can run concurrently. A component a key depends on that is not itself a key counts
    as done already (its outputs were supplied). Within a stage, components keep the keys' order.
    Raises :class:`BundleError` naming the components left when the wiring has a cycle.
    """
    position = {name: i for i, name in enumerate(upstream)}
    waiting = {name: sum(1 for u in sources if u in position and u != name) for name, sources in upstream.items()}
    downstream: dict[str, list[str]] = {}
    for name, sources in upstream.items():
        for u in sources:
            if u in position and u != name:
                downstream.setdefault(u, []).append(name)
    blocked = {name for name, sources in upstream.items() if name in sources}  # fed by itself
    stage = [name for name, n in waiting.items() if n == 0 and name not in blocked]
    stages: list[tuple[str, ...]] = []
    while stage:
        stages.append(tuple(stage))
        ready = []
        for name in stage:
            for d in downstream.get(name, ()):
                waiting[d] -= 1
                if waiting[d] == 0 and d not in blocked:
                    ready.append(d)
        stage = sorted(ready, key=position.__getitem__)
    placed = sum(len(s) for s in stages)
    if placed != len(upstream):
        done = {name for s in stages for name in s}
        left = sorted(name for name in upstream if name not in done)
        shown = ", ".join(repr(n) for n in left[:_SHOWN]) + (
            f" and {len(left) - _SHOWN} more" if len(left) > _SHOWN else ""
        )
        raise BundleError(
            f"the manifest wiring has a cycle through components [{shown}]: a component feeds itself, "
            "directly or through others, so no order can run them. Fix the wiring (or re-export the bundle)."
        )
    return tuple(stages)
