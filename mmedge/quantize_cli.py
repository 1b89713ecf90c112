"""``mmedge quantize``: the quantize stage's command, with calibration and held-out data as raw files too.

mmedge quantize bundle/ --out bundle-int8/ --calibration calib.jsonl --holdout heldout.jsonl

A ``.jsonl`` file holds one sample per line, a JSON object of input name → value, as
``mmedge run -i`` and ``Pipeline.run`` take them: an image or sound file's path (relative to the
JSONL file's folder), a text string, or nested lists of numbers. Each line is preprocessed by the
runtime (:func:`mmedge.runtime.input_preparer`), exactly as the deployed bundle preprocesses the
same values, so the INT8 ranges are calibrated on what it will see. The stage itself takes tensors
only (``.npz`` folders, iterables of arrays): it does not import the runtime, so the files are read
here, in the command layer.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mmedge.bundle import check_replaceable, load_bundle
from mmedge.errors import InputError, QuantizationError
from mmedge.quantize import cli as stage

__all__ = ["JSONL", "configure", "read_jsonl", "run"]

JSONL = ".jsonl"
_MEDIA = ("image", "audio")


def configure(parser: argparse.ArgumentParser) -> None:
    stage.configure(parser)


def run(args: argparse.Namespace) -> int:
    given = [p for p in (args.calibration, args.holdout) if isinstance(p, str) and p.endswith(JSONL)]
    if not given:
        return stage.run(args)
    check_replaceable(args.out, force=args.force)  # before any data is read
    from mmedge.runtime import input_preparer

    bundle = load_bundle(args.bundle)
    prepare = input_preparer(bundle)
    modalities = {i.name: i.modality for i in bundle.manifest.inputs}
    changed = dict(vars(args))
    if args.calibration.endswith(JSONL):
        changed["calibration"] = read_jsonl(Path(args.calibration), prepare, modalities, "calibration", args.samples)
    if isinstance(args.holdout, str) and args.holdout.endswith(JSONL):
        changed["holdout"] = read_jsonl(Path(args.holdout), prepare, modalities, "held-out", None)
    return stage.run(argparse.Namespace(**changed))


def read_jsonl(
    path: Path,
    prepare: Callable[[Mapping[str, Any]], dict[str, np.ndarray]],
    modalities: Mapping[str, str],
    what: str,
    limit: int | None,
) -> list[dict[str, np.ndarray]]:
    """Each line of ``path`` (up to ``limit`` samples) as the bundle's input tensors; blank lines are skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise QuantizationError(f"{what} file {path} cannot be read ({e}); give a UTF-8 .jsonl file") from e
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
            raise QuantizationError(f"{where} is not JSON ({e}); write one JSON object per line") from e
        if not isinstance(item, dict):
            raise QuantizationError(f"{where} holds a {type(item).__name__}; write an object of input name → value")
        try:
            samples.append(prepare({k: _value(v, modalities.get(k), path.parent) for k, v in item.items()}))
        except InputError as e:
            raise QuantizationError(f"{where}: {e}") from e
    if not samples:
        raise QuantizationError(f"{what} file {path} holds no sample; write one JSON object per line")
    return samples


def _value(value: Any, modality: str | None, root: Path) -> Any:
    """A media file's path resolved against the JSONL file's folder; nested lists as an array."""
    if isinstance(value, str) and modality in _MEDIA:
        return str(root / value) if not Path(value).is_absolute() else value
    if isinstance(value, list):
        array = np.asarray(value)
        return array.astype(np.float32) if array.dtype == np.float64 else array
    return value
