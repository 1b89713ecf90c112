"""Which onnxruntime execution providers (EPs) a Pipeline asks for, as a pure function.

``resolve_providers`` turns a user request (``"auto"``, ``"cpu"``, ``"cuda"``, a short name, an
ORT provider name, or a list of names / ``(name, options)`` pairs) into the priority list ORT
takes, given the providers this onnxruntime build offers. It never imports onnxruntime when
``available`` and ``known`` are passed, so the whole selection and fallback logic is testable
on any machine with a fake ``available`` list.

``"openvino"`` (:data:`OPENVINO`) is not an onnxruntime EP but a backend of its own: the
component's ONNX file compiled by the OpenVINO runtime (``pip install openvino``), whose CPU
plugin runs INT8 convolutions on AMX/VNNI where onnxruntime's QLinearConv does not (see
:mod:`mmedge.sessions`). It is available when ``openvino`` is importable; onnxruntime's own
OpenVINO EP (the ``onnxruntime-openvino`` build) keeps its full name, ``OpenVINOExecutionProvider``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mmedge.errors import ProviderError

__all__ = [
    "AUTO_ORDER",
    "CPU",
    "OPENVINO",
    "SHORT_NAMES",
    "ProviderPlan",
    "ProviderRequest",
    "openvino_available",
    "resolve_providers",
]

CPU = "CPUExecutionProvider"
OPENVINO = "OpenVINO"  # the OpenVINO runtime as a per-component backend, not an onnxruntime EP
# "auto" registers every available one of these, best first; ORT gives each node to the first
# EP in the list that supports it, so the later ones (and CPU, always last) catch the rest.
AUTO_ORDER = (
    "TensorrtExecutionProvider",
    "CUDAExecutionProvider",
    "CoreMLExecutionProvider",
    "NnapiExecutionProvider",
    "XnnpackExecutionProvider",
    "QNNExecutionProvider",
    CPU,
)
SHORT_NAMES = {
    "cpu": CPU,
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "nnapi": "NnapiExecutionProvider",
    "xnnpack": "XnnpackExecutionProvider",
    "qnn": "QNNExecutionProvider",
    "openvino": OPENVINO,
}
_INSTALL_HINT = {
    "CUDAExecutionProvider": "install the `gpu` extra (pip uninstall onnxruntime && pip install 'mmedge[gpu]') on a machine with an NVIDIA GPU",
    "TensorrtExecutionProvider": "install onnxruntime-gpu with TensorRT libraries on an NVIDIA machine",
    "CoreMLExecutionProvider": "use the onnxruntime wheel for macOS/iOS",
    "NnapiExecutionProvider": "use the onnxruntime-android package",
    "QNNExecutionProvider": "install onnxruntime-qnn on a Qualcomm device",
    OPENVINO: "pip install openvino",
}

ProviderRequest = str | Sequence[str | tuple[str, Mapping[str, Any]]]


@dataclass(frozen=True)
class ProviderPlan:
    """The providers to register, in priority order (CPU always last), and what was dropped."""

    providers: tuple[tuple[str, Mapping[str, Any]], ...]
    fallbacks: tuple[str, ...] = ()  # one line per requested provider that was dropped, with why
    strict: bool = True  # a session that cannot use a requested provider is an error, not a fallback

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.providers)


def resolve_providers(
    request: ProviderRequest = "auto",
    available: Sequence[str] | None = None,
    *,
    fallback: bool = False,
    known: Sequence[str] | None = None,
) -> ProviderPlan:
    """The provider list for ``request`` given the ``available`` providers of this ORT build.

    ``"auto"`` takes every available provider of :data:`AUTO_ORDER` and never fails. For an
    explicit request, a provider that is not available raises :class:`ProviderError` unless
    ``fallback=True``, in which case it is dropped and the drop is recorded in ``fallbacks``.
    Names onnxruntime does not know at all (typos) always raise. ``available`` and ``known``
    default to what the installed onnxruntime reports.
    """
    if available is None or known is None:
        import onnxruntime as ort

        if available is None:
            available = [*ort.get_available_providers(), *((OPENVINO,) if openvino_available() else ())]
        known = ort.get_all_providers() if known is None else known
    known = [*known, OPENVINO]
    if isinstance(request, str) and request.lower() == "auto":
        chosen = tuple((name, {}) for name in AUTO_ORDER if name in available or name == CPU)
        return ProviderPlan(providers=chosen, strict=False)
    wanted = _normalize(request, known)
    kept: list[tuple[str, Mapping[str, Any]]] = []
    dropped: list[str] = []
    for name, options in wanted:
        if name in available or name == CPU:
            kept.append((name, options))
        else:
            dropped.append(f"{name} is not available in this onnxruntime build ({_hint(name, available)})")
    if dropped and not fallback:
        raise ProviderError(
            "requested execution provider(s) cannot be used:\n  - "
            + "\n  - ".join(dropped)
            + "\nPass fallback=True (--fallback) to run on the remaining providers instead."
        )
    if all(name != CPU for name, _ in kept):
        kept.append((CPU, {}))
    return ProviderPlan(providers=tuple(kept), fallbacks=tuple(dropped), strict=not fallback)


def openvino_available() -> bool:
    """Whether the OpenVINO runtime (the ``openvino`` package) can be imported, without importing it."""
    import importlib.util

    return importlib.util.find_spec("openvino") is not None


def _normalize(request: ProviderRequest, known: Sequence[str]) -> list[tuple[str, Mapping[str, Any]]]:
    """``request`` as (ORT name, options) pairs; raises for unknown names, bad types, duplicates."""
    items = [request] if isinstance(request, str) else request
    if not isinstance(items, Sequence) or not items:
        raise ProviderError(
            f"providers must be 'auto', a provider name or a non-empty list of names, found {request!r}"
        )
    out: list[tuple[str, Mapping[str, Any]]] = []
    for item in items:
        name, options = item if isinstance(item, tuple) and len(item) == 2 else (item, {})
        if not isinstance(name, str) or not isinstance(options, Mapping):
            raise ProviderError(f"each provider must be a name or a (name, options dict) pair, found {item!r}")
        full = SHORT_NAMES.get(name.lower(), name)
        if full not in known:
            raise ProviderError(
                f"unknown execution provider {name!r}; use 'auto', one of {sorted(SHORT_NAMES)}, "
                f"or an onnxruntime provider name ({', '.join(known)})"
            )
        if full in (n for n, _ in out):
            raise ProviderError(f"execution provider {full} is listed twice in {request!r}; list it once")
        out.append((full, dict(options)))
    return out


def _hint(name: str, available: Sequence[str]) -> str:
    have = ", ".join(available) or "none"
    fix = _INSTALL_HINT.get(name, "install an onnxruntime package built with it")
    return f"this build has: {have}; to get it, {fix}"
