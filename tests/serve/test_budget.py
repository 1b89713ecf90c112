"""Budgets: decoded bytes per request (before decoding), the server's memory and concurrency, body
timeouts; and malformed payloads, which are always a 4xx with one log line, never a 500."""

from __future__ import annotations

import io
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
import soundfile
from PIL import Image

from mmedge.runtime import Pipeline
from mmedge.serve import RequestLimits, ServeOptions, ServerBudget, create_app
from mmedge.serve._inputs import json_bytes

TEXT = {"inputs": {"text": "cat"}}


def png(width: int, height: int, *, noise: bool = False) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), np.uint8) if noise else None
    buffer = io.BytesIO()
    Image.fromarray(pixels if noise else np.zeros((height, width, 3), np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def form(**fields: str) -> dict[str, Any]:
    """A multipart body of plain fields (httpx sends fields without files url-encoded)."""
    parts = b"".join(
        f'--x\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items()
    )
    return {"content": parts + b"--x--\r\n", "headers": {"content-type": "multipart/form-data; boundary=x"}}


def flac(seconds: float, rate: int = 16000) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, np.zeros(int(seconds * rate), np.float32), rate, format="FLAC")
    return buffer.getvalue()


class GatedPipeline:
    """The real pipeline, held at a gate, so that admitted requests stay in progress."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.inner = pipeline
        self.manifest = pipeline.manifest
        self.gate = threading.Event()
        self.entered = threading.Semaphore(0)

    def run(self, inputs: Mapping[str, Any]) -> Any:
        self.entered.release()
        self.gate.wait(timeout=20)
        return self.inner.run(inputs)

    def encode(self, name: str, x: Any) -> Any:
        self.entered.release()
        self.gate.wait(timeout=20)
        return self.inner.encode(name, x)


# ---------------------------------------------------------------------------------------------
# decoded bytes per request


@pytest.fixture(scope="module")
def small_budget_url(pipeline: Pipeline, serve_app: Callable) -> Iterator[str]:
    limits = RequestLimits(max_decoded_bytes=10_000)  # a 50x50 image takes exactly 10,000 bytes decoded
    with serve_app(create_app(pipeline, ServeOptions(limits=limits))) as url:
        yield url


@pytest.mark.parametrize(
    ("files", "status"),
    [
        pytest.param([png(50, 50)], 200, id="one-image-at-the-budget"),
        pytest.param([png(51, 50)], 413, id="one-image-over"),
        pytest.param([png(40, 40), png(40, 40)], 413, id="two-images-summed-over"),
        pytest.param([png(60, 60, noise=True)[:200]], 413, id="truncated-image-refused-before-decoding"),
        pytest.param([png(40, 40, noise=True)[:200]], 422, id="truncated-image-within-budget-is-decoded"),
    ],
)
def test_decoded_image_bytes_are_budgeted_from_headers(small_budget_url: str, files: list[bytes], status: int) -> None:
    response = httpx.post(
        f"{small_budget_url}/v1/encode/image", files=[("image", (f"{i}.png", f)) for i, f in enumerate(files)]
    )
    assert response.status_code == status, response.text
    if status == 413:
        assert "MiB decoded" in response.json()["detail"]
        assert "--max-decoded-mb" in response.json()["detail"]


def test_decoded_audio_and_json_bytes_are_budgeted(small_budget_url: str) -> None:
    # 0.2 s at 16 kHz, 3,200 float32 samples = 12,800 bytes decoded, from a FLAC of a few hundred bytes
    response = httpx.post(f"{small_budget_url}/v1/encode/audio", files={"audio": ("a.flac", flac(0.2))})
    assert response.status_code == 413, response.text
    assert "MiB decoded" in response.json()["detail"]
    values = [0.5] * 200  # costed by its separators before parsing: ~200 values x 64 bytes
    response = httpx.post(f"{small_budget_url}/v1/encode/audio", json={"inputs": {"audio": values}})
    assert response.status_code == 413, response.text
    assert json_bytes(b'{"inputs": {"audio": [' + b"0.5, " * 200 + b"]}}") > 10_000


# ---------------------------------------------------------------------------------------------
# the server's memory, concurrency and body timeout


def _hold_one(url: str, gated: GatedPipeline, pool: ThreadPoolExecutor) -> Any:
    """Submit one request and wait until it sits in the pipeline (admitted, in progress)."""
    held = pool.submit(httpx.post, f"{url}/v1/encode/text", json=TEXT, timeout=30)
    assert gated.entered.acquire(timeout=15), "the first request never reached the pipeline"
    return held


def test_over_concurrency_is_429_with_retry_after(pipeline: Pipeline, serve_app: Callable) -> None:
    gated = GatedPipeline(pipeline)
    options = ServeOptions(budget=ServerBudget(max_concurrent=1))
    with serve_app(create_app(gated, options)) as url, ThreadPoolExecutor(1) as pool:
        try:
            held = _hold_one(url, gated, pool)
            refused = httpx.post(f"{url}/v1/encode/text", json=TEXT, timeout=30)
            health = httpx.get(f"{url}/healthz", timeout=30)  # bodiless routes are not counted
        finally:
            gated.gate.set()
        assert held.result().status_code == 200
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "1"
    assert "--max-concurrent" in refused.json()["detail"]
    assert health.status_code == 200


def test_a_full_memory_budget_is_429_with_retry_after(pipeline: Pipeline, serve_app: Callable) -> None:
    gated = GatedPipeline(pipeline)
    body = httpx.Request("POST", "http://x/", json=TEXT).read()
    one = 2 * len(body) + json_bytes(body)  # the body twice (buffered, parsed), then the parsed JSON
    options = ServeOptions(budget=ServerBudget(max_memory_bytes=one + one // 2))
    with serve_app(create_app(gated, options)) as url, ThreadPoolExecutor(1) as pool:
        try:
            held = _hold_one(url, gated, pool)
            refused = httpx.post(f"{url}/v1/encode/text", json=TEXT, timeout=30)
        finally:
            gated.gate.set()
        assert held.result().status_code == 200
        after = httpx.post(f"{url}/v1/encode/text", json=TEXT, timeout=30)  # all was released
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "1"
    assert "--max-memory-mb" in refused.json()["detail"]
    assert after.status_code == 200


def _raw_request(url: str, head: bytes, body: bytes, wait_s: float) -> bytes:
    """Send a request head and part of its body on a raw socket, then read whatever comes back."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=wait_s) as sock:
        sock.sendall(head + body)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except TimeoutError:
            pass
    return received


def test_a_stalled_body_is_408_and_frees_its_place(pipeline: Pipeline, serve_app: Callable) -> None:
    options = ServeOptions(budget=ServerBudget(body_timeout_s=0.5, max_concurrent=1))
    head = (
        b"POST /v1/encode/text HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n"
    )
    with serve_app(create_app(pipeline, options)) as url:
        started = time.monotonic()
        answer = _raw_request(url, head, b'{"inputs": {"text": "', wait_s=10)
        elapsed = time.monotonic() - started
        after = httpx.post(f"{url}/v1/encode/text", json={"inputs": {"text": "cat"}}, timeout=30)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"connection: close" in answer.lower()
    assert b"did not arrive within 0.5 s" in answer
    assert elapsed < 5  # answered at the timeout, and the connection closed
    assert after.status_code == 200


# ---------------------------------------------------------------------------------------------
# malformed payloads: a 4xx with one log line, never a 500

BIG_INT = "9" * 5000  # over Python's 4,300-digit limit for int(str)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"content": f'{{"inputs": {{"text": [[{BIG_INT}]]}}}}'}, "not valid JSON", id="json-big-int"),
        pytest.param({"content": '{"inputs": {"text": [[' + "9" * 4000 + "]]}}"}, "too large", id="json-long-int"),
        pytest.param(form(text="cat", image=f"[{BIG_INT}]"), "JSON array field", id="multipart-big-int"),
        pytest.param(form(text="cat", image="[" * 100_000), "nested too deeply", id="multipart-deep"),
        pytest.param({"content": b'{"inputs": {"text": "\xff\xfe"}}'}, "not valid JSON", id="json-bad-utf8"),
        pytest.param({"content": '{"inputs": {"text": "cat"}}'.encode("utf-16")}, "", id="json-utf16"),
        pytest.param({"content": b'{"inputs": {"audio": [1e400]}}'}, "must fit float32", id="json-inf"),
        pytest.param({"content": b'{"inputs": {"audio": [NaN]}}'}, "", id="json-nan"),
        pytest.param({"content": b'{"inputs": {"text": "\\ud800"}}'}, "", id="json-lone-surrogate"),
        pytest.param({"content": b"\x00" * 64}, "not valid JSON", id="json-nul-bytes"),
        pytest.param(
            {
                "content": b"--x\r\nContent-Disposition: form-data; name=text\r\n\r\n\xff\xfe\r\n--x--\r\n",
                "headers": {"content-type": "multipart/form-data; boundary=x"},
            },
            "",
            id="multipart-bad-utf8",
        ),
        pytest.param(
            {"content": b"--x\r\n\r\n", "headers": {"content-type": "multipart/form-data"}}, "", id="no-boundary"
        ),
        pytest.param(
            {"content": b"garbage", "headers": {"content-type": "multipart/form-data; boundary=x"}},
            "",
            id="multipart-garbage",
        ),
        pytest.param(
            {"content": b"{}", "headers": {"content-type": "application/json; charset=ebcdic"}}, "", id="odd-charset"
        ),
    ],
)
def test_malformed_payloads_are_4xx_with_one_log_line(
    base_url: str, caplog: pytest.LogCaptureFixture, kwargs: dict[str, Any], message: str
) -> None:
    if "content" in kwargs and "headers" not in kwargs:
        kwargs = {**kwargs, "headers": {"content-type": "application/json"}}
    with caplog.at_level(logging.WARNING):
        response = httpx.post(f"{base_url}/v1/predict", timeout=30, **kwargs)
        time.sleep(0.05)  # the log line is written once the response has gone out
    assert 400 <= response.status_code < 500, response.text
    assert message in response.json()["detail"]
    refusals = [r for r in caplog.records if r.name == "mmedge.serve" and "refused" in r.getMessage()]
    assert len(refusals) == 1, [r.getMessage() for r in caplog.records]
    assert str(response.status_code) in refusals[0].getMessage()
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
