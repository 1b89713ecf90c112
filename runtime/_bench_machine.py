"""What a benchmark ran on: CPU model and SIMD features, cores, memory, OS and library versions.

INT8 speed-ups depend on the instruction set (AVX2 vs AVX-512 VNNI vs AMX on x86, dot-product
on Arm), so numbers without this record cannot be compared. Versions are read from package
metadata, so recording torch's version does not import torch.
"""

from __future__ import annotations

import os
import platform
import re
from importlib import metadata
from pathlib import Path

from mmedge.runtime._bench_types import MachineInfo

__all__ = ["machine_info"]

# SIMD features that decide which ORT / PyTorch kernels run.
_FLAGS = re.compile(r"^(sse4_2|fma|f16c|avx|avx2|avx512\w*|avx_vnni\w*|amx\w*|asimd\w*|asimddp|sve\w*|i8mm|bf16|neon)$")
_BUSY_WINDOW_S = 1.0  # how long the CPU is watched for other work before a run
_PACKAGES = ("mmedge", "onnxruntime", "onnxruntime-gpu", "onnx", "numpy", "torch")


def machine_info() -> MachineInfo:
    import psutil

    cpu, flags = _cpu()
    return MachineInfo(
        cpu=cpu,
        arch=platform.machine(),
        flags=flags,
        physical_cores=psutil.cpu_count(logical=False) or 0,
        logical_cores=psutil.cpu_count(logical=True) or 0,
        usable_cores=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 0),
        memory_bytes=int(psutil.virtual_memory().total),
        os=platform.platform(),
        python=platform.python_version(),
        versions=_versions(),
        load_average=tuple(round(x, 2) for x in os.getloadavg()) if hasattr(os, "getloadavg") else (),
        cpu_busy=round(psutil.cpu_percent(interval=_BUSY_WINDOW_S) / 100, 3),
    )


def _cpu() -> tuple[str, tuple[str, ...]]:
    """CPU model name and its relevant feature flags (from /proc/cpuinfo where there is one)."""
    info = Path("/proc/cpuinfo")
    name, flags = "", set()
    if info.is_file():
        for line in info.read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            key = key.strip().lower()
            if key in ("model name", "hardware", "cpu model") and not name:
                name = value.strip()
            elif key in ("flags", "features") and not flags:
                flags = {f for f in value.split() if _FLAGS.match(f)}
    return name or platform.processor() or platform.machine(), tuple(sorted(flags))


def _versions() -> dict[str, str]:
    out = {}
    for package in _PACKAGES:
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return out
