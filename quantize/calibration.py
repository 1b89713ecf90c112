"""Calibration and held-out samples: read, validate against the manifest, and replay.

A *sample* is one dict of raw model inputs (``{"text": ids, "image": x, ...}``, each array
with its batch dimension), exactly what a caller would feed the pipeline. Samples come from a
directory of ``.npz`` files (one per sample, keys = input names), any iterable of such dicts,
an onnxruntime ``CalibrationDataReader`` (anything with ``get_next()``), or the synthetic data
of a reference model. They are read once into memory and checked against the bundle's
:class:`~mmedge.bundle.InputSpec` (dtype, rank, fixed dims, one size per symbolic dim within a
sample): calibration runs each sample several times (chained components, fallback rounds), and
a bad sample must be named before any quantization work starts.
"""

from __future__ import annotations

import importlib
import itertools
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from mmedge.bundle import InputSpec, Manifest
from mmedge.errors import QuantizationError

__all__ = ["Sample", "SampleReader", "collect_samples", "synthetic_calibration"]

Sample = dict[str, np.ndarray]
# The package of the reference models' synthetic data (numpy only). It is an application built on
# this stage, so it is named here and imported when asked for, as a user's data module would be.
SYNTHETIC_DATA = "mmedge.data"


class SampleReader(CalibrationDataReader):
    """Replays a list of samples; an onnxruntime ``CalibrationDataReader``, so it goes straight
    to ``quantize_static``. ``labels`` (one per example, optional) travel with synthetic data."""

    def __init__(self, samples: Sequence[Sample], labels: np.ndarray | None = None) -> None:
        self.samples = list(samples)
        self.labels = labels
        self._next = 0

    def get_next(self) -> Sample | None:
        if self._next >= len(self.samples):
            return None
        self._next += 1
        return self.samples[self._next - 1]

    def rewind(self) -> None:
        self._next = 0

    def __len__(self) -> int:
        return len(self.samples)


def collect_samples(
    source: Any, manifest: Manifest, what: str = "calibration", *, limit: int | None = None
) -> list[Sample]:
    """Read ``source`` into validated samples for ``manifest``'s raw inputs.

    ``source`` is a directory of ``.npz`` files, an iterable of input dicts, or an object with
    ``get_next()``. Inputs the manifest gives a ``default`` may be omitted. Raises
    :class:`QuantizationError` naming the sample, the input, and expected vs found.
    """
    # Not isinstance: CalibrationDataReader's __subclasshook__ claims any object with get_next().
    if SampleReader in type(source).__mro__:
        raw = source.samples[:limit]  # replayable: do not drain it
    elif isinstance(source, str | os.PathLike):
        raw = _read_directory(Path(source), what, limit)
    elif hasattr(source, "get_next"):
        raw = _drain(source, limit)
    elif isinstance(source, Iterable) and not isinstance(source, Mapping):
        raw = list(itertools.islice(source, limit))
    else:
        raise QuantizationError(
            f"{what} data must be a directory of .npz files, an iterable of input dicts, or a "
            f"CalibrationDataReader; found {type(source).__name__}"
        )
    if not raw:
        raise QuantizationError(
            f"{what} data is empty; give at least 2 samples (a few hundred for good INT8 ranges), "
            "e.g. `--calibration synthetic` for a reference model"
        )
    problems = [p for i, s in enumerate(raw) for p in _sample_problems(i, s, manifest.inputs)]
    if problems:
        shown = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
        raise QuantizationError(f"{what} data does not match the bundle inputs:\n  - " + "\n  - ".join(shown))
    return [{k: np.ascontiguousarray(v) for k, v in s.items()} for s in raw]


def _drain(reader: Any, limit: int | None) -> list[Any]:
    samples = []
    while limit is None or len(samples) < limit:
        item = reader.get_next()
        if item is None:
            break
        samples.append(item)
    return samples


def _read_directory(root: Path, what: str, limit: int | None) -> list[Sample]:
    if not root.is_dir():
        raise QuantizationError(f"{what} directory {root} does not exist; pass a folder of .npz files (one per sample)")
    files = sorted(root.glob("*.npz"))[:limit]
    samples = []
    for f in files:
        try:
            with np.load(f, allow_pickle=False) as data:
                samples.append({k: data[k] for k in data.files})
        except (OSError, ValueError) as e:
            raise QuantizationError(
                f"{what} file {f} is not a readable .npz archive ({e}); write it with numpy.savez"
            ) from e
    return samples


def _sample_problems(index: int, sample: Any, specs: Sequence[InputSpec]) -> list[str]:
    """Every way ``sample`` differs from the input specs, one line each."""
    where = f"sample {index}"
    if not isinstance(sample, Mapping):
        return [f"{where}: expected a dict of input name -> array, found {type(sample).__name__}"]
    known = {s.name for s in specs}
    problems = [
        f"{where}: unknown input {k!r}; the bundle inputs are {sorted(known)}" for k in sample if k not in known
    ]
    bound: dict[str, tuple[int, str]] = {}
    for spec in specs:
        if spec.name not in sample:
            if spec.default is None:
                problems.append(f"{where}: input {spec.name!r} is missing (expected {spec.dtype} {list(spec.shape)})")
            continue
        value = sample[spec.name]
        if not isinstance(value, np.ndarray):
            problems.append(f"{where}: input {spec.name!r} is a {type(value).__name__}, expected a numpy array")
            continue
        problems += _array_problems(where, spec, value, bound)
    return problems


def _array_problems(where: str, spec: InputSpec, value: np.ndarray, bound: dict[str, tuple[int, str]]) -> list[str]:
    expected = f"expected {spec.dtype} {list(spec.shape)}"
    if value.dtype != np.dtype(spec.dtype):
        return [
            f"{where}: input {spec.name!r} has dtype {value.dtype}, {expected}; convert with .astype(np.{spec.dtype})"
        ]
    if value.ndim != len(spec.shape):
        return [f"{where}: input {spec.name!r} has shape {list(value.shape)} (rank {value.ndim}), {expected}"]
    problems = []
    for axis, (want, got) in enumerate(zip(spec.shape, value.shape, strict=True)):
        if isinstance(want, int) and want != got:
            problems.append(
                f"{where}: input {spec.name!r} has shape {list(value.shape)}, {expected} (dim {axis} must be {want})"
            )
        elif isinstance(want, str):
            size, other = bound.setdefault(want, (got, spec.name))
            if size != got:
                problems.append(
                    f"{where}: input {spec.name!r} dim {axis} ({want!r}) is {got} but input {other!r} has {want!r}={size}; "
                    "all inputs of one sample must agree"
                )
    if value.size == 0:
        problems.append(f"{where}: input {spec.name!r} is empty (shape {list(value.shape)})")
    return problems


def synthetic_calibration(manifest: Manifest, n: int, seed: int = 0) -> SampleReader:
    """``n`` one-example samples (with labels) of a reference model's synthetic data.

    Only for bundles exported from the reference models (``mmedge.models``): the synthetic data
    (:data:`SYNTHETIC_DATA`'s ``reference_set``) is sized from the manifest's inputs. Raises
    :class:`QuantizationError` for any other model.
    """
    data = importlib.import_module(SYNTHETIC_DATA)
    if manifest.model.name not in data.REFERENCE_SETS:
        raise QuantizationError(
            f"no synthetic data for model {manifest.model.name!r} (there is for {sorted(data.REFERENCE_SETS)}); "
            "pass calibration samples: `--calibration samples.jsonl` (per line, input name → file path or text, "
            'e.g. {"image": "a.jpg", "text": "a cat"}), a directory of .npz files, or from Python an iterable of '
            "input dicts"
        )
    if n < 1:
        raise QuantizationError(f"synthetic sample count must be at least 1, got {n}")
    dataset = data.reference_set(manifest, n, seed)
    missing = sorted({i.name for i in manifest.inputs if i.default is None} - set(dataset.inputs))
    if missing:
        raise QuantizationError(
            f"synthetic data of {manifest.model.name} has inputs {sorted(dataset.inputs)}, but the bundle needs {missing}"
        )
    names = [i.name for i in manifest.inputs if i.name in dataset.inputs]
    samples = [{k: dataset.inputs[k][j : j + 1] for k in names} for j in range(n)]
    return SampleReader(samples, labels=getattr(dataset, "labels", None))
