"""The process one benchmark variant runs in, driven by the coordinator over a pipe.

Each variant lives in its own fresh process so that its start-up time and peak memory are its
own, and so that the runtime's process never imports torch. The coordinator writes one JSON
line per command on stdin and reads one JSON line per reply on the original stdout (library
output written to stdout is redirected to stderr so it cannot corrupt the protocol):

* first line: ``{"spec": {...}, "inputs": {batch: npz path}, "t_spawn": ns}`` → ``{"ready": ...}``
  after importing the framework, loading the model and running it once (the cold start);
* ``{"cmd": "run", "batch": b}`` → one :class:`RunTiming`;
* ``{"cmd": "memory"}`` → peak RSS so far; ``{"cmd": "profile", "batch": b, "runs": n}`` → hot spots;
* ``{"cmd": "outputs", "samples": npz, "out": npz, "together": bool}`` → runs each sample at batch 1
  (``together``: all as one batch) and saves the outputs (in the manifest's order), for the agreement
  with PyTorch FP32;
* ``{"cmd": "exit"}`` or end of input → the process exits.

Terminal Ctrl-C is ignored here: the coordinator decides when to stop and collects what was
measured first.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from mmedge.bench._agreement import run_samples
from mmedge.bench._inputs import load_npz
from mmedge.bench._profile import hotspots_to_json
from mmedge.bench._stats import RunTiming
from mmedge.bench._types import Hotspots
from mmedge.errors import MMEdgeError
from mmedge.worker_process import serve_lines

__all__ = ["VariantRunner", "peak_rss_bytes", "serve"]


class VariantRunner(Protocol):
    """A loaded model variant that the worker times."""

    precision: str
    providers: tuple[str, ...]
    size_bytes: int
    notes: tuple[str, ...]

    def run(self, feeds: Mapping[str, np.ndarray]) -> RunTiming: ...

    def profile(self, feeds: Mapping[str, np.ndarray], runs: int) -> list[Hotspots]: ...

    def outputs(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]: ...


def peak_rss_bytes() -> int:
    """This process's peak resident set size.

    On Linux ``ru_maxrss`` survives fork and exec, so a worker started by a big parent (one that
    trained a model, say) would report the parent's peak; ``VmHWM`` belongs to the address space
    the exec created. Elsewhere ``ru_maxrss`` it is (bytes on macOS, KiB on other systems).
    """
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text(encoding="utf-8").splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def serve(import_framework: Callable[[], None], load: Callable[[Mapping[str, Any]], VariantRunner]) -> int:
    """Run the worker protocol until the coordinator says exit; returns the process exit code."""
    t_main = time.monotonic_ns()
    return serve_lines(lambda config: _start(config, t_main, import_framework, load), _dispatch)


def _start(
    config: Mapping[str, Any], t_main: int, import_framework: Callable[[], None], load: Callable[..., VariantRunner]
) -> tuple[tuple[VariantRunner, dict[int, Mapping[str, np.ndarray]]], dict[str, Any]]:
    t0 = time.monotonic_ns()
    feeds = {int(b): load_npz(Path(p)) for b, p in config["inputs"].items()}
    t1 = time.monotonic_ns()
    import_framework()
    t2 = time.monotonic_ns()
    runner = load(config["spec"])
    t3 = time.monotonic_ns()
    runner.run(feeds[min(feeds)])
    t4 = time.monotonic_ns()
    ready = {
        "ready": True,
        # process start → first result, without the benchmark's own input loading
        "cold_start_ns": t4 - config["t_spawn"] - (t1 - t0),
        "process_ns": t_main - config["t_spawn"],
        "import_ns": t2 - t1,
        "load_ns": t3 - t2,
        "first_run_ns": t4 - t3,
        "precision": runner.precision,
        "providers": list(runner.providers),
        "size_bytes": runner.size_bytes,
        "notes": list(runner.notes),
    }
    return (runner, feeds), ready


def _dispatch(
    state: tuple[VariantRunner, Mapping[int, Mapping[str, np.ndarray]]], command: Mapping[str, Any]
) -> dict[str, Any]:
    runner, feeds = state
    kind = command["cmd"]
    if kind == "run":
        return runner.run(feeds[int(command["batch"])]).to_json()
    if kind == "memory":
        return {"peak_rss_bytes": peak_rss_bytes()}
    if kind == "profile":
        found = runner.profile(feeds[int(command["batch"])], int(command["runs"]))
        return {"hotspots": [hotspots_to_json(h) for h in found]}
    if kind == "outputs":
        return run_samples(
            runner.outputs, Path(command["samples"]), Path(command["out"]), bool(command.get("together"))
        )
    raise MMEdgeError(f"unknown benchmark worker command {kind!r}")


def _main() -> int:
    from mmedge.bench._variants import import_onnxruntime, load_variant

    return serve(import_onnxruntime, load_variant)


if __name__ == "__main__":
    sys.exit(_main())
