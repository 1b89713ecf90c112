"""Who may call the server: API key, Host allow-list, browser origins (CORS), and the CLI's rules for them."""

from __future__ import annotations

import argparse
import io
import shutil
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from serving import serve_process
from tinybundle import tiny_inputs

from mmedge.errors import MMEdgeError
from mmedge.runtime import Pipeline
from mmedge.serve import Access, ServeOptions, create_app

KEY = "k" * 12 + "-secret-key"
BEARER = {"authorization": f"Bearer {KEY}"}
TEXT = {"inputs": {"text": "cat"}}


def _body() -> dict[str, Any]:
    return {"inputs": {k: v.tolist() for k, v in tiny_inputs(batch=1).items()}}


class CountingPipeline:
    """The real pipeline, counting the calls that reach the model."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.inner = pipeline
        self.manifest = pipeline.manifest
        self.calls = 0

    def run(self, inputs: Mapping[str, Any]) -> Any:
        self.calls += 1
        return self.inner.run(inputs)

    def encode(self, name: str, x: Any) -> Any:
        self.calls += 1
        return self.inner.encode(name, x)


@pytest.fixture(scope="module")
def counting(pipeline: Pipeline) -> CountingPipeline:
    return CountingPipeline(pipeline)


@pytest.fixture(scope="module")
def keyed_url(counting: CountingPipeline, serve_app: Callable) -> Iterator[str]:
    with serve_app(create_app(counting, ServeOptions(access=Access(api_key=KEY)))) as url:
        yield url


@pytest.fixture(scope="module")
def open_url(counting: CountingPipeline, serve_app: Callable) -> Iterator[str]:
    with serve_app(create_app(counting, ServeOptions())) as url:
        yield url


# ---------------------------------------------------------------------------------------------
# API key


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        pytest.param({}, "needs an API key", id="no-header"),
        pytest.param({"authorization": KEY}, "needs an API key", id="no-scheme"),
        pytest.param({"authorization": "Basic " + KEY}, "needs an API key", id="basic-scheme"),
        pytest.param({"authorization": "Bearer wrong"}, "not valid", id="wrong-key"),
        pytest.param({"authorization": f"Bearer {KEY}x"}, "not valid", id="longer-key"),
    ],
)
def test_without_the_key_every_route_is_401(
    keyed_url: str, counting: CountingPipeline, headers: dict[str, str], message: str
) -> None:
    before = counting.calls
    for method, path in [("POST", "/v1/predict"), ("GET", "/metrics"), ("GET", "/docs"), ("GET", "/openapi.json")]:
        response = httpx.request(method, f"{keyed_url}{path}", json=_body(), headers=headers, timeout=30)
        assert response.status_code == 401, (path, response.text)
        assert message in response.json()["detail"]
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert counting.calls == before


def test_with_the_key_everything_answers_and_healthz_needs_none(keyed_url: str) -> None:
    assert httpx.post(f"{keyed_url}/v1/predict", json=_body(), headers=BEARER, timeout=30).status_code == 200
    for path in ("/metrics", "/docs", "/openapi.json", "/v1/model"):
        assert httpx.get(f"{keyed_url}{path}", headers=BEARER, timeout=30).status_code == 200, path
    assert httpx.get(f"{keyed_url}/v1/model", headers=BEARER).json()["auth"] is True
    assert httpx.get(f"{keyed_url}/healthz").status_code == 200  # load balancers probe without credentials


def test_the_key_is_compared_in_constant_time(keyed_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import hmac

    from mmedge.serve import _access

    seen: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        seen.append((a, b))
        return real(a, b)

    monkeypatch.setattr(_access.hmac, "compare_digest", spy)
    assert httpx.get(f"{keyed_url}/v1/model", headers={"authorization": "Bearer nope"}).status_code == 401
    assert httpx.get(f"{keyed_url}/v1/model", headers=BEARER).status_code == 200
    assert seen == [(b"nope", KEY.encode()), (KEY.encode(), KEY.encode())]


# ---------------------------------------------------------------------------------------------
# Host and Origin


@pytest.mark.parametrize("host", ["evil.example", "evil.example:80", "127.0.0.1.evil.example", "[::2]:8000"])
def test_a_host_not_allowed_is_400(open_url: str, counting: CountingPipeline, host: str) -> None:
    before = counting.calls
    response = httpx.post(f"{open_url}/v1/predict", json=_body(), headers={"host": host}, timeout=30)
    assert response.status_code == 400, response.text
    assert "--allowed-host" in response.json()["detail"]
    assert counting.calls == before


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST:1234", "127.0.0.1", "[::1]:8000", "localhost."])
def test_loopback_names_are_allowed_by_default(open_url: str, host: str) -> None:
    assert httpx.get(f"{open_url}/v1/model", headers={"host": host}).status_code == 200


def test_allowed_hosts_can_be_added(pipeline: Pipeline, serve_app: Callable) -> None:
    access = Access(allowed_hosts=("api.example.com",))
    with serve_app(create_app(pipeline, ServeOptions(access=access))) as url:
        assert httpx.get(f"{url}/v1/model", headers={"host": "api.example.com:443"}).status_code == 200
        assert httpx.get(f"{url}/v1/model").status_code == 400  # 127.0.0.1 is no longer in the list


PREFLIGHT = {"origin": "https://evil.example", "access-control-request-method": "POST"}


def test_cors_preflight_is_refused_by_default(open_url: str) -> None:
    response = httpx.options(f"{open_url}/v1/predict", headers=PREFLIGHT)
    assert response.status_code == 403
    assert "access-control-allow-origin" not in response.headers


def test_a_cross_origin_multipart_post_never_reaches_the_model(open_url: str, counting: CountingPipeline) -> None:
    # A browser sends this "simple" request without a preflight; only the Origin header tells.
    before = counting.calls
    image = io.BytesIO()
    Image.new("RGB", (8, 8)).save(image, format="PNG")
    response = httpx.post(
        f"{open_url}/v1/encode/image",
        files={"image": ("cat.png", image.getvalue(), "image/png")},
        headers={"origin": "https://evil.example"},
        timeout=30,
    )
    assert response.status_code == 403
    assert "--cors-origin" in response.json()["detail"]
    assert "access-control-allow-origin" not in response.headers
    assert counting.calls == before


def test_same_origin_requests_are_allowed(open_url: str) -> None:
    response = httpx.post(f"{open_url}/v1/encode/text", json=TEXT, headers={"origin": open_url}, timeout=30)
    assert response.status_code == 200, response.text


def test_configured_cors_origins_get_cors_answers(pipeline: Pipeline, serve_app: Callable) -> None:
    access = Access(cors_origins=("https://app.example.com",))
    with serve_app(create_app(pipeline, ServeOptions(access=access))) as url:
        allowed = httpx.options(f"{url}/v1/predict", headers={**PREFLIGHT, "origin": "https://app.example.com"})
        post = httpx.post(f"{url}/v1/encode/text", json=TEXT, headers={"origin": "https://app.example.com"}, timeout=30)
        refused = httpx.options(f"{url}/v1/predict", headers=PREFLIGHT)
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://app.example.com"
    assert post.status_code == 200
    assert post.headers["access-control-allow-origin"] == "https://app.example.com"
    assert refused.status_code == 400
    assert "access-control-allow-origin" not in refused.headers


# ---------------------------------------------------------------------------------------------
# the CLI's rules


def _cli_options(*argv: str) -> ServeOptions:
    from mmedge.serve.cli import _options, configure

    parser = argparse.ArgumentParser()
    configure(parser)
    return _options(parser.parse_args(["bundle", *argv]))


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.5", "example.com"])
def test_auth_is_required_off_loopback(host: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MMEDGE_API_KEY", raising=False)
    with pytest.raises(MMEdgeError, match="needs an API key: set MMEDGE_API_KEY"):
        _cli_options("--host", host)
    assert _cli_options("--host", host, "--no-auth").access.api_key is None
    assert _cli_options("--host", host, "--api-key", KEY).access.api_key == KEY
    monkeypatch.setenv("MMEDGE_API_KEY", KEY)
    assert _cli_options("--host", host).access.api_key == KEY


def test_loopback_needs_no_key_and_hosts_default_to_loopback_plus_the_bind_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MMEDGE_API_KEY", raising=False)
    assert _cli_options().access == Access()
    options = _cli_options("--host", "10.0.0.7", "--no-auth", "--allowed-host", "api.example.com")
    assert options.access.allowed_hosts == ("localhost", "127.0.0.1", "::1", "10.0.0.7", "api.example.com")
    assert _cli_options("--host", "0.0.0.0", "--no-auth").access.allowed_hosts == ("localhost", "127.0.0.1", "::1")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(["--api-key", "short"], "at least 16 characters", id="short-key"),
        pytest.param(["--api-key", KEY, "--no-auth"], "contradict", id="key-and-no-auth"),
        pytest.param(["--cors-origin", "example.com"], "CORS origins must look like", id="bad-origin"),
        pytest.param(["--ssl-certfile", "cert.pem"], "go together", id="cert-without-key"),
        pytest.param(["--ssl-certfile", "nope.pem", "--ssl-keyfile", "nope.key"], "cannot use", id="missing-cert"),
        pytest.param(["--max-concurrent", "0"], "--max-concurrent must be positive", id="bad-concurrency"),
        pytest.param(["--max-decoded-mb", "0"], "--max-decoded-mb must be positive", id="bad-decoded"),
        pytest.param(["--max-memory-mb", "64"], "must hold one whole request", id="memory-below-one-request"),
    ],
)
def test_bad_access_and_budget_flags_are_one_error(argv: list[str], message: str) -> None:
    with pytest.raises(MMEdgeError, match=message):
        _cli_options(*argv)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a certificate")
def test_tls_and_the_key_from_the_environment_reach_the_server(tiny_dir: Path, tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert)]
        + ["-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    argv = ["serve", str(tiny_dir), "--port", "0", "--ssl-certfile", str(cert), "--ssl-keyfile", str(key)]
    with serve_process(argv, {"MMEDGE_API_KEY": KEY}) as (announced, text):
        url = announced["url"]
        assert url.startswith("https://127.0.0.1:")
        assert announced["options"]["access"]["api_key"] == "(set)"  # never the key itself
        assert KEY not in text
        trusted = ssl.create_default_context(cafile=str(cert))
        deadline = time.monotonic() + 30
        while True:
            try:
                response = httpx.get(f"{url}/healthz", verify=trusted, timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the HTTPS server never answered"
                time.sleep(0.1)
        assert response.status_code == 200
        assert httpx.get(f"{url}/v1/model", verify=trusted, timeout=5).status_code == 401
        with pytest.raises(httpx.TransportError):
            httpx.get(url.replace("https://", "http://") + "/healthz", timeout=5)  # no plain HTTP on that port
