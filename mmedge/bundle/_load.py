"""Reading a bundle: the manifest, then every check of :mod:`._integrity`, before any session exists."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from mmedge.bundle._integrity import component_problems, file_problems, files
from mmedge.bundle._parse import manifest_from_dict
from mmedge.bundle._types import MANIFEST_NAME, MAX_MANIFEST_BYTES, Bundle
from mmedge.errors import BundleError
from mmedge.heap import release_free_memory

__all__ = ["load_bundle", "read_manifest_data"]


def load_bundle(path: str | os.PathLike[str], *, check_hashes: bool = True) -> Bundle:
    """Read and validate a bundle directory.

    Checks the format version, the manifest's consistency (unique names, one edge per input, no
    cycles), that every file is present, confined to the bundle and not a symlink, that sha256
    hashes match (unless ``check_hashes=False``), that external weights live only in hashed
    assets, and that each ONNX graph's inputs and outputs match the manifest. Linear in the
    manifest's size. Raises :class:`BundleError` naming the file and the fix.
    """
    root = Path(path)
    if not root.is_dir():
        raise BundleError(f"bundle directory {root} does not exist; pass the folder `mmedge export` wrote")
    manifest = manifest_from_dict(read_manifest_data(root))
    problems: list[str] = []
    for name, rel, digest in files(manifest):
        problems += file_problems(root, name, rel, digest if check_hashes else None)
    external: dict[str, tuple[str, ...]] = {}
    if not problems:
        for c in manifest.components:
            if c.format == "onnx":
                found, external[c.name] = component_problems(root, manifest, c)
                problems += found
        release_free_memory()  # the graphs just parsed, weights and all, would stay in the heap
    if problems:
        raise BundleError(f"bundle {root} failed validation:\n  - " + "\n  - ".join(problems))
    return Bundle(path=root, manifest=manifest, check_hashes=check_hashes, external_data=external)


def read_manifest_data(root: Path) -> Any:
    """The parsed JSON of ``root``'s manifest: a plain file, of bounded size, valid JSON."""
    manifest_path = root / MANIFEST_NAME
    if not manifest_path.is_file():
        raise BundleError(f"{root} has no {MANIFEST_NAME}; it is not an mmedge bundle (run `mmedge export`)")
    if manifest_path.is_symlink():
        raise BundleError(f"{manifest_path} is a symlink; bundles must contain plain files")
    size = manifest_path.stat().st_size
    if size > MAX_MANIFEST_BYTES:
        raise BundleError(f"{manifest_path} is {size} bytes, over the {MAX_MANIFEST_BYTES}-byte limit")
    try:
        return json.loads(manifest_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:  # ValueError: bad JSON, 5000-digit numbers
        raise BundleError(f"{manifest_path} is not valid JSON ({type(e).__name__}: {e}); re-export the bundle") from e
