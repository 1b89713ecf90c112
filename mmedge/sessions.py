"""One onnxruntime session per component: options, provider fallback, placement, and the one
boundary where onnxruntime exceptions become mmedge errors.

ORT's own fallback (print to stdout, retry on CPU) is disabled; instead, when an accelerator
fails to initialise, the next provider is tried only if the request allows it, and the drop is
logged and recorded in the component's :class:`ComponentPlacement`. With ``strict``, ORT may
not give single nodes to the CPU EP either (``session.disable_cpu_ep_fallback``); when it
refuses, the error names the nodes no requested accelerator takes.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from mmedge.bundle import Bundle, Component, check_io, verify_component_file
from mmedge.errors import BundleError, ConfigError, InputError, MMEdgeError, ProviderError, summary, translated
from mmedge.providers import CPU, OPENVINO, ProviderPlan
from mmedge.verify import session_specs

__all__ = [
    "GRAPH_OPTIMIZATION",
    "ComponentPlacement",
    "ComponentSession",
    "binding_device",
    "count_partitions",
    "create_session",
    "default_thread_budget",
    "make_folder",
    "open_session",
    "plain_options",
    "run_boundary",
    "to_numpy",
]

log = logging.getLogger("mmedge.runtime")

GRAPH_OPTIMIZATION = ("all", "extended", "basic", "disable")


_LEVELS = {
    "all": "ORT_ENABLE_ALL",
    "extended": "ORT_ENABLE_EXTENDED",
    "basic": "ORT_ENABLE_BASIC",
    "disable": "ORT_DISABLE_ALL",
}


def _level(name: str) -> Any:
    """onnxruntime's GraphOptimizationLevel for one of :data:`GRAPH_OPTIMIZATION`."""
    import onnxruntime as ort

    return getattr(ort.GraphOptimizationLevel, _LEVELS[name])


# EPs whose outputs live in CUDA memory: between such components tensors stay on the device.
_CUDA_EPS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")
_PROVIDER_FAILURES = ("EPFail", "DeviceReset")  # ORT exception types that mean the device, not the input


@dataclass(frozen=True)
class ComponentPlacement:
    """Where one component runs: what was asked, what ORT registered, and nodes per provider."""

    component: str
    requested: tuple[str, ...]  # the provider list the session was first asked for
    registered: tuple[str, ...]  # providers the session actually has, in priority order
    nodes: Mapping[str, int] = field(default_factory=dict)  # provider → nodes it runs; {} if ORT cannot tell
    partitions: Mapping[str, int] = field(default_factory=dict)  # provider → pieces it takes the graph in
    fallbacks: tuple[str, ...] = ()  # every provider dropped or left idle, with why
    io_binding: bool = False  # outputs stay in device memory between components


def make_folder(option: str, folder: str | os.PathLike[str]) -> None:
    """Create ``folder`` (a session setting such as ``cache_dir``) now, so that one that cannot be
    made fails as a ConfigError naming ``option`` before anything is opened."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"{option} {folder} cannot be created ({e.strerror})") from e


@dataclass(frozen=True)
class SessionSettings:
    """How sessions are built; one per Pipeline."""

    graph_optimization: str = "all"
    optimized_model_dir: Path | None = None
    strict: bool = False  # no node may fall back to the CPU EP when an accelerator is asked for
    cache_dir: Path | None = None  # OpenVINO: compiled models (and the one graph's IR) kept between Pipelines


class ComponentSession:
    """A component's session and how to run it (numpy feeds, or IO binding on a device)."""

    def __init__(
        self, component: Component, session: Any, placement: ComponentPlacement, device: tuple[str, int] | None
    ):
        self.component = component
        self.session = session
        self.placement = placement
        self.device = device
        self.output_names = tuple(o.name for o in component.outputs)

    def run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        """Outputs by name: numpy arrays, or OrtValues left on the device when IO binding is used."""
        with run_boundary(self.component.name, feeds):
            if self.device is not None:
                return self._run_bound(feeds)
            values = self.session.run(list(self.output_names), {k: to_numpy(v) for k, v in feeds.items()})
            return dict(zip(self.output_names, values, strict=True))

    def _run_bound(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        import onnxruntime as ort

        binding = self.session.io_binding()
        for name, value in feeds.items():
            if isinstance(value, ort.OrtValue):
                binding.bind_ortvalue_input(name, value)
            else:
                binding.bind_cpu_input(name, np.ascontiguousarray(value))
        for name in self.output_names:
            binding.bind_output(name, self.device[0], self.device[1])
        self.session.run_with_iobinding(binding)
        return dict(zip(self.output_names, binding.get_outputs(), strict=True))


def to_numpy(value: Any) -> np.ndarray:
    """A host numpy array of ``value`` (copies OrtValues off the device)."""
    return value if isinstance(value, np.ndarray) else value.numpy()


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.dtype} {list(value.shape)}"
    return f"{value.data_type()} {value.shape()}"


@contextmanager
def run_boundary(component: str, feeds: Mapping[str, Any]) -> Iterator[None]:
    """Translate ORT run failures: a provider failure is a ProviderError, anything else an InputError."""
    try:
        yield
    except MMEdgeError:
        raise
    except Exception as e:
        target = ProviderError if type(e).__name__ in _PROVIDER_FAILURES else InputError
        shapes = ", ".join(f"{k}: {_describe(v)}" for k, v in feeds.items())
        raise target(f"component {component!r} failed on inputs ({shapes}): {_first_line(e)}") from e


def _first_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {summary(error)}" if str(error).strip() else type(error).__name__


def binding_device(registered: tuple[str, ...], options: Mapping[str, Mapping[str, Any]]) -> tuple[str, int] | None:
    """``("cuda", device_id)`` when the session's first provider keeps tensors on a CUDA device, else None."""
    if not registered or registered[0] not in _CUDA_EPS:
        return None
    device_id = options.get(registered[0], {}).get("device_id", 0)
    return ("cuda", int(device_id))


def session_options(component: str, threads: int, settings: SessionSettings) -> Any:
    """SessionOptions for one component: sequential execution with ``threads`` intra-op threads."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = _level(settings.graph_optimization)
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1  # components are small graphs; concurrency comes from running encoders in parallel
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.enable_mem_pattern = True  # reuse the allocation plan across runs of the same shapes
    # A pipeline has one intra-op pool per component; pool threads that spin after their run steal the
    # cores from the next component's pool, so they sleep instead.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3  # errors only: ORT's warnings would bypass our logging
    so.add_session_config_entry("session.record_ep_graph_assignment_info", "1")
    if settings.optimized_model_dir is not None:
        settings.optimized_model_dir.mkdir(parents=True, exist_ok=True)
        so.optimized_model_filepath = str(settings.optimized_model_dir / f"{component}.optimized.onnx")
    return so


def open_session(
    bundle: Bundle, name: str, plan: ProviderPlan, threads: int, settings: SessionSettings
) -> ComponentSession:
    """Create the session of component ``name``, dropping accelerators one by one if the plan allows."""
    component = bundle.manifest.component(name)
    verify_component_file(bundle, name)  # a lazy session opens long after load_bundle's checks
    providers = list(plan.providers)
    failed: dict[str, str] = {}
    while True:
        try:
            path = (
                bundle.openvino_path(name)
                if providers and providers[0][0] == OPENVINO
                else bundle.path / component.file
            )
            session = _create(path, component, providers, threads, settings)
            break
        except MMEdgeError:
            raise
        except Exception as e:
            if settings.strict:
                _raise_unplaced(path, component, providers, threads, settings, error=e)
            accelerator = next((p for p, _ in providers if p != CPU), None)
            if accelerator is None:
                raise BundleError(
                    f"component {name!r}: onnxruntime cannot load {component.file} ({_first_line(e)}); "
                    "the file is corrupt or uses operators this onnxruntime lacks. Re-export the bundle."
                ) from e
            if plan.strict:
                raise ProviderError(
                    f"component {name!r}: {accelerator} failed to initialise ({_first_line(e)}); "
                    "pass fallback=True (--fallback) to run without it"
                ) from e
            failed[accelerator] = f"{accelerator} failed to initialise ({_first_line(e)})"
            providers = [(p, o) for p, o in providers if p != accelerator]
    registered = tuple(session.get_providers())
    device = binding_device(registered, session.get_provider_options())
    nodes, partitions = _assignment(session)
    placement = _placement(component, registered, nodes, plan, failed, strict=settings.strict)
    return ComponentSession(
        component, session, replace(placement, partitions=partitions, io_binding=device is not None), device
    )


def _create(path: Path, component: Component, providers: list, threads: int, settings: SessionSettings) -> Any:
    if providers and providers[0][0] == OPENVINO:  # a backend of its own (mmedge.openvino_backend)
        from mmedge.openvino_backend import OpenVINOSession

        session: Any = OpenVINOSession(path, threads, settings.cache_dir)
    else:
        options = session_options(component.name, threads, settings)
        if _strict(providers, settings):
            options.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
            providers = [(p, o) for p, o in providers if p != CPU]  # ORT refuses the option with the CPU EP listed
        session = create_session(path, options, providers=[(p, o) for p, o in providers if p != OPENVINO])
    problems = check_io(component, session_specs(session.get_inputs()), session_specs(session.get_outputs()))
    if problems:
        raise BundleError(
            f"component {component.name!r}: the session's IO does not match the manifest:\n  - "
            + "\n  - ".join(problems)
        )
    return session


def _strict(providers: list, settings: SessionSettings) -> bool:
    """Whether CPU fallback is switched off: strict, and an accelerator to run on."""
    return settings.strict and any(p != CPU for p, _ in providers)


def _raise_unplaced(
    path: Path, component: Component, providers: list, threads: int, settings: SessionSettings, *, error: Exception
) -> None:
    """ProviderError naming the nodes no requested accelerator takes, if that is why a strict session failed.

    ORT only says that some node would run on the CPU; a session with the fallback allowed says
    which. Returns when that one fails too (then the accelerator itself failed to initialise).
    """
    if not _strict(providers, settings):
        return
    try:
        session = _create(path, component, providers, threads, replace(settings, strict=False))
    except Exception:  # noqa: BLE001 - not a placement problem; the caller reports the original error
        return
    on_cpu = [
        f"{n.op_type} {n.name!r}" if n.name else n.op_type
        for subgraph in session.get_provider_graph_assignment_info()
        if subgraph.ep_name == CPU
        for n in subgraph.get_nodes()
    ]
    if not on_cpu:
        return
    asked = ", ".join(p for p, _ in providers if p != CPU)
    shown = ", ".join(on_cpu[:12]) + (f" and {len(on_cpu) - 12} more" if len(on_cpu) > 12 else "")
    raise ProviderError(
        f"component {component.name!r} cannot run fully on {asked} (strict=True turns off the CPU fallback): "
        f"{len(on_cpu)} node(s) would run on the CPU: {shown}. Drop strict=True to let them, or give this "
        "component another provider (providers={name: 'cpu', ...})"
    ) from error


def _placement(
    component: Component,
    registered: tuple[str, ...],
    nodes: dict[str, int],
    plan: ProviderPlan,
    failed: dict[str, str],
    *,
    strict: bool = False,
) -> ComponentPlacement:
    """What the session really uses; an explicit request that ORT silently dropped is an error."""
    notes = list(failed.values())
    for name in plan.names:
        if name == CPU and ((strict and CPU not in registered) or OPENVINO in registered):
            continue  # left out on purpose: strict placement runs without the CPU EP; OpenVINO runs it all
        if name not in registered and name not in failed:
            message = f"{name} was requested but onnxruntime did not register it"
            if plan.strict:
                raise ProviderError(f"component {component.name!r}: {message}; pass fallback=True to allow this")
            notes.append(message)
        elif name in registered and name != CPU and nodes and not nodes.get(name):
            notes.append(f"{name} is registered but took none of the nodes (it supports none of them)")
    for message in notes:
        log.warning("component %s: %s", component.name, message)
    return ComponentPlacement(
        component=component.name,
        requested=plan.names,
        registered=registered,
        nodes=nodes,
        fallbacks=plan.fallbacks + tuple(notes),
    )


def _assignment(session: Any) -> tuple[dict[str, int], dict[str, int]]:
    """(nodes, partitions) per provider from ORT's graph assignment record (ORT >= 1.23); {} where unsupported."""
    info = getattr(session, "get_provider_graph_assignment_info", None)
    if info is None:
        return {}, {}
    subgraphs = [(s.ep_name, len(s.get_nodes())) for s in info()]
    counts: Counter[str] = Counter()
    for ep, n in subgraphs:
        counts[ep] += n
    return dict(counts), count_partitions(subgraphs)


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


def default_thread_budget() -> int:
    """Physical cores this process may run on (hyper-threads do not speed up ORT's kernels)."""
    import psutil

    physical = psutil.cpu_count(logical=False) or os.cpu_count() or 1
    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else physical
    return max(1, min(physical, allowed))


def plain_options(*, threads: int | None = None, optimization: str = "all", log_severity: int = 3) -> Any:
    """SessionOptions for a session outside a Pipeline (verification, calibration, conversion).

    ``threads`` None keeps onnxruntime's default pool; ``log_severity`` 3 keeps ORT's warnings off
    the terminal (what matters is reported through mmedge's own results).
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = _level(optimization)
    so.log_severity_level = log_severity
    if threads is not None:
        so.intra_op_num_threads = threads
    return so


def create_session(
    path: str | os.PathLike[str],
    options: Any = None,
    *,
    providers: Sequence[Any] = (CPU,),
    disabled_optimizers: Sequence[str] | None = None,
    error: type[MMEdgeError] | None = None,
    what: str = "",
) -> Any:
    """The one call that creates an ``onnxruntime.InferenceSession`` in mmedge.

    ``options`` comes from :func:`session_options` (a Pipeline component) or :func:`plain_options`
    (default: ``plain_options()``). ORT's own provider fallback is off: callers decide. With
    ``error``, a failure is raised as that mmedge error with ``what`` as context; without, ORT's
    exception propagates (:func:`open_session` inspects it to drop a failing accelerator).
    """
    import onnxruntime as ort

    options = plain_options() if options is None else options
    kwargs: dict[str, Any] = {"providers": list(providers)}
    if disabled_optimizers:
        kwargs["disabled_optimizers"] = list(disabled_optimizers)
    if error is None:
        return ort.InferenceSession(str(path), options, enable_fallback=0, **kwargs)
    with translated(error, what or f"onnxruntime cannot load {Path(path).name}"):
        return ort.InferenceSession(str(path), options, enable_fallback=0, **kwargs)
