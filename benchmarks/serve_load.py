"""Load test of ``mmedge serve`` on loopback: throughput and latency with and without micro-batching.

For each mode the script starts ``mmedge serve BUNDLE`` on 127.0.0.1 (a free port), warms it up,
then keeps ``--concurrency`` requests in flight for ``--seconds`` and records every latency. The
only difference between the modes is the batching policy (``--no-batching`` versus
``--max-batch``/``--max-wait-ms``); threads, payload and client are the same. Everything is bounded
in time: each server gets a startup deadline and is stopped with SIGTERM (then killed) afterwards.

    python benchmarks/serve_load.py BUNDLE [--seconds 10] [--concurrency 32] [--payload files|json]

Writes ``benchmarks/results/serve_load.json`` and ``.md`` (with the machine's CPU and load).
The client runs on the same machine and competes with the server for CPU: the numbers compare
the two modes under equal conditions, not the server's ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from mmedge.bundle import AudioPreprocess, ImagePreprocess, InputSpec, Manifest, TextPreprocess, load_bundle

HOST = "127.0.0.1"
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Mode:
    name: str
    server_args: tuple[str, ...]


@dataclass(frozen=True)
class Round:
    """One measured run of one mode, on a freshly started server."""

    latencies_s: list[float]
    errors: dict[str, int]  # by HTTP status or exception name
    seconds: float
    requests_merged: float  # requests served by the pipeline calls of this run (from /metrics)
    calls: float  # pipeline calls of this run
    load_average: float  # 1-minute load average just before the server started


@dataclass(frozen=True)
class ModeResult:
    """A mode over all its rounds: latencies pooled, throughput = all requests / all seconds."""

    name: str
    server_args: tuple[str, ...]
    requests: int
    errors: dict[str, int]
    seconds: float
    throughput_rps: float
    throughput_per_round_rps: tuple[float, ...]
    latency_ms: dict[str, float]
    requests_per_call: float  # mean requests merged into one pipeline call
    load_average_before: tuple[float, ...]  # per round


# ---------------------------------------------------------------------------------------------
# payload: one row, built from the manifest


def _words(bundle: Path, spec: InputSpec) -> str:
    pre = spec.preprocess
    if isinstance(pre, TextPreprocess) and pre.vocab_file:
        vocab = (bundle / pre.vocab_file).read_text(encoding="utf-8").split()
        return " ".join(vocab[2:6])  # skip the usual <pad>/<unk>
    return "hello world"


def _png(pre: ImagePreprocess) -> bytes:
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 256, (*pre.size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _wav(pre: AudioPreprocess) -> bytes:
    import soundfile

    wave = np.random.default_rng(0).uniform(-0.5, 0.5, round(pre.sample_rate * pre.max_seconds))
    buffer = io.BytesIO()
    soundfile.write(buffer, wave.astype(np.float32), pre.sample_rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def _tensor(spec: InputSpec) -> list:
    shape = [1, *(d if isinstance(d, int) else e for d, e in zip(spec.shape[1:], spec.example_shape[1:], strict=False))]
    rng = np.random.default_rng(0)
    if spec.dtype.startswith("int"):
        return rng.integers(2, 5, shape).tolist()
    return rng.uniform(-0.5, 0.5, shape).tolist()


def build_payload(bundle: Path, manifest: Manifest, kind: str) -> tuple[bytes, str]:
    """The body of one single-row ``/v1/predict`` request, encoded once, and its content type."""
    if kind == "json":
        inputs = {s.name: _words(bundle, s) if s.modality == "text" else _tensor(s) for s in manifest.inputs}
        return json.dumps({"inputs": inputs}).encode(), "application/json"
    files, data = {}, {}
    for s in manifest.inputs:
        if isinstance(s.preprocess, ImagePreprocess):
            files[s.name] = ("image.png", _png(s.preprocess), "image/png")
        elif isinstance(s.preprocess, AudioPreprocess):
            files[s.name] = ("audio.wav", _wav(s.preprocess), "audio/wav")
        elif s.modality == "text":
            data[s.name] = _words(bundle, s)
        else:
            data[s.name] = json.dumps(_tensor(s)[0])
    request = httpx.Request("POST", f"http://{HOST}/v1/predict", files=files, data=data)
    return request.read(), request.headers["content-type"]


# ---------------------------------------------------------------------------------------------
# server


class Server:
    """``mmedge serve`` in a subprocess on a free loopback port; always stopped on exit."""

    def __init__(self, bundle: Path, threads: int, extra: tuple[str, ...]) -> None:
        command = [sys.executable, "-m", "mmedge", "serve", str(bundle), "--host", HOST, "--port", "0", "--json"]
        command += ["--threads", str(threads), "--log-level", "warning", *extra]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        self.url = ""

    def __enter__(self) -> Server:
        announced: dict[str, Any] = {}

        def read() -> None:
            text = ""
            for line in self.proc.stdout:
                text += line
                try:
                    announced.update(json.loads(text))
                    return
                except json.JSONDecodeError:
                    continue

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(START_TIMEOUT_S)
        if not announced:
            self.stop()
            raise RuntimeError("mmedge serve did not start in time")
        self.url = announced["url"]
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=5).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("mmedge serve never became healthy")

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=STOP_TIMEOUT_S)


# ---------------------------------------------------------------------------------------------
# load


def _request_bytes(url: str, body: bytes, content_type: str) -> bytes:
    host = url.removeprefix("http://")
    head = (
        f"POST /v1/predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n"
    )
    return head.encode() + body


async def _one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    """Send one request on a keep-alive connection; read the whole response; return its status."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
    if length is None:
        raise ConnectionError("response without Content-Length")
    await reader.readexactly(int(length.group(1)))
    return status


async def _load(
    url: str, body: bytes, content_type: str, concurrency: int, seconds: float
) -> tuple[list[float], dict[str, int]]:
    """Keep ``concurrency`` requests in flight for ``seconds``; latencies (s) of 200s, and errors by kind.

    A minimal HTTP/1.1 client on raw keep-alive connections (like wrk), so that the load
    generator, which shares the CPU with the server, costs as little as possible.
    """
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    end = time.monotonic() + seconds
    request = _request_bytes(url, body, content_type)
    host, port = url.removeprefix("http://").split(":")

    async def user() -> None:
        reader = writer = None
        while time.monotonic() < end:
            started = time.perf_counter()
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(host, int(port))
                status = await asyncio.wait_for(_one(reader, writer, request), timeout=60)
            except (OSError, asyncio.IncompleteReadError, TimeoutError) as e:
                errors[type(e).__name__] += 1
                if writer is not None:
                    writer.close()
                reader = writer = None
                await asyncio.sleep(0.05)  # do not spin on a server that refuses connections
                continue
            if status == 200:
                latencies.append(time.perf_counter() - started)
            else:
                errors[f"HTTP {status}"] += 1
        if writer is not None:
            writer.close()

    await asyncio.gather(*(user() for _ in range(concurrency)))
    return latencies, dict(errors)


def measure(mode: Mode, args: argparse.Namespace, body: bytes, content_type: str) -> Round:
    load = os.getloadavg()[0]
    with Server(args.bundle, args.threads, mode.server_args) as server:
        asyncio.run(_load(server.url, body, content_type, args.concurrency, args.warmup_seconds))
        before = _requests_per_call_counts(httpx.get(f"{server.url}/metrics", timeout=10).text)
        started = time.perf_counter()
        latencies, errors = asyncio.run(_load(server.url, body, content_type, args.concurrency, args.seconds))
        elapsed = time.perf_counter() - started
        after = _requests_per_call_counts(httpx.get(f"{server.url}/metrics", timeout=10).text)
    return Round(latencies, errors, elapsed, after[0] - before[0], after[1] - before[1], round(load, 2))


def summarize(mode: Mode, rounds: list[Round]) -> ModeResult:
    ms = np.asarray([x for r in rounds for x in r.latencies_s]) * 1000
    seconds = sum(r.seconds for r in rounds)
    calls = sum(r.calls for r in rounds)

    def stat(fn: Any) -> float:
        return round(float(fn(ms)), 2) if ms.size else float("nan")

    return ModeResult(
        name=mode.name,
        server_args=mode.server_args,
        requests=int(ms.size),
        errors=dict(sum((Counter(r.errors) for r in rounds), Counter())),
        seconds=round(seconds, 2),
        throughput_rps=round(ms.size / seconds, 2),
        throughput_per_round_rps=tuple(round(len(r.latencies_s) / r.seconds, 1) for r in rounds),
        latency_ms={
            "p50": stat(lambda a: np.percentile(a, 50)),
            "p90": stat(lambda a: np.percentile(a, 90)),
            "p99": stat(lambda a: np.percentile(a, 99)),
            "max": stat(np.max),
            "mean": stat(np.mean),
        },
        requests_per_call=round(sum(r.requests_merged for r in rounds) / calls, 2) if calls else float("nan"),
        load_average_before=tuple(r.load_average for r in rounds),
    )


def _requests_per_call_counts(metrics: str) -> tuple[float, float]:
    """(requests served, pipeline calls) so far, from /metrics."""
    total = re.search(r'mmedge_batch_requests_sum\{task="predict"\} (\S+)', metrics)
    calls = re.search(r'mmedge_batch_requests_count\{task="predict"\} (\S+)', metrics)
    return (float(total.group(1)) if total else 0.0, float(calls.group(1)) if calls else 0.0)


# ---------------------------------------------------------------------------------------------
# report


def machine() -> dict[str, Any]:
    import onnxruntime
    import psutil

    model = platform.processor()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = re.findall(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), flags=re.MULTILINE)
        model = names[0] if names else model
    return {
        "cpu": model,
        "logical_cores": psutil.cpu_count(logical=True),
        "physical_cores": psutil.cpu_count(logical=False),
        "cores_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
    }


def markdown(report: dict[str, Any]) -> str:
    m, s = report["machine"], report["settings"]
    lines = [
        f"# mmedge serve load test: {report['model']}",
        "",
        f"Bundle `{report['bundle']}` ({report['payload_bytes']:,}-byte `{s['payload']}` payload, one row per "
        f"request); {s['concurrency']} connections each keeping one request in flight; {s['rounds']} rounds of "
        f"{s['seconds']} s per mode (each on a fresh server after {s['warmup_seconds']} s warm-up, modes "
        f"alternating); server `--threads {s['threads']}`; client and server share the machine, over loopback.",
        "",
        *([s["note"], ""] if s["note"] else []),
        "Components: "
        + ", ".join(f"{c['name']} ({c['precision']}, {c['bytes'] / 2**20:.1f} MiB)" for c in report["components"])
        + ".",
        "",
        f"Machine: {m['cpu']}, {m['physical_cores']} physical / {m['logical_cores']} logical cores "
        f"({m['cores_available']} available), {m['memory_gb']} GB, {m['platform']}, Python {m['python']}, "
        f"onnxruntime {m['onnxruntime']}.",
        "",
        "| mode | server flags | requests | errors | throughput (req/s) | per round | p50 ms | p90 ms | p99 ms "
        "| requests per pipeline call | 1-min load before |",
        "|---|---|---:|---:|---:|---|---:|---:|---:|---:|---|",
    ]
    for r in report["modes"]:
        lat = r["latency_ms"]
        lines.append(
            f"| {r['name']} | `{' '.join(r['server_args'])}` | {r['requests']} | {sum(r['errors'].values())} | "
            f"{r['throughput_rps']:.1f} | {', '.join(str(x) for x in r['throughput_per_round_rps'])} | {lat['p50']:.1f} | {lat['p90']:.1f} | {lat['p99']:.1f} | "
            f"{r['requests_per_call']:.2f} | {', '.join(str(x) for x in r['load_average_before'])} |"
        )
    lines += [
        "",
        f"Throughput with micro-batching / without: **{report['speedup']:.2f}x**.",
        "",
        "A 1-minute load average above the core count means other processes shared the CPU during the run; "
        "the per-round throughput shows the spread that caused.",
        "",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", type=Path, help="bundle directory to serve")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured load per mode")
    parser.add_argument("--warmup-seconds", type=float, default=2.0, help="unmeasured load before each mode")
    parser.add_argument("--concurrency", type=int, default=32, help="requests kept in flight")
    parser.add_argument("--rounds", type=int, default=2, help="measured runs per mode, alternating the modes")
    parser.add_argument("--threads", type=int, default=max(1, len(os.sched_getaffinity(0))), help="server CPU threads")
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--payload", choices=("files", "json"), default="files", help="multipart files or JSON tensors")
    parser.add_argument("--note", default="", help="how the bundle was made, for the report")
    parser.add_argument("--out", type=Path, default=RESULTS / "serve_load", help="output path without suffix")
    args = parser.parse_args(argv)
    if not 0 < args.seconds <= 600 or not 0 <= args.warmup_seconds <= 60 or not 1 <= args.concurrency <= 1024:
        parser.error("keep --seconds in (0, 600], --warmup-seconds in [0, 60] and --concurrency in [1, 1024]")
    if not 1 <= args.rounds <= 10:
        parser.error("keep --rounds in [1, 10]")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    bundle = load_bundle(args.bundle)
    body, content_type = build_payload(bundle.path, bundle.manifest, args.payload)
    modes = [
        Mode("no micro-batching", ("--no-batching",)),
        Mode("micro-batching", ("--max-batch", str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms))),
    ]
    rounds: dict[str, list[Round]] = {m.name: [] for m in modes}
    for i in range(args.rounds):  # alternate the order, so drift in machine load hits both modes
        for mode in modes if i % 2 == 0 else modes[::-1]:
            print(f"round {i + 1}: {mode.name}, {args.seconds:g} s at concurrency {args.concurrency}", file=sys.stderr)
            rounds[mode.name].append(measure(mode, args, body, content_type))
            last = rounds[mode.name][-1]
            print(f"  {len(last.latencies_s) / last.seconds:.1f} req/s, errors: {last.errors}", file=sys.stderr)
    results = [summarize(m, rounds[m.name]) for m in modes]
    report = {
        "model": bundle.manifest.model.name,
        "bundle": str(args.bundle),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": machine(),
        "modes": [asdict(r) for r in results],
        "speedup": round(results[1].throughput_rps / results[0].throughput_rps, 3)
        if results[0].throughput_rps
        else None,
        "payload_bytes": len(body),
        "components": [
            {"name": c.name, "precision": c.precision, "bytes": c.size_bytes} for c in bundle.manifest.components
        ],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
