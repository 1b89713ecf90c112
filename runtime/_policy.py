"""Per-component execution-provider policy, and the partitions each provider takes a graph in.

``Pipeline(bundle, providers={"image": "coreml", "text": "cpu", "*": "auto"})``: each component
gets the request of its own name, else of its modality, else of ``"*"`` (default ``"auto"``),
each resolved by :func:`~mmedge.runtime.providers.resolve_providers`. A key that names no
component or modality of the bundle is an error (a typo would otherwise silently mean "auto").

An EP that takes a graph in many pieces pays a copy between it and the CPU at every border,
which is how NNAPI/CoreML end up slower than the CPU; :func:`check_partitions` warns when an
accelerator takes a component in more than ``max_partitions`` pieces.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from mmedge.runtime.providers import CPU, ProviderPlan, ProviderRequest, resolve_providers

from mmedge.bundle import Manifest
from mmedge.errors import ConfigError, PartitionWarning

if TYPE_CHECKING:
    from mmedge.runtime._session import ComponentPlacement

__all__ = ["DEFAULT_MAX_PARTITIONS", "ProviderPolicy", "check_partitions", "component_plans", "count_partitions"]

log = logging.getLogger("mmedge.runtime")

ProviderPolicy = ProviderRequest | Mapping[str, ProviderRequest]
ANY = "*"
# More pieces than this and the copies at the borders usually cost more than the EP saves.
DEFAULT_MAX_PARTITIONS = 3


def component_plans(
    policy: ProviderPolicy,
    manifest: Manifest,
    *,
    fallback: bool,
    available: Sequence[str] | None = None,
    known: Sequence[str] | None = None,
) -> dict[str, ProviderPlan]:
    """The provider plan of every component under ``policy`` (one request, or a dict by key)."""
    if not isinstance(policy, Mapping):
        plan = resolve_providers(policy, available, fallback=fallback, known=known)
        return {c.name: plan for c in manifest.components}
    names = {c.name for c in manifest.components}
    modalities = {c.modality for c in manifest.components if c.modality}
    unknown = [k for k in policy if not isinstance(k, str) or (k != ANY and k not in names | modalities)]
    if unknown:
        raise ConfigError(
            f"providers keys {unknown} name no component or modality of this bundle; use '*', a modality "
            f"({', '.join(sorted(modalities)) or 'none'}) or a component ({', '.join(sorted(names))})"
        )
    resolved: dict[str, ProviderPlan] = {}
    plans = {}
    for c in manifest.components:
        key = c.name if c.name in policy else c.modality if c.modality in policy else ANY
        request = policy.get(key, "auto")
        if repr(request) not in resolved:
            resolved[repr(request)] = resolve_providers(request, available, fallback=fallback, known=known)
        plans[c.name] = resolved[repr(request)]
    return plans


def count_partitions(subgraphs: Sequence[tuple[str, int]]) -> dict[str, int]:
    """Partitions per EP from ORT's assignment record: ``(ep, nodes)`` per subgraph, in ORT's order.

    ORT records one subgraph per node for kernel-based EPs (CPU, CUDA) and one per fused piece
    for compiling EPs (CoreML, NNAPI, TensorRT). So a multi-node subgraph is a partition of its
    own, and consecutive single-node subgraphs of one EP form one partition.
    """
    counts: dict[str, int] = {}
    previous: tuple[str, int] | None = None
    for ep, nodes in subgraphs:
        joins = previous is not None and previous[0] == ep and previous[1] == 1 and nodes == 1
        if not joins:
            counts[ep] = counts.get(ep, 0) + 1
        previous = (ep, nodes)
    return counts


def check_partitions(placement: ComponentPlacement, max_partitions: int | None) -> None:
    """Warn (PartitionWarning) for every accelerator that takes the component in too many pieces."""
    if max_partitions is None:
        return
    for ep, pieces in placement.partitions.items():
        if ep != CPU and pieces > max_partitions:
            message = (
                f"component {placement.component!r}: {ep} takes the graph in {pieces} partitions "
                f"({placement.nodes.get(ep, 0)} nodes; more than max_partitions={max_partitions}), with a copy to "
                "and from the CPU at every border; it is probably slower than the CPU alone. Run "
                "`mmedge mobile` for the operators that split it, or give this component 'cpu'"
            )
            log.warning(message)
            warnings.warn(PartitionWarning(message), stacklevel=3)
