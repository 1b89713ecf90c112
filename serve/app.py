"""The HTTP API of a served bundle (FastAPI).

Routes: ``POST /v1/predict`` (the whole model), or ``POST /v1/generate`` for a bundle with a
decoder (captions: ``?strategy=greedy|beam&beam_size=4&max_len=20``; requests with the same
options are micro-batched together), ``POST /v1/encode/{modality}`` (one encoder; one
route per encoder, so the OpenAPI spec gives each its exact inputs), ``GET /v1/model``,
``GET /healthz``, ``GET /metrics`` (Prometheus) and the OpenAPI spec at ``/openapi.json``.

Inference bodies are JSON ``{"inputs": {name: value}}`` or multipart (files for image/audio,
fields for text). Every request goes through one :class:`MicroBatcher`; every client mistake is
a 4xx with a message (400 unparsable or foreign Host, 401 no API key, 403 foreign Origin,
408 body too slow, 413 too large, 415 content type, 422 unusable inputs, 429 server busy),
never a 500; 503 means overloaded or shutting down. Access (:class:`Access`) is checked before a
body is read, and a body is decoded only once the request fits its budgets (:class:`ServerBudget`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Hashable, Mapping
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.formparsers import MultiPartException

from mmedge import __version__
from mmedge.bundle import RANKED_KINDS, InputSpec, Manifest, TensorSpec, has_batch_axis
from mmedge.decoding import Generation
from mmedge.errors import InputError, MMEdgeError
from mmedge.graph import Graph
from mmedge.serve import _openapi
from mmedge.serve._access import Access, AccessGuard
from mmedge.serve._budget import Ledger, OverBudgetError, ServerBudget
from mmedge.serve._inputs import (
    ParsedInputs,
    RequestError,
    RequestLimits,
    from_form,
    from_json,
    generation_options,
)
from mmedge.serve._metrics import Metrics
from mmedge.serve._middleware import RETRY_AFTER_S, TICKET, Admission, RequestMetrics
from mmedge.serve.batcher import BatchPolicy, MicroBatcher, OverloadedError, ShuttingDownError

__all__ = [
    "PipelineLike",
    "ServeOptions",
    "app_for_bundle",
    "batching_problem",
    "create_app",
    "encoder_routes",
    "generation_inputs",
]

log = logging.getLogger("mmedge.serve")

PREDICT = "predict"  # batcher task of /v1/predict; encoders' tasks are ENCODE + component name
ENCODE = "encode:"


@dataclass(frozen=True)
class GenerateTask:
    """The batcher task of ``/v1/generate``: requests merge only with others of the same options,
    and all share one metrics label."""

    strategy: str
    beam_size: int
    max_len: int | None

    def __str__(self) -> str:
        return "generate"


class PipelineLike(Protocol):
    """What serving needs from :class:`mmedge.runtime.Pipeline`."""

    @property
    def manifest(self) -> Manifest: ...

    def run(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]: ...

    def encode(self, name: str, x: Any) -> dict[str, np.ndarray]: ...

    def generate(self, inputs: Any, *, max_len: int | None, strategy: str, beam_size: int) -> Generation: ...


@dataclass(frozen=True)
class ServeOptions:
    """Everything about serving except where (host/port/workers belong to the CLI)."""

    batch: BatchPolicy = field(default_factory=BatchPolicy)
    limits: RequestLimits = field(default_factory=RequestLimits)  # what one request may carry
    max_body_bytes: int = 16 * 1024 * 1024  # larger request bodies are refused with 413
    budget: ServerBudget = field(default_factory=ServerBudget)  # the whole server's work in progress
    access: Access = field(default_factory=Access)  # API key, allowed Host names, CORS origins


def batching_problem(manifest: Manifest) -> str:
    """Why requests of this bundle cannot be merged along axis 0 ('' when they can)."""
    tensors = [(i.name, i.shape) for i in manifest.inputs]
    tensors += [(f"{c.name}.{t.name}", t.shape) for c in manifest.components for t in c.outputs]
    found = [f"{name} {list(shape)}" for name, shape in tensors if not has_batch_axis(shape)]
    if not found:
        return ""
    return (
        f"tensors without a batch axis of independent rows (a fixed first axis, or its symbol on another axis too, "
        f"which pairs every row with every other): {', '.join(found)}"
    )


def generation_inputs(manifest: Manifest) -> tuple[InputSpec, ...]:
    """The raw inputs a bundle with a decoder generates from: those of the components before the decoder."""
    if manifest.generation is None:
        return ()
    graph = Graph(manifest)
    names = graph.raw_inputs(graph.needed(graph.upstream(manifest.generation.decoder)))
    return tuple(i for i in manifest.inputs if i.name in names)


def encoder_routes(manifest: Manifest) -> dict[str, tuple[str, tuple[InputSpec, ...]]]:
    """``/v1/encode/{key}`` → (encoder component, its raw inputs); key = modality, or the component
    name where several encoders share a modality."""
    graph = Graph(manifest)
    encoders = [manifest.component(name) for name in graph.encoders()]
    modalities = [c.modality for c in encoders]
    routes = {}
    for c in encoders:
        key = c.modality if c.modality and modalities.count(c.modality) == 1 else c.name
        names = graph.raw_inputs([c.name])
        routes[key] = (c.name, tuple(i for i in manifest.inputs if i.name in names))
    return routes


class _Server:
    """Per-app state: the pipeline, its batcher, metrics and the routes' input tables."""

    def __init__(self, pipeline: PipelineLike, options: ServeOptions, metrics: Metrics, *, traced: bool) -> None:
        self.manifest = pipeline.manifest
        self.pipeline = pipeline
        self.traced = traced
        self.batching_note = batching_problem(self.manifest)
        policy = options.batch
        if self.batching_note and policy.max_batch > 1:
            log.warning("micro-batching is off for this bundle: %s", self.batching_note)
            policy = replace(policy, max_batch=1)
        self.options = replace(options, batch=policy)
        self.metrics = metrics
        self.ledger = Ledger(options.budget)
        self.batcher = MicroBatcher(self._run_batch, policy, on_batch=self.metrics.observe_batch)
        self.encoders = encoder_routes(self.manifest)

    def _run_batch(self, task: Hashable, inputs: dict[str, Any]) -> dict[str, np.ndarray]:
        """Runs in a batcher thread: the whole model, captions, or one encoder (task ``encode:<component>``)."""
        if task == PREDICT:
            return self.pipeline.run(inputs)
        if isinstance(task, GenerateTask):
            items = self.pipeline.generate(
                inputs, strategy=task.strategy, beam_size=task.beam_size, max_len=task.max_len
            ).items()
            captions = np.empty(len(items), dtype=object)  # one row per item, so the batcher can split them
            captions[:] = items
            return {"captions": captions}
        return self.pipeline.encode(str(task).removeprefix(ENCODE), inputs)

    async def parse(self, request: Request, specs: tuple[InputSpec, ...]) -> ParsedInputs:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        limits = self.options.limits
        ticket = request.scope.get(TICKET)  # decoded bytes are reserved on it, before decoding
        admit = ticket.reserve if ticket is not None else None
        if content_type == "application/json":
            body = await request.body()
            return await run_in_threadpool(from_json, body, self.manifest, specs, limits, admit)
        if content_type == "multipart/form-data":
            fields = await _form_fields(request, len(specs) * limits.max_rows, self.options.max_body_bytes)
            return await run_in_threadpool(from_form, fields, self.manifest, specs, limits, admit)
        raise RequestError(
            415, f"unsupported content type {content_type or 'none'!r}; send application/json or multipart/form-data"
        )

    async def generate(self, request: Request, specs: tuple[InputSpec, ...]) -> JSONResponse:
        task = GenerateTask(**generation_options(request.query_params))
        parsed = await self.parse(request, specs)
        outputs = await self.submit(task, parsed)
        return JSONResponse({"model": self.manifest.model.name, "captions": list(outputs["captions"])})

    async def submit(self, task: Hashable, parsed: ParsedInputs) -> dict[str, np.ndarray]:
        """Through the micro-batcher (its queue limit answers 503), counting the queue for /metrics."""
        self.metrics.queue_depth.set(self.batcher.queued + 1)
        try:
            return await self.batcher.submit(task, parsed.values, parsed.rows)
        finally:
            self.metrics.queue_depth.set(self.batcher.queued)

    async def infer(self, request: Request, task: str, specs: tuple[InputSpec, ...]) -> JSONResponse:
        parsed = await self.parse(request, specs)
        outputs = await self.submit(task, parsed)
        body: dict[str, Any] = {
            "model": self.manifest.model.name,
            "outputs": {k: _jsonable(v) for k, v in outputs.items()},
        }
        if task == PREDICT:
            body["labels"] = _top_labels(self.manifest, outputs, parsed.values)
        return JSONResponse(body)

    def summary(self) -> dict[str, Any]:
        m = self.manifest
        placement = getattr(self.pipeline, "providers_used", {})
        return {
            "name": m.model.name,
            "mmedge": __version__,
            "format_version": m.format_version,
            "inputs": [
                {
                    "name": i.name,
                    "modality": i.modality,
                    "dtype": i.dtype,
                    "shape": list(i.shape),
                    "required": i.default is None,
                    "preprocess": type(i.preprocess).__name__ if i.preprocess is not None else None,
                }
                for i in m.inputs
            ],
            "outputs": [{"name": o.name, "kind": o.kind, "labels": list(o.labels)} for o in m.outputs],
            "components": [
                {
                    "name": c.name,
                    "role": c.role,
                    "modality": c.modality,
                    "precision": c.precision,
                    "providers": list(getattr(placement.get(c.name), "registered", ())),
                }
                for c in m.components
            ],
            "encode": sorted(self.encoders),
            "generate": m.generation is not None,
            "batching": {
                **asdict(self.options.batch),
                "enabled": self.options.batch.max_batch > 1,
                "note": self.batching_note,
            },
            "limits": {**asdict(self.options.limits), "max_body_bytes": self.options.max_body_bytes},
            "budget": asdict(self.options.budget),
            "auth": self.options.access.api_key is not None,
            "component_timing": self.traced,
        }


async def _form_fields(request: Request, max_files: int, max_part: int) -> dict[str, list[Any]]:
    """Multipart fields by name; file parts become ``(filename, bytes)``."""
    fields: dict[str, list[Any]] = {}
    async with request.form(max_files=max_files, max_fields=max_files, max_part_size=max_part) as form:
        for key, value in form.multi_items():
            if isinstance(value, str):
                fields.setdefault(key, []).append(value)
            else:
                fields.setdefault(key, []).append((value.filename or key, await value.read()))
    return fields


def _jsonable(array: np.ndarray) -> Any:
    """Nested lists; NaN/Inf (not representable in JSON) become null."""
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        return np.where(np.isfinite(array), array, None).tolist()
    return array.tolist()


def _top_labels(manifest: Manifest, outputs: dict[str, np.ndarray], inputs: Mapping[str, Any]) -> dict[str, list[str]]:
    """For ranked outputs (logits, scores) with labels: the argmax label of each row. Where the columns score the items of
    an input given as texts (a zero-shot request's label texts), those texts are the labels."""
    labels = {}
    for o in manifest.outputs:
        value = outputs.get(o.name)
        if o.kind not in RANKED_KINDS or value is None or value.ndim != 2:
            continue
        given = [inputs[n] for n in manifest.column_inputs(o.name) if n in inputs]
        texts = [v for v in given if isinstance(v, list) and all(isinstance(t, str) for t in v)]
        names = tuple(texts[0]) if texts else o.labels
        if names and value.shape[1] == len(names):
            labels[o.name] = [names[i] for i in np.nan_to_num(value, nan=-np.inf).argmax(axis=1)]
    return labels


def _tensors_of(manifest: Manifest, component: str | None) -> tuple[TensorSpec, ...]:
    if component is not None:
        return manifest.component(component).outputs
    by_component = {c.name: {t.name: t for t in c.outputs} for c in manifest.components}
    return tuple(replace(by_component[o.component][o.tensor], name=o.name) for o in manifest.outputs)


def _error(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    async def problem(_: Request, e: RequestError) -> JSONResponse:
        return _error(e.status, str(e))

    async def bad_input(_: Request, e: InputError) -> JSONResponse:
        return _error(422, str(e))

    async def overloaded(_: Request, e: OverloadedError) -> JSONResponse:
        return _error(503, str(e), {"Retry-After": str(RETRY_AFTER_S)})

    async def over_budget(_: Request, e: OverBudgetError) -> JSONResponse:
        return _error(429, str(e), {"Retry-After": str(RETRY_AFTER_S)})

    async def shutting_down(_: Request, e: ShuttingDownError) -> JSONResponse:
        return _error(503, str(e))

    async def bad_multipart(_: Request, e: MultiPartException) -> JSONResponse:
        status = 413 if "exceeded" in e.message.lower() or "too many" in e.message.lower() else 400
        return _error(status, f"the multipart body cannot be used: {e.message}")

    async def server_side(_: Request, e: MMEdgeError) -> JSONResponse:
        log.error("inference failed on the server side: %s", e)
        return _error(500, f"{type(e).__name__}: {e}")

    for kind, handler in (
        (RequestError, problem),
        (InputError, bad_input),
        (OverloadedError, overloaded),
        (OverBudgetError, over_budget),
        (ShuttingDownError, shutting_down),
        (MultiPartException, bad_multipart),
        (MMEdgeError, server_side),
    ):
        app.add_exception_handler(kind, handler)


def create_app(pipeline: PipelineLike, options: ServeOptions | None = None) -> FastAPI:
    """A FastAPI app serving ``pipeline`` (a :class:`mmedge.runtime.Pipeline`), which the caller owns.

    The app starts its batcher on startup and, on shutdown, refuses new work (503), finishes what
    was accepted, then stops its threads. Latency is timed per pipeline call; for the
    per-component histograms use :func:`app_for_bundle`, which wires the Pipeline's trace hook.
    """
    return _build(pipeline, options or ServeOptions(), Metrics(), owned=False)


def app_for_bundle(
    bundle: str | os.PathLike[str],
    options: ServeOptions | None = None,
    *,
    providers: Any = "auto",
    threads: int | None = None,
    fallback: bool = False,
    strict: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
) -> FastAPI:
    """A FastAPI app serving the bundle at ``bundle`` with its own Pipeline, closed on shutdown.

    The Pipeline reports every step to ``/metrics``: each component's latency, preprocessing and
    postprocessing. It compiles new input shapes in the background (``compile_in_background``): a
    request never waits for a compile. Raises BundleError (before anything listens) if the bundle
    cannot be loaded.
    """
    from mmedge.runtime import Pipeline

    metrics = Metrics()
    pipeline = Pipeline(
        bundle,
        providers,
        threads=threads,
        fallback=fallback,
        strict=strict,
        trace=metrics.trace,
        cache_dir=cache_dir,
        compile_in_background=True,
    )
    return _build(pipeline, options or ServeOptions(), metrics, owned=True)


def _build(pipeline: PipelineLike, options: ServeOptions, metrics: Metrics, *, owned: bool) -> FastAPI:
    server = _Server(pipeline, options, metrics, traced=owned)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await server.batcher.start()
        try:
            yield
        finally:
            await server.batcher.close()
            if owned:
                pipeline.close()

    app = FastAPI(
        title=f"mmedge: {server.manifest.model.name}",
        version=__version__,
        description="Inference on an mmedge bundle. Bodies: JSON {'inputs': {...}} or multipart (files for image/audio).",
        lifespan=lifespan,
    )
    app.state.server = server
    _install_error_handlers(app)
    _add_routes(app, server)
    # Outermost last: metrics see every request; access is checked before a body is read.
    app.add_middleware(Admission, max_bytes=server.options.max_body_bytes, ledger=server.ledger)
    access = server.options.access
    app.add_middleware(AccessGuard, access=access)
    if access.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(access.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["authorization", "content-type"],
        )
    app.add_middleware(RequestMetrics, metrics=server.metrics)
    return app


def _add_routes(app: FastAPI, server: _Server) -> None:
    manifest, max_rows = server.manifest, server.options.limits.max_rows
    errors = {k: v for k, v in _openapi.ERRORS.items() if k != 503}

    @app.get("/healthz", responses={503: _openapi.ERRORS[503]}, summary="Liveness and readiness")
    async def healthz() -> JSONResponse:
        if server.batcher.closing:
            return JSONResponse({"status": "shutting down"}, status_code=503)
        return JSONResponse({"status": "ok", "queued": server.batcher.queued})

    @app.get("/v1/model", summary="The served bundle: inputs, outputs, components, batching and limits")
    async def model() -> dict[str, Any]:
        return server.summary()

    @app.get(
        "/metrics",
        summary="Prometheus metrics",
        response_class=Response,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    async def metrics() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(server.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    def inference_route(
        path: str, task: str, specs: tuple[InputSpec, ...], component: str | None, summary: str
    ) -> None:
        tensors = _tensors_of(manifest, component)

        async def endpoint(request: Request) -> JSONResponse:
            return await server.infer(request, task, specs)

        app.add_api_route(
            path,
            endpoint,
            methods=["POST"],
            summary=summary,
            name=task,
            responses={
                200: _openapi.output_schema(manifest, tensors, labels=component is None),
                **errors,
                503: _openapi.ERRORS[503],
            },
            openapi_extra={"requestBody": _openapi.request_body(specs, max_rows)},
        )

    if manifest.generation is None:
        inference_route("/v1/predict", PREDICT, manifest.inputs, None, "Run the whole model")
    else:
        specs = generation_inputs(manifest)

        async def generate(request: Request) -> JSONResponse:
            return await server.generate(request, specs)

        app.add_api_route(
            "/v1/generate",
            generate,
            methods=["POST"],
            summary="Generate a caption per item with the bundle's decoder",
            name="generate",
            responses={200: _openapi.CAPTIONS, **errors},
            openapi_extra={
                "requestBody": _openapi.request_body(specs, max_rows),
                "parameters": _openapi.GENERATION_PARAMETERS,
            },
        )
    for key, (component, specs) in server.encoders.items():
        inference_route(f"/v1/encode/{key}", ENCODE + component, specs, component, f"Run the {key} encoder only")
