"""Whether a bundle's files are what its manifest says: confined to the bundle, plain files, hashed,
ONNX graphs with the declared IO, and external weights only in hashed assets of the bundle.

mmedge checks external-data locations itself (not only onnxruntime, whose own check exists since
1.24) so that a hostile ``location`` is refused before onnxruntime reads a byte.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from mmedge.bundle._hashing import sha256_file
from mmedge.bundle._types import Bundle, Component, Manifest, TensorSpec
from mmedge.errors import BundleError

__all__ = ["check_io", "component_problems", "file_problems", "files", "verify_component_file"]


def files(m: Manifest) -> list[tuple[str, str, str]]:
    """(what, relative path, sha256) of every file the manifest lists: components, then assets."""
    return [(f"component {c.name!r}", c.file, c.sha256) for c in m.components] + [
        (f"asset {a.name!r}", a.file, a.sha256) for a in m.assets
    ]


def file_problems(root: Path, what: str, rel: str, digest: str | None) -> list[str]:
    """Why file ``rel`` of the bundle at ``root`` is unusable: outside it, a link, missing, or (when
    ``digest`` is given) changed; [] if none of these."""
    p = Path(rel)
    if not rel or p.is_absolute() or ".." in p.parts or rel.startswith(("/", "\\")):
        return [f"{what}: path {rel!r} leaves the bundle directory; paths must be relative and inside it"]
    full = root / p
    if full.is_symlink():
        return [f"{what}: {rel} is a symlink; bundles must contain plain files (copy the file in)"]
    try:
        full.resolve().relative_to(root.resolve())
    except ValueError:
        return [f"{what}: path {rel!r} leaves the bundle directory (through a linked folder)"]
    if not full.is_file():
        return [f"{what}: file {rel} is missing; copy the whole bundle directory or re-export it"]
    if digest is not None and sha256_file(full) != digest:
        return [
            f"{what}: {rel} does not match its sha256 in the manifest; the file was modified or "
            "corrupted. Re-export or re-copy the bundle."
        ]
    return []


_ONNX_DTYPES = {
    1: "float32",
    10: "float16",
    11: "float64",
    7: "int64",
    6: "int32",
    5: "int16",
    3: "int8",
    2: "uint8",
    9: "bool",
}


def component_problems(root: Path, manifest: Manifest, component: Component) -> tuple[list[str], tuple[str, ...]]:
    """Problems of one ONNX component's graph (IO against the manifest, external data), and the
    asset files its external data lives in. Reads the graph without its external data."""
    import onnx

    try:
        model = onnx.load(str(root / component.file), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - any parse failure means the file is not usable ONNX
        return [f"component {component.name!r}: {component.file} is not a readable ONNX file ({e})"], ()
    problems, used = _external_data(model, manifest, component)
    graph = model.graph
    initializers = {i.name for i in graph.initializer}

    def specs(values: Sequence[Any]) -> list[TensorSpec]:
        out = []
        for v in values:
            if v.name in initializers:
                continue
            t = v.type.tensor_type
            dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim)
            out.append(TensorSpec(v.name, _ONNX_DTYPES.get(t.elem_type, f"onnx:{t.elem_type}"), dims))
        return out

    return problems + check_io(component, specs(graph.input), specs(graph.output)), used


def _external_data(model: Any, manifest: Manifest, component: Component) -> tuple[list[str], tuple[str, ...]]:
    """Problems of every external-data ``location`` in ``model``, and the asset files they name.

    A location must be relative, without ``..``, and (resolved beside the component's file, as
    onnxruntime does) the file of a hashed asset of the manifest; asset files are confined to the
    bundle, plain and hashed by the file checks that run first.
    """
    from onnx.external_data_helper import uses_external_data

    assets = {a.file: a for a in manifest.assets}
    folder = PurePosixPath(component.file).parent
    where = f"component {component.name!r}"
    problems: dict[str, None] = {}  # ordered, each problem once however many tensors share it
    used: dict[str, None] = {}
    for tensor in _tensors(model):
        if not uses_external_data(tensor):
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        posix, windows = PurePosixPath(location), PureWindowsPath(location)
        if not location or posix.is_absolute() or windows.is_absolute() or windows.drive or windows.root:
            problems[
                f"{where}: external data location {location!r} of tensor {tensor.name!r} is not a relative path inside the bundle"
            ] = None
            continue
        if ".." in posix.parts or ".." in windows.parts:
            problems[
                f"{where}: external data location {location!r} of tensor {tensor.name!r} leaves the bundle directory ('..')"
            ] = None
            continue
        rel = (folder / posix).as_posix()
        asset = assets.get(rel)
        if asset is None or not asset.sha256:
            problems[
                f"{where}: external data file {rel!r} (tensor {tensor.name!r}) is not a hashed asset of the manifest; "
                "external weights must be listed under assets (re-export the bundle)"
            ] = None
            continue
        used[rel] = None
    return list(problems), tuple(used)


def _tensors(model: Any) -> Iterator[Any]:
    """Every TensorProto of a model: initializers, sparse ones, node attributes, subgraphs, functions."""
    graphs = [model.graph]
    nodes = [n for f in model.functions for n in f.node]
    while graphs or nodes:
        if graphs:
            graph = graphs.pop()
            yield from graph.initializer
            for sparse in graph.sparse_initializer:
                yield from (sparse.values, sparse.indices)
            nodes.extend(graph.node)
            continue
        for attribute in nodes.pop().attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("sparse_tensor"):
                yield from (attribute.sparse_tensor.values, attribute.sparse_tensor.indices)
            for sparse in attribute.sparse_tensors:
                yield from (sparse.values, sparse.indices)
            if attribute.HasField("g"):
                graphs.append(attribute.g)
            graphs.extend(attribute.graphs)


def verify_component_file(bundle: Bundle, name: str) -> Path:
    """Check component ``name``'s file again just before a session opens it, and return its path.

    A lazy :class:`~mmedge.runtime.Pipeline` opens a component long after :func:`load_bundle`
    checked it; the file (or its external weights) may have changed since. This repeats the file
    checks, with sha256 unless the bundle was loaded with ``check_hashes=False``, and for an ONNX
    file the external-data checks. Raises :class:`BundleError` before onnxruntime reads a byte.
    """
    manifest = bundle.manifest
    component = manifest.component(name)
    digest = (lambda entry: entry.sha256) if bundle.check_hashes else (lambda _entry: None)
    problems = file_problems(bundle.path, f"component {name!r}", component.file, digest(component))
    if not problems and component.format == "onnx":
        used = (bundle.external_data or {}).get(name)
        if used is None or not bundle.check_hashes:  # not scanned at load, or the file may have changed since
            problems, used = component_problems(bundle.path, manifest, component)
        by_file = {a.file: a for a in manifest.assets}
        for rel in used:
            asset = by_file[rel]
            problems += file_problems(bundle.path, f"asset {asset.name!r}", rel, digest(asset))
    if problems:
        raise BundleError(
            f"bundle {bundle.path}: component {name!r} changed since the bundle was loaded:\n  - "
            + "\n  - ".join(problems)
        )
    return bundle.path / component.file


def check_io(component: Component, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> list[str]:
    """Differences between a component's declared IO and what its graph or session really has.

    Shared by bundle loading (ONNX graphs) and the runtime (ORT sessions, including .ort files).
    A dim the manifest declares symbolic but the graph fixes is reported: it means a stage lost
    a dynamic axis.
    """
    problems: list[str] = []
    for kind, declared, actual in (("input", component.inputs, inputs), ("output", component.outputs, outputs)):
        found = {t.name: t for t in actual}
        if [t.name for t in declared] != [t.name for t in actual]:
            problems.append(
                f"component {component.name!r}: graph {kind}s are {[t.name for t in actual]}, "
                f"manifest declares {[t.name for t in declared]}"
            )
        for t in declared:
            a = found.get(t.name)
            if a is None:
                continue
            if a.dtype != t.dtype:
                problems.append(
                    f"component {component.name!r}: {kind} {t.name!r} is {a.dtype} in the graph, manifest says {t.dtype}"
                )
            if len(a.shape) != len(t.shape):
                problems.append(
                    f"component {component.name!r}: {kind} {t.name!r} has rank {len(a.shape)} in the graph, manifest says {len(t.shape)}"
                )
                continue
            for axis, (want, got) in enumerate(zip(t.shape, a.shape, strict=True)):
                if isinstance(want, int) and isinstance(got, int) and want != got:
                    problems.append(
                        f"component {component.name!r}: {kind} {t.name!r} dim {axis} is {got}, manifest says {want}"
                    )
                elif isinstance(want, str) and isinstance(got, int):
                    problems.append(
                        f"component {component.name!r}: {kind} {t.name!r} dim {axis} ({want!r}) is declared "
                        f"dynamic but the graph fixes it to {got}; a stage lost the dynamic axis"
                    )
    return problems
