"""``mmedge serve`` as users run it: startup errors, graceful SIGTERM, several workers, no torch."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from tinybundle import tiny_inputs

from mmedge.cli import main

START_TIMEOUT_S = 60.0


def _read_announcement(proc: subprocess.Popen, timeout: float) -> dict:
    """The JSON object `mmedge serve --json` prints on stdout once it listens."""
    found: dict = {}

    def read() -> None:
        text = ""
        for line in proc.stdout:
            text += line
            try:
                found.update(json.loads(text))
            except json.JSONDecodeError:
                continue
            return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    if not found:
        raise RuntimeError("the server did not announce itself within the timeout")
    return found


@contextmanager
def served(bundle: Path, *extra: str) -> Iterator[tuple[subprocess.Popen, str]]:
    """`mmedge serve BUNDLE --port 0 --json ...` in a subprocess, ready; killed if a test leaves it running."""
    command = [sys.executable, "-m", "mmedge", "serve", str(bundle), "--port", "0", "--json", "--threads", "1", *extra]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        url = _read_announcement(proc, START_TIMEOUT_S)["url"]
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        else:
            raise RuntimeError("the server never became healthy")
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)


def _predict_body(batch: int = 1) -> dict:
    return {"inputs": {k: v.tolist() for k, v in tiny_inputs(batch=batch).items()}}


def test_sigterm_finishes_in_flight_requests_and_exits_0(tiny_dir: Path) -> None:
    with served(tiny_dir, "--max-wait-ms", "4000", "--max-batch", "64") as (proc, url):
        result: dict[str, httpx.Response] = {}
        thread = threading.Thread(
            target=lambda: result.update(r=httpx.post(f"{url}/v1/predict", json=_predict_body(), timeout=30))
        )
        thread.start()
        time.sleep(1.0)  # the request now waits in the batcher for company (up to 4 s; margin for a slow CI)
        proc.send_signal(signal.SIGTERM)
        thread.join(timeout=30)
        code = proc.wait(timeout=30)
        stderr = proc.stderr.read()
    assert result["r"].status_code == 200, result["r"].text
    assert code == 0, stderr
    assert "stopped by SIGTERM" in stderr


@pytest.mark.slow
def test_workers_share_the_port_and_metrics_sum_over_them(tiny_dir: Path) -> None:
    with served(tiny_dir, "--workers", "2") as (proc, url):
        with httpx.Client(base_url=url, timeout=30) as client:
            statuses = [client.post("/v1/predict", json=_predict_body()).status_code for _ in range(6)]
            metrics = client.get("/metrics").text
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    assert statuses == [200] * 6
    found = re.search(r'mmedge_requests_total\{route="/v1/predict",status="200"\} (\S+)', metrics)
    assert found is not None
    assert float(found.group(1)) == 6
    assert code == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["{missing}"], "does not exist", id="no-bundle"),
        pytest.param(["{tiny}", "--max-batch", "0"], "max_batch must be at least 1", id="bad-batch"),
        pytest.param(["{tiny}", "--workers", "0"], "--workers must be at least 1", id="bad-workers"),
        pytest.param(["{tiny}", "--max-items", "0"], "--max-items must be positive", id="bad-limit"),
        pytest.param(["{tiny}", "--workers", "2", "--port", "{busy}"], "cannot listen on", id="busy-port"),
        pytest.param(["{tampered}"], "sha256", id="tampered-bundle"),
    ],
)
def test_startup_problems_are_one_error_line(
    tiny_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    tampered = tmp_path / "tampered"
    tampered.mkdir()
    for f in tiny_dir.iterdir():
        (tampered / f.name).write_bytes(f.read_bytes())
    (tampered / "vocab.txt").write_text("changed\n")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        names = {"missing": tmp_path / "nope", "tiny": tiny_dir, "tampered": tampered, "busy": busy.getsockname()[1]}
        code = main(["serve", *(a.format(**names) for a in args)])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("ERROR ")
    assert message in err


def test_serving_never_imports_torch(tiny_dir: Path) -> None:
    code = (
        "import sys\n"
        "from mmedge.cli import main\n"
        "from mmedge.runtime import Pipeline\n"
        "from mmedge.serve import create_app\n"
        "import mmedge.serve.cli\n"
        f"create_app(Pipeline({str(tiny_dir)!r}, 'cpu'))\n"
        "try:\n    main(['serve', '--help'])\nexcept SystemExit:\n    pass\n"
        "sys.exit(3 if 'torch' in sys.modules else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 0, result.stderr or "torch was imported"


def test_listening_socket_is_tcp_so_replies_skip_nagle_delays() -> None:
    # asyncio sets TCP_NODELAY only on sockets whose proto is TCP; without it every response
    # written in two parts waits ~40 ms for a delayed ACK.
    from mmedge.serve.cli import _listen

    sock = _listen("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()
