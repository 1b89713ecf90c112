"""ASGI middleware: admission (body size, body timeout, memory budget, concurrency) and request metrics.

Admission reads the body itself and replays it to the app, so no handler ever sees more than the
limit: it refuses a too-large Content-Length at once, or a chunked body as soon as it passes the
cap (413); reserves the body's bytes in the server's memory budget as they arrive (429 with
Retry-After when the budget is full); answers 408 to a body that has not arrived whole within
the body timeout (a stalled upload); and only then takes one of the ``max_concurrent`` places
(429 with Retry-After when none is free). The request's :class:`~mmedge.serve._budget.Ticket`
sits in ``scope["mmedge.ticket"]`` for the handler to reserve decoded bytes on; everything is
released when the response has been sent. Metrics label requests by route template
(``/v1/encode/image``), never by raw path, so clients cannot blow up the label set; every
refused request (4xx) is one log line.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from mmedge.serve._budget import Ledger, OverBudgetError, Ticket
from mmedge.serve._metrics import Metrics

__all__ = ["TICKET", "Admission", "RequestMetrics", "send_error"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

TICKET = "mmedge.ticket"  # scope key of the request's budget ticket
RETRY_AFTER_S = 1
BODY_COPIES = 2  # the buffered body, and the parts or bytes parsed from it
log = logging.getLogger("mmedge.serve")


async def send_error(send: Send, status: int, detail: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *(headers or [])]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


_RETRY = [(b"retry-after", str(RETRY_AFTER_S).encode())]
_CLOSE = [(b"connection", b"close")]


class Admission:
    """Admit a request with a body only within the body limit, the body timeout and the server's budget."""

    def __init__(self, app: App, max_bytes: int, ledger: Ledger) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.ledger = ledger

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", ())).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await send_error(send, 413, self._message(int(declared)))
            return
        ticket = Ticket(self.ledger)
        try:
            body = await self._read(receive, send, ticket)
            if body is None:
                return
            if not self.ledger.enter():
                detail = (
                    f"the server is busy with {self.ledger.budget.max_concurrent} requests (--max-concurrent); "
                    "retry after the Retry-After delay"
                )
                await send_error(send, 429, detail, _RETRY)
                return
            scope[TICKET] = ticket
            try:
                await self.app(scope, _replay(body, receive), send)
            finally:
                self.ledger.leave()
        finally:
            ticket.close()

    async def _read(self, receive: Receive, send: Send, ticket: Ticket) -> bytes | None:
        """The whole body, or None once a refusal was sent (or the client left)."""
        chunks: list[bytes] = []
        size = 0
        deadline = asyncio.get_running_loop().time() + self.ledger.budget.body_timeout_s
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                detail = (
                    f"the request body did not arrive within {self.ledger.budget.body_timeout_s:g} s "
                    f"({size:,} bytes received); send it at once (server: --body-timeout-s)"
                )
                await send_error(send, 408, detail, _CLOSE)
                return None
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await send_error(send, 413, self._message(size))
                return None
            try:
                ticket.reserve(len(chunk) * BODY_COPIES)
            except OverBudgetError as e:
                await send_error(send, 429, str(e), _RETRY + _CLOSE)
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _message(self, size: int) -> str:
        return f"the request body is {size:,} bytes or more; the limit is {self.max_bytes:,} bytes (--max-body-mb)"


def _replay(body: bytes, receive: Receive) -> Receive:
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: wait for the disconnect, as the server would send

    return replay


class RequestMetrics:
    """Count and time every HTTP request by the route template it matched; log each refusal (4xx) in one line."""

    def __init__(self, app: App, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # if the app fails before starting a response, the server answers 500
        refusal = b""

        async def tracked(message: Message) -> None:
            nonlocal status, refusal
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif 400 <= status < 500 and len(refusal) < REFUSAL_LOGGED:
                refusal += message.get("body", b"")[:REFUSAL_LOGGED]
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        finally:
            route = scope.get("route")
            name = getattr(route, "path", None) or "unmatched"
            self.metrics.observe_request(name, status, time.perf_counter() - started)
            if 400 <= status < 500:
                _log_refusal(scope, status, refusal)


REFUSAL_LOGGED = 300  # bytes of a refusal's body that go into its log line


def _log_refusal(scope: Scope, status: int, body: bytes) -> None:
    try:
        detail = str(json.loads(body).get("detail", ""))
    except (ValueError, AttributeError):  # cut mid-body, or not our JSON shape
        detail = body.decode("utf-8", "replace")
    client = scope.get("client") or ("-", 0)
    path = scope.get("path", "")[:100]
    log.warning("refused %s %s from %s with %d: %s", scope.get("method"), path, client[0], status, detail[:200])
