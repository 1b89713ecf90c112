"""A real uvicorn server on 127.0.0.1 (ephemeral port) in a background thread, stopped after use.

Serving tests talk HTTP to it with httpx instead of starlette's TestClient, whose httpx transport
is deprecated (it warns unless the separate httpx2 package is installed).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

START_TIMEOUT_S = 20.0


@contextmanager
def serving(app: object) -> Iterator[str]:
    """Serve ``app`` on a free loopback port; yields the base URL; always stops the server."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # so asyncio sets TCP_NODELAY
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()
        if thread.is_alive():
            raise RuntimeError("the test server did not stop within 15 s")
