"""What this CPU can do that decides which INT8 kernels onnxruntime runs.

On x86-64 without VNNI (AVX-512 VNNI, AVX-VNNI) or AMX, onnxruntime's U8S8 kernels multiply with
VPMADDUBSW, which adds two u8 x s8 products into a saturating int16: large activations against
two large weights of the same sign clip. With VNNI the products accumulate in int32 and nothing
clips. mmedge quantize checks for it on the machine it runs on (``mmedge.quantize.saturation``);
the runtime warns when a bundle checked on a CPU without the problem runs on one with it.
"""

from __future__ import annotations

import platform
import re
from collections.abc import Sequence
from functools import cache
from pathlib import Path

__all__ = ["cpu_model_and_flags", "int8_dot_instructions", "int8_kernels_saturate"]

# SIMD features that decide which ORT / PyTorch kernels run.
_FLAGS = re.compile(r"^(sse4_2|fma|f16c|avx|avx2|avx512\w*|avx_vnni\w*|amx\w*|asimd\w*|asimddp|sve\w*|i8mm|bf16|neon)$")
_INT32_DOT = ("avx512_vnni", "avx_vnni", "amx_int8")


@cache
def cpu_model_and_flags() -> tuple[str, tuple[str, ...]]:
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


def int8_kernels_saturate(arch: str | None = None, flags: Sequence[str] | None = None) -> bool:
    """Whether onnxruntime's U8S8 CPU kernels can saturate on x86-64 ``arch`` with ``flags``: no VNNI or AMX.

    Default: this machine. Unknown flags (no /proc/cpuinfo: macOS, Windows) count as not
    saturating, so no false alarm.
    """
    if (arch or platform.machine()).lower() not in ("x86_64", "amd64"):
        return False
    flags = cpu_model_and_flags()[1] if flags is None else flags
    return bool(flags) and not any(f in flags for f in _INT32_DOT)


def int8_dot_instructions(flags: Sequence[str] | None = None) -> tuple[str, ...]:
    """The int32-accumulating INT8 dot-product instructions among ``flags`` (default: this CPU's):
    what decides how fast INT8 convolutions can run, and so which backend a measurement favours."""
    flags = cpu_model_and_flags()[1] if flags is None else flags
    return tuple(f for f in _INT32_DOT if f in flags)
