"""A real uvicorn server on 127.0.0.1 (ephemeral port) in a background thread, stopped after use."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
from mmedge.runtime import Pipeline
from tinybundle import build_tiny_bundle

from mmedge.serve import ServeOptions, app_for_bundle

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


@pytest.fixture(scope="session")
def serve_app() -> Callable[[object], AbstractContextManager[str]]:
    """``with serve_app(app) as url``: the app on a real loopback server for the block."""
    return serving


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_bundle(tmp_path_factory.mktemp("serve") / "tiny")


@pytest.fixture(scope="module")
def pipeline(tiny_dir: Path) -> Iterator[Pipeline]:
    with Pipeline(tiny_dir, "cpu", threads=1) as pipe:
        yield pipe


@pytest.fixture(scope="module")
def base_url(tiny_dir: Path, serve_app: Callable) -> Iterator[str]:
    """The tiny bundle served by its own traced Pipeline, as `mmedge serve` does."""
    with serve_app(app_for_bundle(tiny_dir, ServeOptions(), providers="cpu", threads=1)) as url:
        yield url


@pytest.fixture
def client(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=30) as c:
        yield c
