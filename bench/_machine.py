"""What a benchmark ran on: CPU model and SIMD features, cores, memory, OS and library versions.

INT8 speed-ups depend on the instruction set (AVX2 vs AVX-512 VNNI vs AMX on x86, dot-product
on Arm), so numbers without this record cannot be compared. Versions are read from package
metadata, so recording torch's version does not import torch.
"""

from __future__ import annotations

import os
import platform
from importlib import metadata

from mmedge.bench._types import MachineInfo
from mmedge.cpu import cpu_model_and_flags

__all__ = ["machine_info"]

_BUSY_WINDOW_S = 1.0  # how long the CPU is watched for other work before a run
_PACKAGES = ("mmedge", "onnxruntime", "onnxruntime-gpu", "onnx", "numpy", "torch")


def machine_info() -> MachineInfo:
    import psutil

    cpu, flags = cpu_model_and_flags()
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


def _versions() -> dict[str, str]:
    out = {}
    for package in _PACKAGES:
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return out
