"""Raw inputs (files, strings, arrays) → the tensors a bundle's graphs take, without opening a session.

What ``Pipeline.run`` does before anything runs, for callers that need the tensors themselves:
calibration and held-out data for ``mmedge quantize`` and benchmark inputs for ``mmedge bench``
given as the files users have, preprocessed exactly as the deployed bundle will preprocess them.

A samples file (``.jsonl``) holds one sample per line, a JSON object of input name → value as
``mmedge run -i`` and ``Pipeline.run`` take them: an image or sound file's path (relative to the
file's folder), a text string, or nested lists of numbers.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mmedge.bundle import Bundle, load_bundle
from mmedge.errors import InputError
from mmedge.graph import Graph
from mmedge.runtime._inputs import InputRouter
from mmedge.runtime.limits import DEFAULT_LIMITS, InputLimits

__all__ = ["SAMPLES_SUFFIX", "input_preparer", "read_samples"]

SAMPLES_SUFFIX = ".jsonl"
_MEDIA = ("image", "audio")


def input_preparer(
    bundle: str | os.PathLike[str] | Bundle, limits: InputLimits = DEFAULT_LIMITS
) -> Callable[[Mapping[str, Any]], dict[str, np.ndarray]]:
    """A function from one ``Pipeline.run`` inputs dict to every raw input tensor, batch axis included.

    Derived inputs (an attention mask from the same strings) and defaults are filled in; a value
    the bundle cannot take raises :class:`~mmedge.errors.InputError` naming every problem.
    """
    loaded = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    graph = Graph(loaded.manifest)
    router = InputRouter(loaded, graph, limits)

    def prepare(inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        return dict(router.resolve(inputs, graph.outputs).raw)

    return prepare


def read_samples(
    path: str | os.PathLike[str],
    bundle: str | os.PathLike[str] | Bundle,
    *,
    what: str = "samples",
    limit: int | None = None,
) -> list[dict[str, np.ndarray]]:
    """Each line of a ``.jsonl`` samples file (up to ``limit``) as the bundle's input tensors, batch axis 1.

    Blank lines are skipped. Raises :class:`~mmedge.errors.InputError` naming the file, the line and
    what is wrong with it.
    """
    path = Path(path)
    loaded = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    prepare = input_preparer(loaded)
    modalities = {i.name: i.modality for i in loaded.manifest.inputs}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{what} file {path} cannot be read ({e}); give a UTF-8 {SAMPLES_SUFFIX} file") from e
    samples = []
    for number, line in enumerate(lines, start=1):
        if limit is not None and len(samples) >= limit:
            break
        if not line.strip():
            continue
        where = f"{what} file {path}, line {number}"
        try:
            item = json.loads(line)
        except ValueError as e:
            raise InputError(f"{where} is not JSON ({e}); write one JSON object per line") from e
        if not isinstance(item, dict):
            raise InputError(f"{where} holds a {type(item).__name__}; write an object of input name → value")
        try:
            samples.append(prepare({k: _value(v, modalities.get(k), path.parent) for k, v in item.items()}))
        except InputError as e:
            raise InputError(f"{where}: {e}") from e
    if not samples:
        raise InputError(f"{what} file {path} holds no sample; write one JSON object per line")
    return samples


def _value(value: Any, modality: str | None, root: Path) -> Any:
    """A media file's path resolved against the samples file's folder; nested lists as an array."""
    if isinstance(value, str) and modality in _MEDIA:
        return str(root / value) if not Path(value).is_absolute() else value
    if isinstance(value, list):
        array = np.asarray(value)
        return array.astype(np.float32) if array.dtype == np.float64 else array
    return value
