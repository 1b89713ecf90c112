"""Peer toolchains a benchmark can time beside mmedge: what each is, and how it is built and run.

A peer is what a user would get from another tool's documented default path, built from the
same PyTorch model and checkpoint: onnxruntime's static INT8 of the whole-model ONNX, OpenVINO
FP32 and NNCF INT8, ExecuTorch XNNPACK FP32 and pt2e INT8. Their default INT8 quantizes a
spectral front-end too, which costs an audio model its audio modality; the ``-keepfe`` variants
keep the front-end FP32 for an equal-accuracy comparison. The report puts each variant's
agreement with PyTorch FP32 beside its latency.

Each peer is built in its own process (``_peer_worker build``), then timed in its own worker,
interleaved with the other variants. ExecuTorch pins its own torch, so it builds and runs under
``peer_python``.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmedge.bench._coord import VariantSpec
from mmedge.bench._plan import MONOLITHIC_ASSET, RUNTIME_WORKER
from mmedge.bundle import Bundle
from mmedge.errors import ConfigError, MMEdgeError, summary
from mmedge.worker_process import STDERR_TAIL, raise_reply_error

__all__ = ["PEERS", "PEER_GROUPS", "PEER_WORKER", "Peer", "PeerJob", "build_peers", "plan_peers"]

PEER_WORKER = "mmedge.bench._peer_worker"
INSTALL_HINT = "pip install 'mmedge[peers]'"
_CHECK_TIMEOUT_S = 300


@dataclass(frozen=True)
class Peer:
    """One peer variant."""

    name: str  # the variant's name in the report
    family: str  # "ort", "openvino" or "executorch"
    precision: str  # "fp32" or "int8"
    keep_frontend: bool  # spectral front-end kept FP32 (an equal-accuracy comparison)


PEERS = {
    p.name: p
    for p in (
        Peer("ort-int8", "ort", "int8", keep_frontend=False),
        Peer("ort-int8-keepfe", "ort", "int8", keep_frontend=True),
        Peer("openvino-fp32", "openvino", "fp32", keep_frontend=False),
        Peer("openvino-int8", "openvino", "int8", keep_frontend=False),
        Peer("openvino-int8-keepfe", "openvino", "int8", keep_frontend=True),
        Peer("executorch-fp32", "executorch", "fp32", keep_frontend=False),
        Peer("executorch-int8", "executorch", "int8", keep_frontend=False),
        Peer("executorch-int8-keepfe", "executorch", "int8", keep_frontend=True),
    )
}
# What ``--peers`` names stand for: a toolchain with its INT8 and keep-front-end variants.
PEER_GROUPS = {
    "ort-int8": ("ort-int8", "ort-int8-keepfe"),
    "openvino": ("openvino-fp32", "openvino-int8", "openvino-int8-keepfe"),
    "executorch": ("executorch-fp32", "executorch-int8", "executorch-int8-keepfe"),
    "all": tuple(PEERS),
}
_PACKAGES = {"openvino": ("openvino", "nncf"), "executorch": ("executorch", "torch")}


@dataclass(frozen=True)
class PeerJob:
    """A peer to build and then time: the build request (sent as JSON) and how to start it."""

    peer: Peer
    request: Mapping[str, Any]
    python: str | None  # None: this interpreter


def select_peers(names: Sequence[str]) -> list[Peer]:
    """``--peers`` names (groups or single variants) → peers, in catalogue order, each once."""
    unknown = [n for n in names if n not in PEER_GROUPS and n not in PEERS]
    if unknown:
        raise ConfigError(
            f"unknown peer {', '.join(map(repr, unknown))}; choose from {', '.join(PEER_GROUPS)} (a toolchain "
            f"with its INT8 and keep-front-end variants) or single variants: {', '.join(PEERS)}"
        )
    wanted = {p for n in names for p in PEER_GROUPS.get(n, (n,))}
    return [p for name, p in PEERS.items() if name in wanted]


def plan_peers(
    names: Sequence[str],
    bundles: Sequence[Bundle],
    *,
    torch_spec: Mapping[str, Any] | None,
    peer_python: str | None,
    threads: int,
    batch_sizes: Sequence[int],
    items: Mapping[str, int] | None = None,
) -> list[PeerJob]:
    """Check that every requested peer can be built (packages, model, ONNX) before anything runs.
    ``items``: input name → items per call for inputs counting their own (ExecuTorch lowers at it)."""
    peers = select_peers(names)
    if not peers:
        return []
    if torch_spec is None:
        raise ConfigError(
            "peers are built from the PyTorch model and scored against it: pass --torch (and --checkpoint)"
        )
    families = {p.family for p in peers}
    source = _monolithic_fp32(bundles) if families & {"ort", "openvino"} else None
    _check_packages(families, peer_python)
    common = {
        "torch": dict(torch_spec),
        "threads": threads,
        "batch_sizes": sorted({1, *batch_sizes}),
        "items": dict(items or {}),
    }
    return [
        PeerJob(
            p,
            {**common, "peer": dataclasses.asdict(p), "source": str(source) if source else None},
            peer_python if p.family == "executorch" else None,
        )
        for p in peers
    ]


def build_peers(
    jobs: Sequence[PeerJob],
    *,
    calibration: Path,
    scratch: Path,
    bundle: Path,
    providers: Any,
    on_start: Callable[[int, Peer], None],
) -> tuple[list[tuple[VariantSpec, tuple[str, ...]]], list[str]]:
    """Build each peer in its own process; returns each built one's timed variant and build notes,
    and why each other one could not be built (the others still run; the report says so)."""
    out, failed = [], []
    for i, job in enumerate(jobs):
        on_start(i, job.peer)
        suffix = {"ort": ".onnx", "openvino": ".xml", "executorch": ".pte"}[job.peer.family]
        request = {**job.request, "calibration": str(calibration), "out": str(scratch / f"{job.peer.name}{suffix}")}
        try:
            built = _run_build(job, request)
        except MMEdgeError as e:
            failed.append(f"peer {job.peer.name} not measured: {summary(e)}")
            continue
        notes = (*built["notes"], f"built in {built['build_s']:.0f} s (own process; not in its start-up time)")
        out.append((_variant(job, built, bundle, providers), notes))
    return out, failed


def _variant(job: PeerJob, built: Mapping[str, Any], bundle: Path, providers: Any) -> VariantSpec:
    p = job.peer
    threads = job.request["threads"]
    if p.family == "ort":
        spec = {"kind": "monolithic", "path": built["path"], "bundle": str(bundle), "precision": p.precision}
        return VariantSpec(
            p.name, "peer", built["path"], RUNTIME_WORKER, {**spec, "threads": threads, "providers": providers}
        )
    spec = {"precision": p.precision, "threads": threads, "notes": ()}
    spec |= (
        {"path": built["path"]} if p.family == "openvino" else {k: built[k] for k in ("paths", "order", "batch_input")}
    )
    source = built.get("path") or next(iter(built["paths"].values()))
    return VariantSpec(p.name, "peer", source, PEER_WORKER, spec, python=job.python, argv=(p.family,))


def _run_build(job: PeerJob, request: Mapping[str, Any]) -> dict[str, Any]:
    proc = subprocess.run(
        [job.python or sys.executable, "-m", PEER_WORKER, "build"],
        input=json.dumps(request) + "\n",
        capture_output=True,
        text=True,
        check=False,
    )
    lines = proc.stdout.strip().splitlines()
    reply = json.loads(lines[-1]) if lines else {}
    raise_reply_error(reply, f"building peer {job.peer.name!r}")
    if proc.returncode != 0 or not reply:
        raise MMEdgeError(
            f"building peer {job.peer.name!r} exited with code {proc.returncode}:\n{proc.stderr[-STDERR_TAIL:].strip()}"
        )
    return reply


def _monolithic_fp32(bundles: Sequence[Bundle]) -> Path:
    """The whole-model FP32 ONNX the onnxruntime and OpenVINO peers start from."""
    for b in bundles:
        if any(a.name == MONOLITHIC_ASSET for a in b.manifest.assets):
            return b.asset_path(MONOLITHIC_ASSET)
    raise ConfigError(
        "the onnxruntime and OpenVINO peers start from the whole-model FP32 ONNX, which none of the bundles "
        "carries; export one with `mmedge export --monolithic` and pass it (or --compare it)"
    )


def _check_packages(families: set[str], peer_python: str | None) -> None:
    problems = []
    for family in sorted(families & set(_PACKAGES)):
        if family == "executorch" and peer_python is not None:
            problems += _foreign_python_problems(peer_python)
            continue
        missing = [m for m in _PACKAGES[family] if importlib.util.find_spec(m) is None]
        if missing:
            fix = (
                "ExecuTorch pins its own torch: create a venv with executorch (and mmedge) and pass --peer-python PATH"
                if family == "executorch"
                else INSTALL_HINT
            )
            problems.append(f"the {family} peers need {', '.join(missing)}, not installed here; {fix}")
    if problems:
        raise ConfigError("; ".join(problems))


def _foreign_python_problems(python: str) -> list[str]:
    """Can ``python`` import executorch, torch and this mmedge's peer worker?"""
    code = "import executorch, torch, mmedge.bench._peer_executorch"
    try:
        proc = subprocess.run(
            [python, "-c", code], capture_output=True, text=True, check=False, timeout=_CHECK_TIMEOUT_S
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return [f"--peer-python {python} cannot be run ({e}); pass an interpreter's path"]
    if proc.returncode != 0:
        return [
            f"--peer-python {python} cannot `{code}`: {proc.stderr.strip()[-500:]}; install executorch and mmedge "
            "into that environment"
        ]
    return []
