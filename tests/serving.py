"""A real uvicorn server on 127.0.0.1 (ephemeral port) in a background thread, stopped after use.

Serving tests talk HTTP to it with httpx instead of starlette's TestClient, whose httpx transport
is deprecated (it warns unless the separate httpx2 package is installed).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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


@contextmanager
def serve_process(
    argv: list[str], env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> Iterator[tuple[dict[str, Any], str]]:
    """``python -m mmedge <argv> --json --threads 1`` as a process on loopback (``argv`` names a free port).

    Yields its JSON announcement and all it printed up to it; always stops the process.
    """
    command = [sys.executable, "-m", "mmedge", *argv, "--json", "--threads", "1"]
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )
    try:
        text, announced = "", None
        for line in proc.stdout:  # the announcement is the first JSON object on stdout
            text += line
            try:
                announced = json.loads(text)
                break
            except json.JSONDecodeError:
                continue
        assert announced is not None, proc.stderr.read()
        yield announced, text
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
