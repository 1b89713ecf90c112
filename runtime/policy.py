"""Per-component execution-provider policy, and the partitions each provider takes a graph in.

``Pipeline(bundle, providers={"image": "coreml", "text": "cpu", "*": "auto"})``: each component
gets the request of its own name, else of its modality, else of ``"*"`` (default ``"auto"``),
each resolved by :func:`~mmedge.providers.resolve_providers`. A key that names no
component or modality of the bundle is an error (a typo would otherwise silently mean "auto").

An EP that takes a graph in many pieces pays a copy between it and the CPU at every border,
which is how NNAPI/CoreML end up slower than the CPU; :func:`check_partitions` warns when an
accelerator takes a component in more than ``max_partitions`` pieces.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mmedge.bundle import Component, Manifest
from mmedge.cpu import int8_dot_instructions
from mmedge.errors import ConfigError, PartitionWarning
from mmedge.providers import CPU, OPENVINO, ProviderPlan, ProviderRequest, openvino_available, resolve_providers

if TYPE_CHECKING:
    from mmedge.sessions import ComponentPlacement

__all__ = [
    "DEFAULT_MAX_PARTITIONS",
    "PROVIDERS_HELP",
    "ProviderPolicy",
    "check_partitions",
    "component_plans",
    "one_openvino_graph",
    "openvino_record",
    "parse_policy",
    "recorded_backend",
]

log = logging.getLogger("mmedge.runtime")

ProviderPolicy = ProviderRequest | Mapping[str, ProviderRequest]
ANY = "*"
# More pieces than this and the copies at the borders usually cost more than the EP saves.
DEFAULT_MAX_PARTITIONS = 3


PROVIDERS_HELP = (
    "execution providers: 'auto', 'cpu', 'cuda', or names in priority order ('cuda,cpu'); per component "
    "or modality: 'image=cuda,cpu;*=cpu' (KEY=NAMES pairs separated by ';', '*' for the rest)"
)


def parse_policy(text: str) -> ProviderPolicy:
    """A ``--providers`` flag as a Pipeline ``providers`` argument (see :data:`PROVIDERS_HELP`)."""

    def names(value: str) -> ProviderRequest:
        listed = [n.strip() for n in value.split(",") if n.strip()]
        if not listed:
            raise ConfigError(f"--providers {text!r}: name at least one provider, e.g. cpu")
        return listed[0] if len(listed) == 1 else listed

    if "=" not in text:
        return names(text)
    policy: dict[str, ProviderRequest] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        key, sep, value = (x.strip() for x in part.partition("="))
        if not sep or not key:
            raise ConfigError(f"--providers part {part!r} is not KEY=NAMES, e.g. image=cuda,cpu")
        if key in policy:
            raise ConfigError(f"--providers names {key!r} twice; give each component or modality once")
        policy[key] = names(value)
    return policy


def component_plans(
    policy: ProviderPolicy,
    manifest: Manifest,
    *,
    fallback: bool,
    available: Sequence[str] | None = None,
    known: Sequence[str] | None = None,
) -> dict[str, ProviderPlan]:
    """The provider plan of every component under ``policy`` (one request, or a dict by key).

    A component that ``mmedge quantize`` measured faster on the OpenVINO runtime on this kind of CPU
    (``quantization.backend`` in the manifest) runs there when its request is "auto" or "cpu" and
    OpenVINO is available (:func:`recorded_backend`).
    """
    if not isinstance(policy, Mapping):
        plan = resolve_providers(policy, available, fallback=fallback, known=known)
        return {c.name: recorded_backend(c, policy, plan, available) for c in manifest.components}
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
        request = _request(policy, c)
        if repr(request) not in resolved:
            resolved[repr(request)] = resolve_providers(request, available, fallback=fallback, known=known)
        plans[c.name] = recorded_backend(c, request, resolved[repr(request)], available)
    return plans


def _request(policy: ProviderPolicy, component: Component) -> ProviderRequest:
    """What ``policy`` asks for ``component``: its name's entry, else its modality's, else "*"'s, else "auto"."""
    if not isinstance(policy, Mapping):
        return policy
    key = component.name if component.name in policy else component.modality if component.modality in policy else ANY
    return policy.get(key, "auto")


def one_openvino_graph(
    policy: ProviderPolicy,
    manifest: Manifest,
    plans: Mapping[str, ProviderPlan],
    components: Sequence[str],
    available: Sequence[str] | None = None,
) -> str | None:
    """Why ``components`` run as one OpenVINO graph (one request per call) here; None if they do not.

    Either every one of them is placed on OpenVINO (asked for, or by quantize's per-component
    record): one request instead of one each, whose start-up costs more than a small component's
    math (``benchmarks/NOTES.md``). Or ``mmedge quantize`` chose the one graph by measurement (the
    manifest's ``whole_graph``, :mod:`mmedge.quantize.whole_graph`) for exactly these components,
    every one is asked "auto" or "cpu" and resolves to the CPU (with or without OpenVINO), OpenVINO
    is available, and this CPU has at least the INT8 dot-product instructions of the one measured
    on. Only ONNX files, and not for a bundle that generates sequences.
    """
    found = [manifest.component(name) for name in components]
    if manifest.generation is not None or len(found) < 2 or any(c.format != "onnx" for c in found):
        return None
    if all(plans[c.name].names[:1] == (OPENVINO,) for c in found):
        return "every component is placed on OpenVINO"
    record = manifest.whole_graph or {}
    if not record.get("chosen") or tuple(record.get("components") or ()) != tuple(components):
        return None
    for c in found:
        request = _request(policy, c)
        if not isinstance(request, str) or request.lower() not in ("auto", "cpu"):
            return None
    if any(not set(plans[n].names) <= {CPU, OPENVINO} for n in components):
        return None
    if not _holds_here(record, f"{', '.join(components)} as one graph", available):
        return None
    return "mmedge quantize measured it faster than the split plan on this kind of CPU (the manifest's whole_graph)"


def openvino_record(component: Component) -> Mapping[str, Any] | None:
    """The backend check's record (``quantization.backend``) where it chose OpenVINO for ``component``
    and its file can run there: an ONNX file (``mmedge mobile``'s ORT-format files are onnxruntime's alone)."""
    record = (component.quantization or {}).get("backend") or {}
    return record if record.get("backend") == "openvino" and component.format == "onnx" else None


def recorded_backend(
    component: Component, request: ProviderRequest, plan: ProviderPlan, available: Sequence[str] | None = None
) -> ProviderPlan:
    """``plan`` with the OpenVINO runtime first where quantize chose it for ``component`` by measurement.

    Only for a request of "auto" or "cpu" that resolved to the CPU alone (a named provider, or an
    accelerator, is taken as asked), with OpenVINO available, on a CPU with at least the INT8
    dot-product instructions of the one measured on (elsewhere the measurement says nothing), and
    for an ONNX file (:func:`openvino_record`).
    """
    record = openvino_record(component)
    if record is None:
        return plan
    if not isinstance(request, str) or request.lower() not in ("auto", "cpu"):
        return plan
    if plan.names != (CPU,):
        return plan
    if not _holds_here(record, f"component {component.name}", available):
        return plan
    return ProviderPlan(providers=((OPENVINO, {}), *plan.providers), fallbacks=plan.fallbacks, strict=False)


def _holds_here(record: Mapping[str, Any], what: str, available: Sequence[str] | None) -> bool:
    """Whether a quantize measurement on OpenVINO (``record``) applies here: OpenVINO is available and
    this CPU has at least the INT8 dot-product instructions of the one measured on (elsewhere the
    measurement says nothing). Logs why not."""
    measured_with = set(record.get("int8_instructions") or ())
    if not measured_with <= set(int8_dot_instructions()):
        log.info(
            "%s: quantize measured it faster on OpenVINO on a CPU with %s, which this one lacks; "
            "running it on onnxruntime",
            what,
            ", ".join(sorted(measured_with)),
        )
        return False
    if not (OPENVINO in available if available is not None else openvino_available()):
        log.info(
            "%s: quantize measured it faster on the OpenVINO runtime (%s); pip install openvino to use it",
            what,
            record.get("why", ""),
        )
        return False
    return True


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
