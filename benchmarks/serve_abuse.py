"""Adversarial load on ``mmedge serve`` over loopback: hostile requests beside normal traffic, and the server's memory.

The script starts ``mmedge serve BUNDLE`` on 127.0.0.1 (a free port, default budgets, a short body
timeout so that the run stays short), warms it up, takes its idle RSS, then for ``--seconds`` runs
normal clients and every hostile kind at the same time:

* ``png-batch``: 32 uniform 2000x2000 PNGs in one request (a ~0.4 MB body, 512 MB decoded);
* ``flac-600s``: two FLAC files of 600 s at 48 kHz each (silence: a small body, 230 MB decoded);
* ``json-16mib``: a JSON body of floats just under the 16 MiB body limit; ``json-17mib``: just over;
* ``big-int`` and ``deep-nesting``: a 5000-digit integer, 100,000 nested brackets;
* ``stalled``: uploads that send 1 MiB of a declared 8 MiB body, then stop;
* ``flood``: bursts of ``--flood`` simultaneous normal requests, beyond ``--max-concurrent``.

It passes when the server's peak RSS stays under idle + 256 MiB, every normal request is
answered correctly (equal to ``Pipeline.run`` on the same files; a 429/503 with Retry-After is
retried, as a well-behaved client does), every hostile request is refused with a 4xx, and
every flood request is answered correctly or refused with 429 and Retry-After.

    python benchmarks/serve_abuse.py [BUNDLE] [--seconds 20]

Without BUNDLE the tiny test bundle (tests/tinybundle.py) is built in a temporary directory.
Peak RSS is sampled with psutil every few milliseconds and read exactly from the kernel
(``VmHWM``, reset before the attack through ``/proc/PID/clear_refs`` where allowed). Writes
``benchmarks/results/serve_abuse.json`` and ``.md`` (with the machine and its load average).
Every request targets 127.0.0.1; the run is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from serve_load import RESULTS, Server, build_payload, machine

HOST = "127.0.0.1"
MiB = 2**20
RSS_HEADROOM = 256 * MiB
BODY_TIMEOUT_S = 5
MAX_BODY = 16 * MiB
MAX_RETRIES = 5
RTOL, ATOL = 1e-5, 1e-6


# ---------------------------------------------------------------------------------------------
# hostile bodies (built once)


def _png(width: int, height: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (120, 60, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def _silent_flac(seconds: int, rate: int) -> bytes:
    import soundfile

    buffer = io.BytesIO()
    with soundfile.SoundFile(buffer, "w", rate, 1, format="FLAC", subtype="PCM_16") as f:
        block = np.zeros(rate * 10, np.int16)
        for _ in range(seconds // 10):
            f.write(block)
    return buffer.getvalue()


def _json_floats(size: int) -> bytes:
    head, tail = b'{"inputs": {"audio": [', b"]}}"
    value = b"0.123456, "
    count = (size - len(head) - len(tail)) // len(value)
    return head + value * (count - 1) + b"0.123456" + tail


def _multipart(parts: list[tuple[str, str, bytes | None]]) -> tuple[bytes, str]:
    """``(field, filename or '', data)`` parts → body and content type."""
    boundary = "mmedge-abuse-boundary"
    out = []
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out.append(f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + (data or b"") + b"\r\n")
    return b"".join(out) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def hostile_requests() -> dict[str, tuple[str, bytes, str]]:
    """kind → (path, body, content type)."""
    big = _png(2000, 2000)
    flac = _silent_flac(600, 48000)
    png_batch = _multipart([("image", f"{i}.png", big) for i in range(32)])
    flac_pair = _multipart([("audio", "a.flac", flac), ("audio", "b.flac", flac)])
    return {
        "png-batch": ("/v1/encode/image", *png_batch),
        "flac-600s": ("/v1/encode/audio", *flac_pair),
        "json-16mib": ("/v1/predict", _json_floats(MAX_BODY - 1024), "application/json"),
        "json-17mib": ("/v1/predict", _json_floats(MAX_BODY + MiB), "application/json"),
        "big-int": ("/v1/predict", b'{"inputs": {"text": [[' + b"9" * 5000 + b"]]}}", "application/json"),
        "deep-nesting": ("/v1/predict", b"[" * 100_000, "application/json"),
    }


# ---------------------------------------------------------------------------------------------
# memory


class MemoryWatch:
    """Sample a process's RSS every few ms in a thread; read the kernel's exact peak (VmHWM) too."""

    def __init__(self, pid: int) -> None:
        import psutil

        self.process = psutil.Process(pid)
        self.pid = pid
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss(self) -> int:
        return self.process.memory_info().rss

    def reset_kernel_peak(self) -> bool:
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        except OSError:
            return False
        return True

    def kernel_peak(self) -> int | None:
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return None
        line = next((x for x in status.splitlines() if x.startswith("VmHWM:")), None)
        return int(line.split()[1]) * 1024 if line else None

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            self.samples += 1
            self._stop.wait(0.005)

    def __enter__(self) -> MemoryWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


# ---------------------------------------------------------------------------------------------
# traffic


class Tally:
    def __init__(self) -> None:
        self.statuses: dict[str, Counter[str]] = {}
        self.wrong: Counter[str] = Counter()
        self.retries = 0

    def add(self, kind: str, status: str) -> None:
        self.statuses.setdefault(kind, Counter())[status] += 1


def _close(got: dict[str, Any], expected: dict[str, Any]) -> bool:
    if set(got) != set(expected):
        return False
    return all(np.allclose(np.asarray(got[k], np.float64), expected[k], rtol=RTOL, atol=ATOL) for k in expected)


@dataclass(frozen=True)
class Traffic:
    """What every traffic coroutine shares: the server, the normal request and its answer, the end time."""

    url: str
    body: bytes
    content_type: str
    expected: dict[str, np.ndarray]
    end: float
    tally: Tally

    def correct(self, r: httpx.Response) -> bool:
        return r.status_code == 200 and _close(r.json()["outputs"], self.expected)


async def normal_client(t: Traffic, client: httpx.AsyncClient) -> None:
    """One well-behaved client: a request at a time; retries 429/503 after Retry-After."""
    while time.monotonic() < t.end:
        for _ in range(MAX_RETRIES + 1):
            try:
                r = await client.post("/v1/predict", content=t.body, headers={"content-type": t.content_type})
            except httpx.HTTPError as e:
                t.tally.add("normal", type(e).__name__)
                t.tally.wrong["normal"] += 1
                break
            if r.status_code in (429, 503) and "retry-after" in r.headers:
                t.tally.retries += 1
                await asyncio.sleep(float(r.headers["retry-after"]))
                continue
            t.tally.add("normal", str(r.status_code))
            if not t.correct(r):
                t.tally.wrong["normal"] += 1
            break
        await asyncio.sleep(0.01)


async def hostile_loop(t: Traffic, client: httpx.AsyncClient, kind: str, request: tuple[str, bytes, str]) -> None:
    path, body, content_type = request
    while time.monotonic() < t.end:
        try:
            r = await client.post(path, content=body, headers={"content-type": content_type})
            status = str(r.status_code)
        except httpx.HTTPError as e:
            status = type(e).__name__
        t.tally.add(kind, status)
        if not status.startswith("4"):
            t.tally.wrong[kind] += 1
        await asyncio.sleep(0.5)


async def stalled_upload(t: Traffic) -> None:
    """Declare 8 MiB, send 1 MiB, then wait for the server's answer."""
    port = int(t.url.rsplit(":", 1)[1])
    while time.monotonic() < t.end:
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            head = (
                f"POST /v1/predict HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {8 * MiB}\r\n\r\n"
            ).encode()
            writer.write(head + b"[" + b"1," * (MiB // 2))
            await writer.drain()
            line = await asyncio.wait_for(reader.readline(), timeout=BODY_TIMEOUT_S + 30)
            status = line.split(b" ")[1].decode() if line.startswith(b"HTTP/1.1 ") else "no answer"
        except (OSError, TimeoutError, IndexError) as e:
            status = type(e).__name__
        finally:
            writer.close()
        t.tally.add("stalled", status)
        if not status.startswith("4"):
            t.tally.wrong["stalled"] += 1


async def flood(t: Traffic, size: int) -> None:
    """Bursts of ``size`` simultaneous requests on fresh connections."""
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=t.url, timeout=60, limits=limits) as client:

        async def one() -> None:
            try:
                r = await client.post("/v1/predict", content=t.body, headers={"content-type": t.content_type})
            except httpx.HTTPError as e:
                t.tally.add("flood", type(e).__name__)
                t.tally.wrong["flood"] += 1
                return
            t.tally.add("flood", str(r.status_code))
            refused = r.status_code == 429 and "retry-after" in r.headers
            if not (refused or t.correct(r)):
                t.tally.wrong["flood"] += 1

        while time.monotonic() < t.end:
            await asyncio.gather(*(one() for _ in range(size)))
            await asyncio.sleep(1.0)


async def attack(url: str, args: argparse.Namespace, normal: tuple[bytes, str], expected: dict) -> Tally:
    hostile = hostile_requests()
    t = Traffic(url, *normal, expected, time.monotonic() + args.seconds, Tally())
    async with (
        httpx.AsyncClient(base_url=url, timeout=60) as normal_http,
        httpx.AsyncClient(base_url=url, timeout=60) as hostile_http,
    ):
        jobs: list[Awaitable[None]] = [normal_client(t, normal_http) for _ in range(args.clients)]
        jobs += [hostile_loop(t, hostile_http, kind, request) for kind, request in hostile.items()]
        jobs += [stalled_upload(t) for _ in range(args.stalled)]
        jobs.append(flood(t, args.flood))
        await asyncio.wait_for(asyncio.gather(*jobs), timeout=args.seconds + 120)
    return t.tally


# ---------------------------------------------------------------------------------------------
# reference answer, report


def reference(bundle: Path, normal: tuple[bytes, str], url: str) -> dict[str, Any]:
    """The served answer to the normal payload on a quiet server, checked against Pipeline.run."""
    from mmedge.runtime import Pipeline

    body, content_type = normal
    served = httpx.post(f"{url}/v1/predict", content=body, headers={"content-type": content_type}, timeout=60)
    served.raise_for_status()
    outputs = served.json()["outputs"]
    request = httpx.Request("POST", f"{url}/v1/predict", content=body, headers={"content-type": content_type})
    fields = _parse_multipart(request)
    with tempfile.TemporaryDirectory() as tmp, Pipeline(bundle, "cpu", threads=1) as pipe:
        inputs: dict[str, Any] = {}
        for name, (filename, data) in fields.items():
            if filename:
                path = Path(tmp) / filename
                path.write_bytes(data)
                inputs[name] = [str(path)]
            else:
                inputs[name] = json.loads(data) if data.startswith(b"[") else [data.decode()]
        direct = pipe.run(inputs)
    if not _close(outputs, {k: np.asarray(v) for k, v in direct.items()}):
        raise RuntimeError("the served answer differs from Pipeline.run on the same files")
    return {k: np.asarray(v, np.float64) for k, v in outputs.items()}


def _parse_multipart(request: httpx.Request) -> dict[str, tuple[str, bytes]]:
    from email.parser import BytesParser
    from email.policy import HTTP

    head = f"Content-Type: {request.headers['content-type']}\r\n\r\n".encode()
    message = BytesParser(policy=HTTP).parsebytes(head + request.read())
    return {
        part.get_param("name", header="content-disposition"): (part.get_filename() or "", part.get_payload(decode=True))
        for part in message.iter_parts()
    }


EXPECTED = {
    "normal": "200, equal to Pipeline.run",
    "png-batch": "413 before decoding",
    "flac-600s": "413 before decoding",
    "json-16mib": "413 before parsing",
    "json-17mib": "413 (body limit)",
    "big-int": "400",
    "deep-nesting": "400",
    "stalled": "408",
    "flood": "200 or 429 + Retry-After",
}


def markdown(report: dict[str, Any]) -> str:
    m, mem = report["machine"], report["memory"]
    lines = [
        f"# mmedge serve under abuse: {report['model']}",
        "",
        f"{report['settings']['seconds']} s of normal traffic ({report['settings']['clients']} clients) with every "
        f"hostile kind at the same time, {report['settings']['stalled']} stalled uploads at a time and bursts of "
        f"{report['settings']['flood']} simultaneous requests; server `mmedge serve {' '.join(report['server_args'])}` "
        "(default budgets otherwise), client and server on one machine over loopback.",
        "",
        f"Machine: {m['cpu']}, {m['physical_cores']} physical / {m['logical_cores']} logical cores "
        f"({m['cores_available']} available), {m['memory_gb']} GB, {m['platform']}, Python {m['python']}, "
        f"onnxruntime {m['onnxruntime']}. 1-minute load average before / after: "
        f"{report['load_average'][0]} / {report['load_average'][1]}.",
        "",
        "| kind | requests | answers | expected | wrong |",
        "|---|---:|---|---|---:|",
    ]
    for kind, statuses in report["statuses"].items():
        answers = ", ".join(f"{s}: {n}" for s, n in sorted(statuses.items()))
        lines.append(
            f"| {kind} | {sum(statuses.values())} | {answers} | {EXPECTED.get(kind, '')} | "
            f"{report['wrong'].get(kind, 0)} |"
        )
    lines += [
        "",
        f"Normal requests retried after a 429/503 with Retry-After: {report['retries']}.",
        "",
        f"Server RSS: idle {mem['idle_mib']:.1f} MiB; peak during the attack {mem['peak_mib']:.1f} MiB "
        f"(+{mem['peak_mib'] - mem['idle_mib']:.1f} MiB; sampled every 5 ms: {mem['sampled_peak_mib']:.1f} MiB, "
        f"kernel VmHWM {'reset before the attack' if mem['kernel_peak_reset'] else 'not resettable here'}); "
        f"limit idle + {RSS_HEADROOM // MiB} MiB = {mem['limit_mib']:.1f} MiB.",
        "",
        f"**{'PASS' if report['passed'] else 'FAIL'}**"
        + (f": {'; '.join(report['failures'])}" if report["failures"] else ""),
        "",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", type=Path, nargs="?", help="bundle to serve (default: the tiny test bundle)")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the attack")
    parser.add_argument("--clients", type=int, default=4, help="normal clients, one request in flight each")
    parser.add_argument("--stalled", type=int, default=16, help="stalled uploads at a time")
    parser.add_argument("--flood", type=int, default=128, help="simultaneous requests per flood burst")
    parser.add_argument("--threads", type=int, default=2, help="server CPU threads")
    parser.add_argument("--out", type=Path, default=RESULTS / "serve_abuse", help="output path without suffix")
    args = parser.parse_args(argv)
    if not 1 <= args.seconds <= 300 or not 1 <= args.clients <= 64:
        parser.error("keep --seconds in [1, 300] and --clients in [1, 64]")
    if not 0 <= args.stalled <= 256 or not 1 <= args.flood <= 1024:
        parser.error("keep --stalled in [0, 256] and --flood in [1, 1024]")
    return args


def _tiny_bundle(tmp: str) -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from tinybundle import build_tiny_bundle

    return build_tiny_bundle(Path(tmp) / "tiny")


def run(args: argparse.Namespace, bundle: Path) -> dict[str, Any]:
    from mmedge.bundle import load_bundle

    manifest = load_bundle(bundle).manifest
    normal = build_payload(bundle, manifest, "files")
    server_args = ("--body-timeout-s", str(BODY_TIMEOUT_S))
    load_before = os.getloadavg()[0]
    with Server(bundle, args.threads, server_args) as server:
        expected = reference(bundle, normal, server.url)
        pid = server.proc.pid
        warm = httpx.Client(base_url=server.url, timeout=60)
        for _ in range(50):
            warm.post("/v1/predict", content=normal[0], headers={"content-type": normal[1]}).raise_for_status()
        warm.close()
        time.sleep(1.0)
        with MemoryWatch(pid) as watch:
            idle = watch.rss()
            reset = watch.reset_kernel_peak()
            tally = asyncio.run(attack(server.url, args, normal, expected))
            time.sleep(0.5)
            kernel = watch.kernel_peak() if reset else None
            after = watch.rss()
    peak = max(watch.peak, kernel or 0)
    failures = [f"{k}: {n} wrong" for k, n in tally.wrong.items() if n]
    if peak >= idle + RSS_HEADROOM:
        failures.append(f"peak RSS {peak / MiB:.1f} MiB >= idle {idle / MiB:.1f} + {RSS_HEADROOM // MiB} MiB")
    return {
        "model": manifest.model.name,
        "bundle": str(bundle),
        "server_args": ["--threads", str(args.threads), *server_args],
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": machine(),
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "statuses": {k: dict(v) for k, v in tally.statuses.items()},
        "wrong": dict(tally.wrong),
        "retries": tally.retries,
        "memory": {
            "idle_mib": idle / MiB,
            "peak_mib": peak / MiB,
            "sampled_peak_mib": watch.peak / MiB,
            "samples": watch.samples,
            "kernel_peak_reset": reset,
            "after_mib": after / MiB,
            "limit_mib": (idle + RSS_HEADROOM) / MiB,
        },
        "failures": failures,
        "passed": not failures,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        report = run(args, args.bundle or _tiny_bundle(tmp))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
