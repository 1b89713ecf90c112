"""A bundle's components as one OpenVINO graph: one infer request per call instead of one per component.

Why: a small encoder costs OpenVINO a request's start-up (waking its thread pool, scheduling) that
can exceed its math, so quantize's backend check leaves small components on onnxruntime, and they
then run beside (and slow) the large one. Composed into one graph, they run inside the large
encoder's request with no per-request cost: in the multi-process benchmark TriModal-224 INT8 ran
1.14× faster that way than split, level with OpenVINO + NNCF's whole-model INT8
(``benchmarks/results/peers.md``; timed in one process the two plans are close, NOTES). The
components keep their files, recipes and scales: the graph is wired in memory from the wiring.

Shapes: each input-shape signature a call brings is compiled once with every dimension fixed, up
to :data:`MAX_SHAPES` of them; a further batch size runs in chunks of the compiled ones, and a
shape no chunks make up (another sequence length, say) returns None: the caller runs the
components one by one (the Pipeline's split plan). ``run(..., wait=False)`` never compiles in the
call: a new shape compiles on a background thread while its calls run in chunks, so a server's
request never waits the second or so a compile of a large model takes. The composed graph is
never compiled with dynamic dimensions: OpenVINO's CPU plugin then runs it slower, and on
TriModalNet-224 wrongly (its INT8 image encoder, right alone at any shape, drifts inside the
dynamic composed graph). The bound holds memory too: every fixed shape is a compiled model with
weights of its own (both measured in ``benchmarks/NOTES.md``). With a cache folder each fixed shape
is kept composed and compiled there (:mod:`mmedge.openvino_cache`), and the graph is composed in
memory only for a shape it lacks.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmedge.bundle import RAW_INPUTS, Manifest, has_batch_axis
from mmedge.openvino_backend import compile_config
from mmedge.openvino_cache import GraphCache

__all__ = ["MAX_SHAPES", "OpenVINOGraph"]

log = logging.getLogger("mmedge.runtime")

# Compiled shape signatures kept per graph: the deploy shape and a few batch sizes or lengths.
# Each costs a compile (tens of ms to a second or more) and a compiled model's memory (its weights again).
MAX_SHAPES = 4


class OpenVINOGraph:
    """``components`` of ``manifest`` (files under ``files``) composed by the wiring and run by OpenVINO.

    Inputs are the raw inputs the components take (model tensors, by the manifest's input
    names); outputs are the manifest outputs the components produce. ``run`` may be called from
    many threads at once (an infer request per thread and compiled shape). ``cache_dir``: keep each
    fixed shape there (:mod:`mmedge.openvino_cache`); ``digests``: the files' sha256 by component
    where already checked, so naming the cache entry reads no file again; ``max_shapes``: how many
    shapes to compile (each a compiled model with its own copy of the weights).
    """

    def __init__(
        self,
        manifest: Manifest,
        files: Mapping[str, Path],
        components: Sequence[str],
        threads: int,
        *,
        cache_dir: Path | None = None,
        digests: Mapping[str, str] | None = None,
        max_shapes: int = MAX_SHAPES,
    ) -> None:
        self._source = (manifest, dict(files), tuple(components))
        self.inputs = _raw_inputs(manifest, components)
        self.outputs = tuple((o.component, o.tensor) for o in manifest.outputs if o.component in components)
        self._batch_major = _batch_major(manifest, self.inputs, self.outputs)
        self._cache = None if cache_dir is None else GraphCache(cache_dir, manifest, files, components, digests)
        self._model: Any = None
        if self._cache is None:
            self._composed()  # with a cache: only once a shape is not in it
        self._config = compile_config(threads, cache_dir)
        self._max_shapes = max_shapes
        self._compiled: dict[tuple, Any] = {}
        self._compiling: dict[tuple, threading.Thread] = {}  # shapes compiled in the background (wait=False)
        self._lock = threading.Lock()
        self._compile_lock = threading.Lock()  # one compile at a time: they share the composed model
        self._local = threading.local()

    @property
    def shapes(self) -> tuple[tuple[tuple[int, ...], ...], ...]:
        """The input-shape signatures compiled so far (every dimension fixed)."""
        with self._lock:
            return tuple(self._compiled)

    def run(self, feeds: Mapping[str, np.ndarray], *, wait: bool = True) -> dict[tuple[str, str], np.ndarray] | None:
        """The outputs by (component, tensor) for ``feeds`` (raw input name → array); None when no
        compiled shape can run them (run the components one by one instead).

        A shape is compiled on first use, up to ``max_shapes``; a batch size past them runs in
        chunks of the compiled batch sizes (:meth:`_in_chunks`). ``wait=False``: a new shape is
        compiled on a background thread and, until it is ready, its calls run in those chunks too,
        so no call waits for a compile (see :meth:`join`); there the batch sizes compiled are powers of
        two (:meth:`_bucket`).
        """
        arrays = [np.ascontiguousarray(feeds[name]) for name in self.inputs]
        signature = tuple(a.shape for a in arrays)
        request = self._request(signature, self._compile if wait else self._compiled_or_started)
        return self._infer(request, arrays) if request is not None else self._in_chunks(arrays)

    def _infer(self, request: Any, arrays: Sequence[np.ndarray]) -> dict[tuple[str, str], np.ndarray]:
        import openvino as ov

        # tensors set directly over the callers' arrays (no copy in; the call is synchronous):
        # infer(dict or list) costs a tenth of a millisecond more in its Python dispatch
        for i, array in enumerate(arrays):
            request.set_input_tensor(i, ov.Tensor(array, shared_memory=True))
        request.infer()
        # copied out: the request reuses its output tensors on the next call
        return {key: request.get_output_tensor(i).data.copy() for i, key in enumerate(self.outputs)}

    def _in_chunks(self, arrays: Sequence[np.ndarray]) -> dict[tuple[str, str], np.ndarray] | None:
        """A batch run in chunks of the batch sizes compiled for the same other dimensions, largest
        first, outputs stacked; None when they cannot add up to it or a tensor is not batch-major.

        Why: a new batch size otherwise costs a compile (a second or more for a large model, and a
        compiled model's memory) or the split plan's sessions (opened on first use, a second copy of
        every weight); a chunk costs about what its rows do inside a larger batch for the large
        models the one graph is chosen for (``benchmarks/NOTES.md``).
        """
        if not self._batch_major or len({a.shape[0] for a in arrays}) != 1:
            return None
        rest = [a.shape[1:] for a in arrays]
        with self._lock:
            sizes = sorted({s[0][0] for s in self._compiled if [d[1:] for d in s] == rest}, reverse=True)
        plan, left = [], arrays[0].shape[0]
        for size in sizes:
            plan += [size] * (left // size)
            left %= size
        if left or not plan:
            return None
        parts, start = [], 0
        for size in plan:
            chunk = [a[start : start + size] for a in arrays]
            request = self._request(tuple(c.shape for c in chunk), self._compiled_only)
            parts.append(self._infer(request, chunk))
            start += size
        if any(
            v.ndim == 0 or v.shape[0] != size for part, size in zip(parts, plan, strict=True) for v in part.values()
        ):
            return None
        return {key: np.concatenate([part[key] for part in parts]) for key in self.outputs}

    def join(self, timeout: float | None = None) -> None:
        """Wait for the shapes compiling in the background (``run(..., wait=False)``) to be ready."""
        with self._lock:
            threads = list(self._compiling.values())
        for thread in threads:
            thread.join(timeout)

    def _request(self, signature: tuple[tuple[int, ...], ...], compiled_for: Callable[[tuple], Any]) -> Any:
        """This thread's infer request for ``signature``, from ``compiled_for(signature)`` (None: none)."""
        requests = getattr(self._local, "requests", None)
        if requests is None:
            requests = self._local.requests = {}
        if signature not in requests:
            compiled = compiled_for(signature)
            if compiled is None:
                return None
            requests[signature] = compiled.create_infer_request()
        return requests[signature]

    def _compiled_only(self, signature: tuple[tuple[int, ...], ...]) -> Any:
        with self._lock:
            return self._compiled.get(signature)

    def _compile(self, signature: tuple[tuple[int, ...], ...]) -> Any:
        """The graph compiled at ``signature``, compiled now unless ``max_shapes`` already are (None)."""
        self.join()  # a shape compiling in the background is waited for, not compiled twice
        with self._lock:
            if signature not in self._compiled:
                if len(self._compiled) + len(self._compiling) >= self._max_shapes:
                    return None
                with self._compile_lock:
                    self._compiled[signature] = self._compiled_model(signature)
            return self._compiled[signature]

    def _compiled_or_started(self, signature: tuple[tuple[int, ...], ...]) -> Any:
        """The graph compiled at ``signature`` if it is; else None, and the compile of its batch
        size's bucket (:meth:`_bucket`) started on a background thread if there is room for it."""
        with self._lock:
            compiled = self._compiled.get(signature)
            if compiled is not None:
                return compiled
            bucket = self._bucket(signature)
            if bucket in self._compiled or bucket in self._compiling:
                return None
            if len(self._compiled) + len(self._compiling) >= self._max_shapes:
                return None
            thread = threading.Thread(
                target=self._compile_in_background, args=(bucket,), name="mmedge-openvino-compile"
            )
            self._compiling[bucket] = thread
            thread.start()  # under the lock: join() never meets a thread not yet started
        return None

    def _bucket(self, signature: tuple[tuple[int, ...], ...]) -> tuple[tuple[int, ...], ...]:
        """``signature`` with its batch size rounded down to a power of two (batch-major graphs).

        Why: a server's batches come in every size up to its largest; compiled at 1, 2, 4, 8 any
        batch up to 15 runs in at most four chunks of compiled sizes, where compiling the first sizes
        met (say 1, 5, 9, 12) leaves others in chunks of one row (1.16–1.19× slower per row).
        """
        batch = signature[0][0] if signature and signature[0] else 0
        if not self._batch_major or batch < 1:
            return signature
        size = 1 << (batch.bit_length() - 1)
        return tuple((size, *shape[1:]) for shape in signature)

    def _compile_in_background(self, signature: tuple[tuple[int, ...], ...]) -> None:
        """Compile ``signature`` and keep it; a failure is logged, and calls of that shape keep
        running in chunks of the compiled ones (or component by component)."""
        try:
            with self._compile_lock:
                compiled = self._compiled_model(signature)
        except Exception as e:  # noqa: BLE001 - nobody waits on this thread to raise to
            log.warning(
                "shape %s runs in chunks or component by component: OpenVINO cannot compile it (%s)", signature, e
            )
            return  # stays in _compiling (counted against max_shapes) so it is not tried on every call
        with self._lock:
            self._compiled.setdefault(signature, compiled)
            del self._compiling[signature]

    def _compiled_model(self, signature: tuple[tuple[int, ...], ...]) -> Any:
        """The graph compiled at ``signature``, from the cache where it holds it."""
        import openvino as ov

        core = ov.Core()
        xml = self._cache.path(signature) if self._cache is not None else None
        if xml is not None and xml.is_file():
            try:
                return core.compile_model(str(xml), "CPU", self._config)
            except Exception as e:  # noqa: BLE001 - a damaged entry is rebuilt below
                log.warning("composing the OpenVINO graph again: cached %s cannot be compiled (%s)", xml, e)
        model = self._composed().clone()
        model.reshape({p: ov.PartialShape(list(s)) for p, s in zip(model.inputs, signature, strict=True)})
        if xml is not None and self._cache is not None and self._cache.keep(model, xml):
            self._model = None  # composed again only for another shape the cache lacks
            return core.compile_model(str(xml), "CPU", self._config)  # from the file: OpenVINO caches it by the file
        return core.compile_model(model, "CPU", self._config)

    def _composed(self) -> Any:
        """The components composed in memory (once)."""
        if self._model is None:
            self._model, inputs = _compose(*self._source)
            if inputs != self.inputs:  # both follow the manifest's wiring in the same order
                raise RuntimeError(f"composed graph inputs {inputs} differ from the wiring's {self.inputs}")
        return self._model


def _batch_major(manifest: Manifest, inputs: Sequence[str], outputs: Sequence[tuple[str, str]]) -> bool:
    """Whether every input and output named has a symbolic first axis (the batch: rows can be
    split and stacked), the rule ``mmedge serve`` merges requests by."""
    specs = {i.name: i.shape for i in manifest.inputs}
    tensors = {(c.name, t.name): t.shape for c in manifest.components for t in c.outputs}
    shapes = [specs.get(name) for name in inputs] + [tensors.get(key) for key in outputs]
    return all(shape is not None and has_batch_axis(shape) for shape in shapes)


def _raw_inputs(manifest: Manifest, components: Sequence[str]) -> tuple[str, ...]:
    """The raw inputs ``components`` read, in the order :func:`_compose` makes their parameters."""
    found = {e.output: None for c in components for e in manifest.edges_into(c) if e.source == RAW_INPUTS}
    return tuple(found)


def _compose(manifest: Manifest, files: Mapping[str, Path], components: Sequence[str]) -> tuple[Any, tuple[str, ...]]:
    """The composed ov.Model (results in the manifest's output order) and its raw input names (in parameter order)."""
    import openvino as ov

    core = ov.Core()
    models = {c: core.read_model(str(files[c])) for c in components}
    produced: dict[tuple[str, str], Any] = {}  # (component, tensor) → the output feeding its Result
    for c, model in models.items():
        for result in model.get_results():
            port = result.input_value(0)
            for name in result.output(0).get_names() | port.get_names():
                produced.setdefault((c, name), port)
    parameters: dict[str, Any] = {}  # raw input → the one Parameter every consumer reads
    for c in components:
        by_name = {p.get_friendly_name(): p for p in models[c].get_parameters()}
        for p in models[c].get_parameters():
            by_name.update((n, p) for n in p.output(0).get_names())
        for edge in manifest.edges_into(c):
            param = by_name[edge.input]
            if edge.source == RAW_INPUTS:
                kept = parameters.setdefault(edge.output, param)
                if kept is not param:
                    _redirect(param, kept.output(0))
            else:
                _redirect(param, produced[(edge.source, edge.output)])
    outputs = tuple((o.component, o.tensor) for o in manifest.outputs if o.component in models)
    results = [ov.opset13.result(produced[key]) for key in outputs]
    for name, param in parameters.items():
        param.set_friendly_name(name)
    model = ov.Model(results, list(parameters.values()), "mmedge-bundle")
    return model, tuple(parameters)


def _redirect(param: Any, source: Any) -> None:
    """Feed every consumer of ``param`` from ``source`` instead."""
    for target in list(param.output(0).get_target_inputs()):
        target.replace_source_output(source)
