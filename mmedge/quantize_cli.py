"""``mmedge quantize``: the quantize stage's command, with calibration and held-out data as raw files too.

mmedge quantize bundle/ --out bundle-int8/ --calibration calib.jsonl --holdout heldout.jsonl

A ``.jsonl`` samples file (:func:`mmedge.runtime.read_samples`: per line, input name → file path,
text or numbers) is preprocessed by the runtime exactly as the deployed bundle preprocesses the
same values, so the INT8 ranges are calibrated on what it will see. The stage itself takes tensors
only (``.npz`` folders, iterables of arrays): it does not import the runtime, so the files are read
here, in the command layer.
"""

from __future__ import annotations

import argparse

from mmedge.bundle import check_replaceable, load_bundle
from mmedge.quantize import cli as stage
from mmedge.runtime import SAMPLES_SUFFIX, read_samples

__all__ = ["configure", "run"]


def configure(parser: argparse.ArgumentParser) -> None:
    stage.configure(parser)


def run(args: argparse.Namespace) -> int:
    files = {k: v for k, v in (("calibration", args.calibration), ("holdout", args.holdout)) if _samples_file(v)}
    if not files:
        return stage.run(args)
    check_replaceable(args.out, force=args.force)  # before any data is read
    bundle = load_bundle(args.bundle)
    changed = dict(vars(args))
    if "calibration" in files:
        changed["calibration"] = read_samples(args.calibration, bundle, what="calibration", limit=args.samples)
    if "holdout" in files:
        changed["holdout"] = read_samples(args.holdout, bundle, what="held-out")
    return stage.run(argparse.Namespace(**changed))


def _samples_file(value: object) -> bool:
    return isinstance(value, str) and value.endswith(SAMPLES_SUFFIX)
