"""Give the C heap's free memory back to the operating system after a large transient allocation.

Parsing an ONNX file with the ``onnx`` package (``load_bundle`` checks each component's inputs and
outputs against the manifest) allocates its whole protobuf, weights included. Freed, most of it
stays in the process's heap (glibc keeps freed blocks for reuse), so it still counts in the
resident set, and allocations too large for the heap (an OpenVINO model imported from its cache,
say) do not reuse it: it adds to their peak. ``malloc_trim(0)`` hands the free pages back.
Without glibc (macOS, Windows, musl) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys
from collections.abc import Callable

__all__ = ["release_free_memory"]


def release_free_memory() -> bool:
    """Return the heap's free pages to the OS; True if the C library could be asked to."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim  # glibc only
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim
