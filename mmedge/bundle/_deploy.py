"""What a deploy bundle (INT8, mobile) carries, and the size it has on disk.

An FP32 bundle may carry its whole model as one more graph (the ``monolithic`` asset,
``model.onnx``): the benchmark's baseline, never run by the Pipeline. A bundle made for devices
carries only what inference needs, so the stages that derive one (quantize, mobile) leave out
the monolithic graph, its external weights, and the external weights of components whose new
graph no longer reads them (an ``.ort`` file holds its own weights). ``mmedge bench`` finds the
monolithic baseline in the FP32 bundle given with ``--compare``.

Sizes quoted in reports are what is on disk: the sum of every file of the written bundle,
report and manifest included. Those two files state the size themselves, so
:func:`write_sized` rewrites them until the size they state is the size they make.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath

from mmedge.bundle._types import MANIFEST_NAME, Asset, Bundle
from mmedge.errors import BundleError

__all__ = ["MONOLITHIC_ASSET", "deploy_assets", "deploy_bytes", "directory_bytes", "write_sized"]

MONOLITHIC_ASSET = "monolithic"  # the asset name mmedge.export gives the whole-model ONNX (model.onnx)
_SIZE_TRIES = 8


def deploy_assets(bundle: Bundle, graphs: Mapping[str, Path] | None = None) -> tuple[Asset, ...]:
    """The assets of ``bundle`` a bundle derived from it needs: all but the monolithic graph and
    external weights no graph of the new bundle reads.

    ``graphs``: the new bundle's ONNX files by their path inside it (their external-data
    locations are read, relative to that path); ``None``: the source's own components.
    """
    m = bundle.manifest
    if graphs is None:
        graphs = {c.file: bundle.path / c.file for c in m.components if c.format == "onnx"}
    weights = {f for c in m.components if c.format == "onnx" for f in _component_weights(bundle, c.name)}
    monolith = next((a for a in m.assets if a.name == MONOLITHIC_ASSET), None)
    if monolith is not None:
        weights |= _external_files(monolith.file, bundle.path / monolith.file)
    needed = {f for rel, path in graphs.items() for f in _external_files(rel, path)}
    return tuple(a for a in m.assets if a is not monolith and (a.file not in weights or a.file in needed))


def deploy_bytes(bundle: Bundle) -> int:
    """Bytes on disk of what inference on ``bundle`` reads: manifest, components, their weights and
    the other assets (not a monolithic baseline graph)."""
    m = bundle.manifest
    files = {MANIFEST_NAME, *(c.file for c in m.components), *(a.file for a in deploy_assets(bundle))}
    return sum((bundle.path / f).stat().st_size for f in files)


def directory_bytes(directory: str | os.PathLike[str]) -> int:
    """The sum of the sizes of every plain file under ``directory`` (links not followed)."""
    total = 0
    for folder, _, names in os.walk(directory):
        for name in names:
            path = Path(folder) / name
            if path.is_file() and not path.is_symlink():
                total += path.stat().st_size
    return total


def write_sized(directory: str | os.PathLike[str], write: Callable[[int], object]) -> int:
    """Call ``write(size)`` (it writes the files that state the bundle's size, e.g. report and
    manifest) until ``size`` is what the files under ``directory`` then sum to; that size."""
    size = directory_bytes(directory)
    for _ in range(_SIZE_TRIES):
        write(size)
        found = directory_bytes(directory)
        if found == size:
            return size
        size = found
    raise BundleError(
        f"the size of {directory} does not settle: each report stating it changes it ({size} bytes last); "
        "report this as a bug"
    )


def _component_weights(bundle: Bundle, name: str) -> set[str]:
    if bundle.external_data is not None:
        return set(bundle.external_data.get(name, ()))
    c = bundle.manifest.component(name)
    return _external_files(c.file, bundle.path / c.file)


def _external_files(rel: str, path: Path) -> set[str]:
    """The files (relative to the bundle, '/'-separated) ``path``'s external data lives in."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # a graph the loader already checked; a monolith it did not
        raise BundleError(f"{path} is not a readable ONNX file ({e}); re-export the bundle") from e
    base = PurePosixPath(rel).parent
    found = set()
    for tensor in _initializers(model.graph):
        if uses_external_data(tensor):
            location = next((e.value for e in tensor.external_data if e.key == "location"), "")
            found.add((base / location).as_posix())
    return found


def _initializers(graph: object) -> list:
    """Every initializer of ``graph`` and of its subgraphs (If/Loop/Scan bodies)."""
    import onnx

    found = list(graph.initializer)
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                found += _initializers(attribute.g)
            elif attribute.type == onnx.AttributeProto.GRAPHS:
                for sub in attribute.graphs:
                    found += _initializers(sub)
    return found
