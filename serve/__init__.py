"""Serve a bundle over HTTP: ``mmedge serve BUNDLE``, or :func:`app_for_bundle` / :func:`create_app`
in your own ASGI server.

Needs the ``serve`` extra (FastAPI, uvicorn, python-multipart, prometheus-client). Requests are
merged into batches by :class:`MicroBatcher` (see :class:`BatchPolicy`); limits per request are
:class:`RequestLimits`, limits on the whole server's work :class:`ServerBudget`, who may call it
:class:`Access`; the whole configuration is :class:`ServeOptions`.
"""

from mmedge.serve._access import Access
from mmedge.serve._budget import ServerBudget
from mmedge.serve._inputs import RequestLimits
from mmedge.serve.app import PipelineLike, ServeOptions, app_for_bundle, create_app
from mmedge.serve.batcher import BatchPolicy, BatchRecord, MicroBatcher, OverloadedError, ShuttingDownError

__all__ = [
    "Access",
    "BatchPolicy",
    "BatchRecord",
    "MicroBatcher",
    "OverloadedError",
    "PipelineLike",
    "RequestLimits",
    "ServeOptions",
    "ServerBudget",
    "ShuttingDownError",
    "app_for_bundle",
    "create_app",
]
