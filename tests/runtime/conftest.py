"""Fixtures of the runtime tests: a CPU pipeline on the tiny bundle, and edited copies of it."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from mmedge.bundle import Manifest, load_bundle, staged_bundle, write_manifest
from mmedge.runtime import Pipeline


@pytest.fixture
def pipe(tiny_bundle: Path) -> Iterator[Pipeline]:
    with Pipeline(tiny_bundle, "cpu", threads=1) as p:
        yield p


@pytest.fixture
def edited_bundle(tiny_bundle: Path, tmp_path: Path) -> Callable[..., Path]:
    """A copy of the tiny bundle with an edited manifest.

    ``edited_bundle(edit=fn)`` passes the manifest through ``fn``; ``edited_bundle("audio",
    default=0.0)`` changes one input's spec; ``files`` are extra files to write into it.
    """

    def make(
        name: str | None = None,
        *,
        edit: Callable[[Manifest], Manifest] | None = None,
        files: dict[str, bytes] | None = None,
        **changes: object,
    ) -> Path:
        manifest = load_bundle(tiny_bundle).manifest
        if name is not None:
            inputs = tuple(dataclasses.replace(i, **changes) if i.name == name else i for i in manifest.inputs)
            manifest = dataclasses.replace(manifest, inputs=inputs)
        if edit is not None:
            manifest = edit(manifest)
        out = tmp_path / f"edited-{len(list(tmp_path.glob('edited-*')))}"
        with staged_bundle(out) as stage:
            for f in [c.file for c in manifest.components] + [a.file for a in manifest.assets]:
                if (tiny_bundle / f).is_file():
                    shutil.copy(tiny_bundle / f, stage / f)
            listed = {a.file for a in manifest.assets}
            for f, data in (files or {}).items():
                if f in listed:
                    (stage / f).write_bytes(data)
            write_manifest(stage, manifest)
        for f, data in (files or {}).items():  # stray files: a published bundle never holds them, so add them after
            if f not in listed:
                (out / f).write_bytes(data)
        return out

    return make


@pytest.fixture
def by_hand(tiny_bundle: Path) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
    """The tiny model's logits computed with plain onnxruntime sessions, one file at a time."""

    def logits(tensors: dict[str, np.ndarray]) -> np.ndarray:
        features = {}
        for m in ("text", "image", "audio"):
            s = ort.InferenceSession(str(tiny_bundle / f"{m}_encoder.onnx"), providers=["CPUExecutionProvider"])
            features[f"{m}_features"] = s.run(None, {m: tensors[m]})[0]
        head = ort.InferenceSession(str(tiny_bundle / "fusion_head.onnx"), providers=["CPUExecutionProvider"])
        return head.run(None, features)[0]

    return logits
