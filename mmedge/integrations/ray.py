"""Batch inference over a Ray Dataset: ``Dataset.map_batches`` with one Pipeline per actor.

::

    import ray
    from mmedge.integrations.ray import predict_dataset

    ds = ray.data.read_parquet("s3://bucket/captions/")          # columns: id, caption, image_path
    out = predict_dataset(ds, "bundle-int8/", columns={"text": "caption", "image": "image_path"},
                          actors=8, cpus_per_actor=2, batch_size=64)
    out.write_parquet("s3://bucket/predictions/")                 # input columns + "logits"

Each actor loads the bundle once and runs every batch it receives through ``Pipeline.run`` (or
``Pipeline.encode`` with ``encode=``). A column becomes an input the way ``Pipeline.run`` reads a
numpy array: a column that already has the model tensor's rank and dtype is the tensor; any
other column (strings, file paths, ``read_images``' uint8 HWC pixels, variable-length waveforms)
is a list of raw items, preprocessed per row as the manifest says. Outputs are added as columns
(``output_prefix`` avoids clashes); results equal ``Pipeline.run`` on the same rows.

Multi-node clusters
-------------------
* Install the same mmedge (with onnxruntime, and Pillow/soundfile for file inputs) on every node,
  e.g. through the cluster image or ``runtime_env={"pip": ["mmedge[files]"]}``; torch is not needed.
* The bundle must be readable by every actor. Either put it on storage all nodes mount (NFS, a
  FUSE-mounted bucket) and pass that path, or pass ``ship_bundle=True``: the driver reads the bundle
  once into Ray's object store, each actor writes it to a local temp dir, and ``Pipeline`` checks
  every sha256 there, so a corrupt copy fails loudly.
* File-path columns must also be readable from every node (shared storage), or read the files
  with Ray first (``ray.data.read_images``) and pass the pixel column.
* Size actors to nodes: ``cpus_per_actor`` is reserved per actor and is also the onnxruntime thread
  count, so actors do not oversubscribe a node; ``actors`` is the pool size (one Pipeline each).
  For GPUs pass ``providers="cuda"`` and ``num_gpus=1`` (forwarded to ``map_batches``).
* Start the cluster as usual (``ray start --head`` / ``ray start --address=HEAD:6379``, or KubeRay)
  and call ``ray.init(address="auto")`` in the driver before ``predict_dataset``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mmedge.bundle import MANIFEST_NAME, load_bundle
from mmedge.errors import BundleError, InputError
from mmedge.graph import Graph

__all__ = ["BundlePredictor", "predict_dataset", "read_bundle_files"]


def read_bundle_files(bundle: str | os.PathLike[str]) -> dict[str, bytes]:
    """Every file of a bundle (manifest, components, assets) by relative path, after validating it."""
    loaded = load_bundle(bundle)
    names = [MANIFEST_NAME] + [c.file for c in loaded.manifest.components] + [a.file for a in loaded.manifest.assets]
    return {name: (loaded.path / name).read_bytes() for name in names}


class BundlePredictor:
    """A ``map_batches`` callable class: one Pipeline per actor, numpy batches in and out.

    Args:
        bundle: a bundle directory every actor can read, or the dict :func:`read_bundle_files`
            returns (or an ObjectRef to it) to materialize a private copy on the actor.
        columns: input name (or modality) → column; inputs not listed read the column of their name.
        encode: run only this encoder (modality, input or component name) instead of the model.
        providers, threads: passed to ``Pipeline``.
        output_prefix: prepended to output column names.
        keep_columns: also return the batch's input columns (ids, paths) next to the outputs.
    """

    def __init__(
        self,
        bundle: str | os.PathLike[str] | Mapping[str, bytes] | Any,
        *,
        columns: Mapping[str, str] | None = None,
        encode: str | None = None,
        providers: str | list = "cpu",
        threads: int = 1,
        output_prefix: str = "",
        keep_columns: bool = True,
    ) -> None:
        from mmedge.runtime import Pipeline

        self._tempdir = None
        path = bundle
        if not isinstance(bundle, str | os.PathLike):
            path = self._materialize(bundle)
        self.pipeline = Pipeline(path, providers, threads=threads)
        manifest = self.pipeline.manifest
        self.columns = {manifest.input(_input_name(manifest, k)).name: v for k, v in (columns or {}).items()}
        self.encode = encode
        self._accepted = {i.name for i in manifest.inputs} if encode is None else _encoder_inputs(manifest, encode)
        self.output_prefix = output_prefix
        self.keep_columns = keep_columns

    def _materialize(self, files: Any) -> Path:
        if not isinstance(files, Mapping):
            import ray

            files = ray.get(files)
        self._tempdir = tempfile.TemporaryDirectory(prefix="mmedge-bundle-")  # removed with the actor
        root = Path(self._tempdir.name)
        for name, data in files.items():
            target = (root / name).resolve()
            if root.resolve() not in target.parents:
                raise BundleError(f"shipped bundle file {name!r} would land outside the bundle directory")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        return root

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        inputs = self._inputs(batch)
        outputs = self.pipeline.run(inputs) if self.encode is None else self.pipeline.encode(self.encode, inputs)
        result = dict(batch) if self.keep_columns else {}
        for name, value in outputs.items():
            column = self.output_prefix + name
            if column in result:
                raise InputError(
                    f"output {name!r} would overwrite the input column {column!r}; pass output_prefix= "
                    "or keep_columns=False"
                )
            result[column] = value
        return result

    def _inputs(self, batch: Mapping[str, np.ndarray]) -> dict[str, Any]:
        """Input name → value for the inputs whose column is in the batch (Pipeline reports the rest)."""
        specs = {s.name: s for s in self.pipeline.manifest.inputs if s.name in self._accepted}
        column = {name: self.columns.get(name, name) for name in specs}
        absent = [f"{n!r} → {c!r}" for n, c in column.items() if n in self.columns and c not in batch]
        present = {n: c for n, c in column.items() if c in batch}
        if absent or not present:
            problem = (
                f"mapped columns are missing: {', '.join(absent)}" if absent else "no column is named after an input"
            )
            raise InputError(
                f"the batch has columns {sorted(batch)}; {problem}. The inputs are {list(specs)}; map them to "
                "columns with columns={input: column}"
            )
        return {n: _column_value(batch[c], specs[n].dtype, len(specs[n].shape)) for n, c in present.items()}


def _input_name(manifest: Any, key: str) -> str:
    names = [i.name for i in manifest.inputs]
    if key in names:
        return key
    same = [i.name for i in manifest.inputs if i.modality == key]
    if len(same) == 1:
        return same[0]
    raise InputError(f"columns= names unknown input {key!r}; the bundle takes {names}")


def _encoder_inputs(manifest: Any, name: str) -> set[str]:
    """The raw inputs of the encoder ``encode=name`` names (a modality, input or component)."""
    graph = Graph(manifest)
    return set(graph.raw_inputs([graph.encoder_for(name)]))


def _column_value(column: np.ndarray, dtype: str, rank: int) -> Any:
    """The model tensor if the column already is one, else the rows as raw items."""
    if isinstance(column, np.ndarray) and column.dtype == np.dtype(dtype) and column.ndim == rank:
        return column
    return [_item(row) for row in column]


def _item(row: Any) -> Any:
    if isinstance(row, np.str_ | np.bytes_):
        return row.item()
    if isinstance(row, np.ndarray) and row.dtype.kind in "US":
        return row.tolist()
    return row


def predict_dataset(
    dataset: Any,
    bundle: str | os.PathLike[str],
    *,
    columns: Mapping[str, str] | None = None,
    encode: str | None = None,
    batch_size: int = 32,
    actors: int = 1,
    cpus_per_actor: int = 1,
    providers: str | list = "cpu",
    output_prefix: str = "",
    keep_columns: bool = True,
    ship_bundle: bool = False,
    **map_batches_args: Any,
) -> Any:
    """``dataset`` with the model's outputs as new columns, computed by a pool of ``actors``.

    Lazy like every Ray Dataset transformation: nothing runs until the result is consumed.
    ``map_batches_args`` (``num_gpus=``, ``memory=``, ...) go to ``Dataset.map_batches``.
    """
    import ray

    if actors < 1 or cpus_per_actor < 1 or batch_size < 1:
        raise ValueError("actors, cpus_per_actor and batch_size must be at least 1")
    source: Any = str(bundle)
    if ship_bundle:
        source = ray.put(read_bundle_files(bundle))
    else:
        load_bundle(bundle)  # fail in the driver, not in every actor
    return dataset.map_batches(
        BundlePredictor,
        fn_constructor_kwargs={
            "bundle": source,
            "columns": dict(columns or {}),
            "encode": encode,
            "providers": providers,
            "threads": cpus_per_actor,
            "output_prefix": output_prefix,
            "keep_columns": keep_columns,
        },
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=cpus_per_actor,
        **map_batches_args,
    )
