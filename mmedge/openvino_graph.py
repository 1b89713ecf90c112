"""A bundle's components as one OpenVINO graph: one infer request per call instead of one per component.

Why: a small encoder costs OpenVINO a request's start-up (waking its thread pool, scheduling) that
can exceed its math, so quantize's backend check leaves small components on onnxruntime, and they
then run beside (and slow) the large one. Composed into one graph, they run inside the large
encoder's request with no per-request cost: in the multi-process benchmark TriModal-224 INT8 ran
1.14× faster that way than split, level with OpenVINO + NNCF's whole-model INT8
(``benchmarks/results/peers.md``; timed in one process the two plans are close, NOTES). The
components keep their files, recipes and scales: the graph is wired in memory from the wiring.

Shapes: each input-shape signature a call brings is compiled once with every dimension fixed, up
to :data:`MAX_SHAPES` of them; for a further shape ``run`` returns None and the caller runs the
components one by one (the Pipeline's split plan). The composed graph is never compiled with
dynamic dimensions: OpenVINO's CPU plugin then runs it slower, and on TriModalNet-224 wrongly (its
INT8 image encoder, right alone at any shape, drifts inside the dynamic composed graph). The bound
holds memory too: every fixed shape is a compiled model with weights of its own (both measured in
``benchmarks/NOTES.md``). With a cache folder each
fixed shape is kept composed and compiled there (:mod:`mmedge.openvino_cache`), and the graph is
composed in memory only for a shape it lacks.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmedge.bundle import RAW_INPUTS, Manifest
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
    where already checked, so naming the cache entry reads no file again.
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
    ) -> None:
        self._source = (manifest, dict(files), tuple(components))
        self.inputs = _raw_inputs(manifest, components)
        self.outputs = tuple((o.component, o.tensor) for o in manifest.outputs if o.component in components)
        self._cache = None if cache_dir is None else GraphCache(cache_dir, manifest, files, components, digests)
        self._model: Any = None
        if self._cache is None:
            self._composed()  # with a cache: only once a shape is not in it
        self._config = compile_config(threads, cache_dir)
        self._compiled: dict[tuple, Any] = {}
        self._lock = threading.Lock()
        self._local = threading.local()

    @property
    def shapes(self) -> tuple[tuple[tuple[int, ...], ...], ...]:
        """The input-shape signatures compiled so far (every dimension fixed)."""
        with self._lock:
            return tuple(self._compiled)

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[tuple[str, str], np.ndarray] | None:
        """The outputs by (component, tensor) for ``feeds`` (raw input name → array); None for a shape
        past the :data:`MAX_SHAPES` compiled ones (run the components one by one instead)."""
        import openvino as ov

        arrays = [np.ascontiguousarray(feeds[name]) for name in self.inputs]
        request = self._request(tuple(a.shape for a in arrays))
        if request is None:
            return None
        # tensors set directly over the callers' arrays (no copy in; the call is synchronous):
        # infer(dict or list) costs a tenth of a millisecond more in its Python dispatch
        for i, array in enumerate(arrays):
            request.set_input_tensor(i, ov.Tensor(array, shared_memory=True))
        request.infer()
        # copied out: the request reuses its output tensors on the next call
        return {key: request.get_output_tensor(i).data.copy() for i, key in enumerate(self.outputs)}

    def _request(self, signature: tuple[tuple[int, ...], ...]) -> Any:
        """This thread's infer request for ``signature``, compiled now if there is room; else None."""
        requests = getattr(self._local, "requests", None)
        if requests is None:
            requests = self._local.requests = {}
        if signature not in requests:
            compiled = self._compile(signature)
            if compiled is None:
                return None
            requests[signature] = compiled.create_infer_request()
        return requests[signature]

    def _compile(self, signature: tuple[tuple[int, ...], ...]) -> Any:
        """The graph compiled at ``signature``, compiled now unless MAX_SHAPES already are (None)."""
        with self._lock:
            if signature not in self._compiled:
                if len(self._compiled) >= MAX_SHAPES:
                    return None
                self._compiled[signature] = self._compiled_model(signature)
            return self._compiled[signature]

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
