"""Typed errors of mmedge.

Every error a user can cause surfaces as one of these, with a message that says what was
expected, what was found and what to do. Third-party exceptions (onnxruntime, torch, onnx)
are translated at one boundary with :func:`translated`, keeping the original as ``__cause__``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = [
    "BundleError",
    "CheckpointError",
    "CheckpointWarning",
    "ConfigError",
    "ExportError",
    "InputError",
    "MMEdgeError",
    "PartitionWarning",
    "ProviderError",
    "QuantizationError",
    "SaturationWarning",
    "summary",
    "translated",
]


class MMEdgeError(Exception):
    """Base of every error mmedge raises on purpose."""


class BundleError(MMEdgeError):
    """A bundle on disk is missing, malformed, tampered with, or does not match its manifest."""


class ExportError(MMEdgeError):
    """A PyTorch model could not be split, exported or verified."""


class CheckpointError(ExportError):
    """A checkpoint file is missing, unreadable, unsafe (pickled code), or does not fit the model."""


class QuantizationError(MMEdgeError):
    """A bundle could not be quantized, or the calibration data is unusable."""


class InputError(MMEdgeError):
    """An input given to the runtime does not match what the bundle expects."""


class ProviderError(MMEdgeError):
    """An execution provider was asked for but cannot be used."""


class ConfigError(MMEdgeError, ValueError):
    """An option passed to an mmedge API is invalid (a ValueError too, so ``except ValueError`` still works)."""


class CheckpointWarning(UserWarning):
    """A checkpoint loaded, but its values were converted on the way (float64 weights cast to float32)."""


class PartitionWarning(UserWarning):
    """An execution provider takes a component in more pieces than allowed (``Pipeline(max_partitions=)``)."""


class SaturationWarning(UserWarning):
    """An INT8 component was checked for kernel saturation on a CPU that has none, and this CPU's kernels saturate."""


@contextmanager
def translated(error: type[MMEdgeError], context: str) -> Iterator[None]:
    """Re-raise any non-mmedge exception inside the block as ``error`` prefixed by ``context``.

    ``context`` should name the thing being worked on and, where possible, the fix.
    """
    try:
        yield
    except MMEdgeError:
        raise
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as e:
        raise error(f"{context}: {type(e).__name__}: {summary(e)}") from e


# What a C++ library's message says only of where it was raised: OpenVINO's "Exception from
# src/inference/src/cpp/core.cpp:84:" and "Check 'false' failed at src/...cpp:151:", a whole line
# or the end of one (then the path may follow on a line of its own).
_LOCATION = re.compile(r"\s*(?:Exception from|Check '.*?' failed at)(?: \S+:\d+:?)?$")
_SOURCE = re.compile(r"^\S+\.(?:cpp|hpp|cc|h):\d+:?$")


def summary(e: BaseException) -> str:
    """One line of a third-party exception's message: its first line that says what went wrong
    (not merely where), with the lines of OpenVINO's ``Summary:`` where it gives one (the
    operators it could not convert)."""
    lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
    said = [_LOCATION.sub("", line) for line in lines if not _SOURCE.match(line)]
    said = [line for line in said if line]
    first = (said or lines or [type(e).__name__])[0]
    if "Summary:" in said:
        closing = [line.removeprefix("-- ") for line in said[said.index("Summary:") + 1 :]]
        return " ".join([first, "; ".join(closing)]) if closing else first
    return first
