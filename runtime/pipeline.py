"""``Pipeline``: a bundle's components as onnxruntime sessions, run as one model.

Threads: ORT's intra-op pool of each session does the math. ``threads`` (default: the physical
cores this process may use) is the budget. Encoders (the first stage: fed by raw inputs only) run
at the same time: at load each is timed on zeros of its example shape; all but the costliest get a
cost share of the budget (at least one thread) on lower-priority helper threads, the costliest the
rest plus one thread per other encoder on the calling thread (the plan and its costs:
:attr:`Pipeline.schedule`; why:
:mod:`mmedge.schedule`). Later components, and every component with ``threads=1`` or
``lazy=True``, run one after another with the whole budget. Inter-op threads are 1: components
are small sequential graphs. Where every component is placed on OpenVINO, or quantize measured it
faster (the manifest's ``whole_graph``), they run instead as one OpenVINO graph, one request per
call (:mod:`mmedge.openvino_graph`, :attr:`Pipeline.whole_graph`).

Thread safety: ``run`` and ``encode`` may be called from many threads at once. ORT sessions
are safe for concurrent ``run``; lazy session creation and tokenizer loading take a lock; every
call builds its own feeds and IO bindings.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import numpy as np

from mmedge.bundle import Bundle, Manifest, is_batch_symbol, load_bundle, verify_component_file
from mmedge.cpu import int8_kernels_saturate
from mmedge.errors import ConfigError, InputError, MMEdgeError, SaturationWarning
from mmedge.graph import Graph
from mmedge.openvino_graph import MAX_SHAPES, OpenVINOGraph
from mmedge.providers import OPENVINO
from mmedge.runtime._inputs import Feeds, InputRouter
from mmedge.runtime.generate import Generation, Generator, no_decoder_error
from mmedge.runtime.limits import DEFAULT_LIMITS, InputLimits
from mmedge.runtime.policy import (
    DEFAULT_MAX_PARTITIONS,
    ProviderPolicy,
    check_partitions,
    component_plans,
    one_openvino_graph,
)
from mmedge.runtime.validate import describe, nonfinite_problems, short_repr
from mmedge.schedule import Schedule, example_zeros, helper_pool, plan_encoders, run_stages
from mmedge.sessions import (
    GRAPH_OPTIMIZATION,
    ComponentPlacement,
    ComponentSession,
    SessionSettings,
    default_thread_budget,
    make_folder,
    open_session,
    run_boundary,
    to_numpy,
)

__all__ = ["CACHE_DIR_HELP", "STRICT_HELP", "WHOLE_GRAPH", "Pipeline"]

log = logging.getLogger("mmedge.runtime")

T = TypeVar("T")
WHOLE_GRAPH = "one OpenVINO graph"  # the trace's component name for it
STRICT_HELP = "fail instead of running any node on the CPU when an accelerator is asked for (ProviderError names them)"
CACHE_DIR_HELP = (
    "folder on this machine where what OpenVINO runs is kept compiled, so later starts (and other "
    "worker processes) open faster and with less memory; about twice the model's size on disk per input shape"
)
MAX_THREADS = 1024  # more intra-op threads than this is a typo; onnxruntime would fail to allocate them
Trace = Callable[[str, str, int, int], None]  # (kind, name, start_ns, end_ns)


class Pipeline:
    """Run an mmedge bundle: preprocessing → encoders (concurrently) → head, torch-free.

    Args:
        bundle: a bundle directory (validated with ``load_bundle``) or a loaded :class:`Bundle`.
        providers: ``"auto"`` (best available: TensorRT, CUDA, CoreML, NNAPI, XNNPACK, QNN, then
            CPU), ``"cpu"``, ``"cuda"``, another short name, an ORT provider name, or a list of
            names / ``(name, options)`` pairs in priority order. Or a dict of those per component:
            keys are component names, modalities or ``"*"`` (``{"image": "coreml", "text": "cpu",
            "*": "auto"}``); a component takes its name's entry, else its modality's, else "*"'s,
            else "auto".
        strict: no node may fall back to the CPU when an accelerator is asked for: onnxruntime's
            ``session.disable_cpu_ep_fallback``. A component the accelerator cannot take whole
            raises ProviderError naming the nodes left over.
        max_partitions: warn (:class:`~mmedge.errors.PartitionWarning`) when an accelerator takes
            a component in more pieces than this (each border is a copy to and from the CPU);
            None: never. The pieces per provider are in ``providers_used``.
        threads: CPU thread budget (default: physical cores); the encoders share it by their cost,
            measured at load (:attr:`schedule`).
        fallback: if a requested provider is unavailable or fails, run on the next one instead of
            raising ProviderError; every drop is logged and shown in ``providers_used``.
        lazy: create each session on first use instead of now (no load-time probe, so the encoders
            run one after another).
        optimized_model_dir: where ORT saves each component's optimised graph (for inspection, or
            to skip optimisation later). At level "all" it may hold CPU-specific layouts: reuse it
            only on the same kind of machine with the same providers.
        graph_optimization: ORT graph optimisation level: "all", "extended", "basic" or "disable".
        check_hashes: verify the sha256 of every file when loading from a directory.
        trace: for profiling (``mmedge bench``): called after each step of a call with ``(kind,
            name, start_ns, end_ns)`` from ``time.perf_counter_ns``; kind is "preprocess",
            "component" (name = the component; called from encoder threads too), "execute" (all
            components) or "postprocess". None (the default) costs nothing.
        limits: the largest batch, array and string a call accepts (:class:`InputLimits`); larger
            values are refused with InputError before any work is done.
        cache_dir: a folder on this machine where what OpenVINO runs is kept compiled (its model
            cache) and the one OpenVINO graph kept composed per input shape (OpenVINO IR, named by a
            hash of the files, wiring, shapes and OpenVINO version), so a later Pipeline of the same
            bundle here opens in a fraction of the time and memory (:mod:`mmedge.openvino_cache`;
            disk: about twice the component files per shape). None (the default) writes nothing.
            Entries that cannot be written or read are rebuilt with a warning, never an error.
        compile_in_background: for servers: a call at an input shape the one OpenVINO graph
            (:attr:`whole_graph`) has not compiled does not wait for its compile (a second or more
            for a large model): its batch size rounded down to a power of two compiles on a
            background thread, and calls run in chunks of the batch sizes compiled (or, where none
            fit, component by component). False (the default): the first call at a new shape
            compiles that shape.
        max_graph_shapes: how many input shapes the one OpenVINO graph compiles, each a compiled
            model with its own copy of the weights (default :data:`mmedge.openvino_graph.MAX_SHAPES`);
            further batch sizes run in chunks of the compiled ones.

    A call never returns NaN or Inf in a float output: when finite inputs drive the model out of
    its numeric range, it raises InputError naming the inputs instead.
    """

    def __init__(
        self,
        bundle: str | os.PathLike[str] | Bundle,
        providers: ProviderPolicy = "auto",
        *,
        threads: int | None = None,
        fallback: bool = False,
        strict: bool = False,
        max_partitions: int | None = DEFAULT_MAX_PARTITIONS,
        lazy: bool = False,
        optimized_model_dir: str | os.PathLike[str] | None = None,
        graph_optimization: str = "all",
        check_hashes: bool = True,
        trace: Trace | None = None,
        limits: InputLimits = DEFAULT_LIMITS,
        cache_dir: str | os.PathLike[str] | None = None,
        compile_in_background: bool = False,
        max_graph_shapes: int = MAX_SHAPES,
    ) -> None:
        _check_options(
            bundle=bundle,
            threads=threads,
            optimized_model_dir=optimized_model_dir,
            cache_dir=cache_dir,
            graph_optimization=graph_optimization,
            trace=trace,
            limits=limits,
            compile_in_background=compile_in_background,
            max_graph_shapes=max_graph_shapes,
        )
        self._bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle, check_hashes=check_hashes)
        _warn_unchecked_saturation(self._bundle.manifest)
        self._graph = Graph(self._bundle.manifest)
        self._generator = Generator(self._bundle) if self._bundle.manifest.generation is not None else None
        self._router = InputRouter(self._bundle, self._graph, limits)
        if max_partitions is not None and (isinstance(max_partitions, bool) or not isinstance(max_partitions, int)):
            raise ConfigError(f"max_partitions must be an int or None, found {max_partitions!r}")
        self._plans = component_plans(providers, self._bundle.manifest, fallback=fallback)
        for message in dict.fromkeys(m for plan in self._plans.values() for m in plan.fallbacks):
            log.warning("provider fallback: %s", message)
        self._max_partitions = max_partitions
        self._settings = SessionSettings(
            graph_optimization=graph_optimization,
            optimized_model_dir=Path(optimized_model_dir) if optimized_model_dir is not None else None,
            strict=bool(strict),
            cache_dir=Path(cache_dir) if cache_dir is not None else None,
        )
        self._budget = threads or default_thread_budget()
        self._schedule = Schedule({c: self._budget for stage in self._graph.full_plan for c in stage})
        self._sessions: dict[str, ComponentSession] = {}
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._closed = False
        self._trace = trace
        self._compile_wait = not compile_in_background
        self._max_graph_shapes = max_graph_shapes
        self._whole = self._open_whole(providers, lazy)
        if self._whole is not None:
            return  # the components' own sessions open only if encode() or precomputed outputs need them
        if not lazy:  # components no output depends on (a monolithic baseline, say) are never loaded
            for stage in self._graph.full_plan:
                for name in stage:
                    self._session(name)
            self._plan_encoders()

    # -- public API -----------------------------------------------------------------------------

    @property
    def manifest(self) -> Manifest:
        """The bundle's manifest: inputs, components, wiring, outputs."""
        return self._bundle.manifest

    @property
    def schedule(self) -> Schedule:
        """Intra-op threads per component, which encoders run concurrently, and their probed cost."""
        return self._schedule

    @property
    def whole_graph(self) -> tuple[str, ...]:
        """The components ``run`` runs as one OpenVINO graph (one request per call), in wiring order; () if none.

        Where every one is placed on OpenVINO, or ``mmedge quantize`` measured the one graph faster
        on this kind of CPU (the manifest's ``whole_graph``) and every provider request is "auto" or
        "cpu" (:func:`mmedge.runtime.policy.one_openvino_graph`, :mod:`mmedge.openvino_graph`). The
        graph is compiled for the first few input shapes a Pipeline meets (``max_graph_shapes``); further
        batch sizes run in chunks of the compiled ones, other shapes component by component.
        """
        return self._whole.components if self._whole is not None else ()

    @property
    def providers_used(self) -> dict[str, ComponentPlacement]:
        """Per loaded component: requested and registered providers, nodes and partitions per provider, fallbacks."""
        with self._lock:
            whole = {name: ComponentPlacement(name, self._plans[name].names, (OPENVINO,)) for name in self.whole_graph}
            return {**whole, **{name: s.placement for name, s in self._sessions.items()}}

    def run(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Run the whole model; returns the manifest's outputs by name.

        ``inputs`` maps input names (or modalities) to a model tensor, one raw item, or a list of
        raw items (a batch); precomputed encoder outputs (from :meth:`encode`) may replace an
        encoder's inputs. Raises InputError listing every problem before anything runs.
        """
        if self._generator is not None:
            raise InputError(
                "this bundle generates sequences with a decoder (role: decoder): call "
                "Pipeline.generate(inputs) (or `mmedge run`, which prints the caption) instead of run()"
            )
        targets = self._graph.outputs
        feeds = self._timed("preprocess", "", self._router.resolve, inputs, targets)
        if feeds.lengths:  # clips of different lengths that keep them: each runs alone
            symbol, whole = _rows_apart(self.manifest, feeds)
            rows = [self._run_feeds(row, targets) for row in feeds.rows(whole)]
            return _joined(self.manifest, rows, symbol)
        return self._run_feeds(feeds, targets)

    def _run_feeds(self, feeds: Feeds, targets: Sequence[str]) -> dict[str, np.ndarray]:
        values = self._timed("execute", "", self._run_plan, feeds, targets)
        return self._timed("postprocess", "", self._outputs, values, feeds)

    def generate(
        self, inputs: Any, *, max_len: int | None = None, strategy: str = "greedy", beam_size: int = 4
    ) -> Generation:
        """Generate one sequence per item (a caption per image) with the bundle's decoder.

        ``inputs`` is the value of the bundle's raw input (one image, or a list of them: a batch)
        or a dict as :meth:`run` takes. ``strategy`` is "greedy" or "beam" (``beam_size``
        hypotheses per item, see :mod:`mmedge.decoding` for scoring and lengths); ``max_len``
        defaults to the bundle's ``max_length``. Components before the decoder run once, then the
        decoder once per token. Raises InputError for a bundle without a decoder.
        """
        if self._generator is None:
            raise no_decoder_error(self._bundle)
        decoder = self._generator.spec.decoder
        targets = self._graph.upstream(decoder)
        given = self._generator.inputs(inputs, self._graph.raw_inputs(self._graph.needed(targets)))
        feeds = _one_length(self._timed("preprocess", "", self._router.resolve, given, targets), "generate")
        values = self._timed("execute", "", self._execute, feeds, targets)
        session = self._session(decoder)
        return self._generator.run(
            lambda feed: self._timed("component", decoder, session.run, feed),
            self._graph.feeds(decoder, feeds.raw, values),
            max_len=max_len,
            strategy=strategy,
            beam_size=beam_size,
        )

    def encode(self, name: str, x: Any) -> dict[str, np.ndarray]:
        """Run one encoder: ``name`` is a modality, raw input or component name.

        ``x`` is the value of that encoder's raw input (any form :meth:`run` accepts), or a dict
        by input name if it has several. Returns its outputs by tensor name; pass them to
        :meth:`run` to skip the encoder there.
        """
        component = self._graph.encoder_for(name)
        raw_names = sorted(self._graph.raw_inputs([component]) - self._router.mask_inputs.keys())
        inputs = x if isinstance(x, Mapping) else ({raw_names[0]: x} if len(raw_names) == 1 else x)
        if not isinstance(inputs, Mapping):
            raise InputError(f"{component!r} takes several inputs ({', '.join(raw_names)}); pass a dict of them")
        feeds = _one_length(self._router.resolve(inputs, [component]), "encode")
        outputs = {k: to_numpy(v) for k, v in self._execute(feeds, [component])[component].items()}
        _check_finite(outputs, feeds)
        return outputs

    def close(self) -> None:
        """Release the sessions (and the one OpenVINO graph) and the encoder thread pool; the Pipeline
        cannot run afterwards."""
        with self._lock:
            self._closed = True
            self._sessions.clear()
            whole, self._whole = self._whole, None  # a call now takes the split path, whose sessions say it is closed
        if whole is not None:
            whole.graph.join()  # no compile outlives the Pipeline
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        names = {c: list(p.names) for c, p in self._plans.items()}
        shown = next(iter(names.values())) if len({repr(n) for n in names.values()}) == 1 else names
        return f"Pipeline({str(self._bundle.path)!r}, providers={shown!r})"

    # -- internals ------------------------------------------------------------------------------

    def _session(self, name: str) -> ComponentSession:
        with self._lock:
            if self._closed:
                raise MMEdgeError("this Pipeline is closed; create a new one")
            session = self._sessions.get(name)
            if session is None:
                session = self._sessions[name] = self._open(name, self._schedule.threads.get(name, self._budget))
            return session

    def _open(self, name: str, threads: int) -> ComponentSession:
        session = open_session(self._bundle, name, self._plans[name], threads, self._settings)
        check_partitions(session.placement, self._max_partitions)
        return session

    def _open_whole(self, providers: ProviderPolicy, lazy: bool) -> _WholeGraph | None:
        """The needed components as one OpenVINO graph, where the plans or the manifest say so."""
        needed = self._graph.needed(self._graph.outputs)
        components = tuple(c for c in self._graph.order() if c in needed)
        why = one_openvino_graph(providers, self.manifest, self._plans, components)
        if why is None:
            return None
        try:
            files = {c: self._bundle.openvino_path(c) for c in components}
            for c in components:
                verify_component_file(self._bundle, c)
            # the cache names the graph by its files' hashes: those load_bundle checked need no second read
            digests = {c: self._bundle.openvino_sha256(c) for c in components} if self._bundle.check_hashes else None
            graph = OpenVINOGraph(
                self.manifest,
                files,
                components,
                self._budget,
                cache_dir=self._settings.cache_dir,
                digests=digests,
                max_shapes=self._max_graph_shapes,
            )
            whole = _WholeGraph(components, graph)
            example = example_zeros(self._graph, components)
            if not lazy and example is not None:  # compile and warm up at the example shapes now, not in a call
                whole.graph.run(example)
        except MMEdgeError:
            raise
        except Exception as e:  # noqa: BLE001 - OpenVINO cannot compose or compile it: each component runs alone
            log.warning("running the components one by one: OpenVINO cannot run them as one graph (%s)", e)
            return None
        log.info("running %s as one OpenVINO graph: %s", ", ".join(components), why)
        return whole

    def _run_plan(self, feeds: Feeds, targets: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The one graph where it runs this call, else the components one by one."""
        values = self._run_whole(feeds) if self._whole is not None and not feeds.provided else None
        return self._execute(feeds, targets) if values is None else values

    def _run_whole(self, feeds: Feeds) -> dict[str, dict[str, Any]] | None:
        """Every manifest output the one graph produces, by component and tensor; None for a shape
        its compiled ones cannot run (:meth:`mmedge.openvino_graph.OpenVINOGraph.run`)."""
        assert self._whole is not None
        start = time.perf_counter_ns()
        with run_boundary(WHOLE_GRAPH, feeds.raw):
            produced = self._whole.graph.run(feeds.raw, wait=self._compile_wait)
        if produced is None:
            return None
        if self._trace is not None:  # traced only when it ran (not _timed: a None ran nothing)
            self._trace("component", WHOLE_GRAPH, start, time.perf_counter_ns())
        values: dict[str, dict[str, Any]] = {}
        for (component, tensor), value in produced.items():
            values.setdefault(component, {})[tensor] = value
        return values

    def _plan_encoders(self) -> None:
        """Time the encoders once and share the thread budget between them (see mmedge.schedule)."""
        plan = plan_encoders(self._graph, self._budget, lambda c, feed: self._sessions[c].run(feed))
        if plan is None:
            return
        for name, n in plan.threads.items():
            if n != self._budget:
                self._sessions[name] = self._open(name, n)
        self._schedule = Schedule({**self._schedule.threads, **plan.threads}, plan.concurrent, plan.costs_ms)
        self._pool = helper_pool(plan)

    def _execute(self, feeds: Feeds, targets: Sequence[str] | frozenset[str]) -> dict[str, dict[str, Any]]:
        """Run the needed components stage by stage; returns every component's outputs."""
        stages = self._graph.stages(targets, frozenset(feeds.provided))
        return run_stages(
            self._graph,
            stages,
            self._run_component,
            feeds.raw,
            dict(feeds.provided),
            schedule=self._schedule,
            pool=self._pool,
        )

    def _run_component(self, name: str, feed: Mapping[str, Any]) -> dict[str, Any]:
        return self._timed("component", name, self._session(name).run, feed)

    def _outputs(self, values: Mapping[str, Mapping[str, Any]], feeds: Feeds) -> dict[str, np.ndarray]:
        outputs = {o.name: to_numpy(values[o.component][o.tensor]) for o in self.manifest.outputs}
        _check_finite(outputs, feeds)
        return outputs

    def _timed(self, kind: str, name: str, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)``, reported to the trace hook when there is one."""
        if self._trace is None:
            return fn(*args)
        start = time.perf_counter_ns()
        result = fn(*args)
        self._trace(kind, name, start, time.perf_counter_ns())
        return result


@dataclass(frozen=True)
class _WholeGraph:
    components: tuple[str, ...]
    graph: OpenVINOGraph


def _one_length(feeds: Feeds, call: str) -> Feeds:
    """``feeds`` whose clips share one length: outputs of clips run at their own lengths differ in shape,
    so only ``run`` (whose outputs are per clip) takes a batch of clips of different lengths."""
    if feeds.lengths:
        name, lengths = next(iter(feeds.lengths.items()))
        raise InputError(
            f"input {name!r}: its clips keep their own lengths (the recipe's pad = false) and these differ "
            f"({', '.join(map(str, lengths))} long); {call}() them one at a time, or call run()"
        )
    return feeds


def _rows_apart(manifest: Manifest, feeds: Feeds) -> tuple[str, frozenset[str]]:
    """Clips of different lengths run one by one, which only outputs of independent rows allow, or outputs
    that score each clip against every item of inputs counting their own items (label texts). Returns the
    clips' batch symbol and the inputs and precomputed components given whole to every clip's run."""
    name, lengths = next(iter(feeds.lengths.items()))
    symbol = manifest.input(name).shape[0]
    shared = [o.name for o in manifest.outputs if manifest.output_shape(o.name).count(symbol) > 1]
    if shared:
        raise InputError(
            f"input {name!r}: its clips keep their own lengths (the recipe's pad = false), so clips of different "
            f"lengths ({', '.join(map(str, lengths))}) run one by one, but output(s) {', '.join(map(repr, shared))} "
            "pair every row with every other; give clips of one length, or one clip per call"
        )
    apart = {n for n in feeds.raw if manifest.input(n).shape[:1] != (symbol,)}
    apart |= {c for c in feeds.provided if any(t.shape[:1] != (symbol,) for t in manifest.component(c).outputs)}
    return str(symbol), frozenset(apart)


def _joined(manifest: Manifest, rows: Sequence[Mapping[str, np.ndarray]], symbol: str) -> dict[str, np.ndarray]:
    """Each clip's outputs joined along the clips' axis; an output that has none but counts other items (the
    labels' embeddings of a zero-shot call) is the same in every row, and is given once."""
    out = {}
    for o in manifest.outputs:
        shape = manifest.output_shape(o.name)
        if symbol in shape or not any(map(is_batch_symbol, shape)):
            out[o.name] = np.concatenate(
                [row[o.name] for row in rows], axis=shape.index(symbol) if symbol in shape else 0
            )
        else:
            out[o.name] = rows[0][o.name]
    return out


def _check_options(
    *,
    bundle: Any,
    threads: Any,
    optimized_model_dir: Any,
    cache_dir: Any,
    graph_optimization: Any,
    trace: Any,
    limits: Any,
    compile_in_background: Any,
    max_graph_shapes: Any,
) -> None:
    """ConfigError for the first invalid Pipeline argument, before any file is read."""
    is_int = isinstance(threads, int) and not isinstance(threads, bool)
    checks = [
        (isinstance(bundle, str | os.PathLike | Bundle), "bundle must be a directory path or a loaded Bundle", bundle),
        (
            threads is None or (is_int and 1 <= threads <= MAX_THREADS),
            f"threads must be a positive int (at most {MAX_THREADS}) or None",
            threads,
        ),
        (
            optimized_model_dir is None or isinstance(optimized_model_dir, str | os.PathLike),
            "optimized_model_dir must be a directory path or None",
            optimized_model_dir,
        ),
        (
            cache_dir is None or isinstance(cache_dir, str | os.PathLike),
            "cache_dir must be a directory path or None",
            cache_dir,
        ),
        (
            graph_optimization in GRAPH_OPTIMIZATION,
            f"graph_optimization must be one of {GRAPH_OPTIMIZATION}",
            graph_optimization,
        ),
        (trace is None or callable(trace), "trace must be a callable(kind, name, start_ns, end_ns) or None", trace),
        (isinstance(limits, InputLimits), "limits must be an InputLimits", limits),
        (isinstance(compile_in_background, bool), "compile_in_background must be True or False", compile_in_background),
        (
            isinstance(max_graph_shapes, int) and not isinstance(max_graph_shapes, bool) and max_graph_shapes >= 1,
            "max_graph_shapes must be a positive int",
            max_graph_shapes,
        ),
    ]
    for ok, message, value in checks:
        if not ok:
            raise ConfigError(f"{message}, found {short_repr(value)}")
    for option, folder in (("optimized_model_dir", optimized_model_dir), ("cache_dir", cache_dir)):
        if folder is not None:
            make_folder(option, folder)


def _warn_unchecked_saturation(manifest: Manifest) -> None:
    """SaturationWarning for INT8 components whose 8-bit weights were checked only on a CPU
    whose INT8 kernels cannot saturate, when this CPU's can (see :mod:`mmedge.cpu`)."""
    if not int8_kernels_saturate():
        return
    for c in manifest.components:
        record = c.quantization or {}
        recipe, checked = record.get("recipe") or {}, record.get("kernels_checked_on") or {}
        full_range = c.precision == "int8" and not recipe.get("reduce_range")
        if full_range and checked and not checked.get("saturating"):
            warnings.warn(
                SaturationWarning(
                    f"{c.name} was quantized with 8-bit weights on {checked.get('cpu') or 'a CPU'}, whose INT8 "
                    "kernels cannot saturate; this CPU has no VNNI, so its kernels can (int16 sums), and the "
                    "outputs may be off. Re-quantize on this kind of CPU: mmedge quantize checks the kernels "
                    "and uses 7-bit weights where they saturate."
                ),
                stacklevel=3,
            )


def _check_finite(outputs: Mapping[str, np.ndarray], feeds: Feeds) -> None:
    """Refuse NaN/Inf outputs: inputs were checked finite, so values out of the model's range caused them."""
    problems = [p for name, value in outputs.items() for p in nonfinite_problems(f"output {name!r}", value)]
    if problems:
        fed = [f"{name}: {describe(t.dtype, t.shape)}" for name, t in feeds.raw.items()]
        fed += [f"{c} outputs" for c in feeds.provided]
        raise InputError(
            f"the model computed NaN or Inf from finite inputs ({', '.join(fed)}): {'; '.join(problems)}. "
            "Some input values are outside the range the model works in (audio beyond [-1, 1], "
            "un-normalised image tensors, extreme encoder outputs); check how they are scaled"
        )
