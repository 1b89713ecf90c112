"""Serve a bundle over HTTP: ``mmedge serve BUNDLE``, or :func:`app_for_bundle` / :func:`create_app`
in your own ASGI server.

Needs the ``serve`` extra (FastAPI, uvicorn, python-multipart, prometheus-client). Requests are
merged into batches by :class:`MicroBatcher` (see :class:`BatchPolicy`); limits per request are
:class:`Limits`; the whole configuration is :class:`ServeOptions`.
"""

from mmedge.serve._inputs import Limits
from mmedge.serve.app import PipelineLike, ServeOptions, app_for_bundle, create_app
from mmedge.serve.batcher import BatchPolicy, BatchRecord, MicroBatcher, OverloadedError, ShuttingDownError

__all__ = [
    "BatchPolicy",
    "BatchRecord",
    "Limits",
    "MicroBatcher",
    "OverloadedError",
    "PipelineLike",
    "ServeOptions",
    "ShuttingDownError",
    "app_for_bundle",
    "create_app",
]
