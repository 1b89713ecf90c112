"""The model tensors every variant of a benchmark runs on: identical arrays for all of them.

Synthetic inputs follow the manifest: each symbolic dim takes its ``example_shape`` size, the
batch dim the requested batch size; floats are standard normal, token ids uniform over the
vocabulary (seeded, so two runs see the same data). Given arrays (an ``.npz``, or a ``.jsonl`` of
the user's files and strings, preprocessed as the bundle will) are cycled along the batch axis to
reach each batch size. Inputs that count their own items (a CLIP-style bundle's label texts, on
``text_batch``) can take a count of their own at every batch size (:func:`item_counts`): one photo
scored against 20 labels is the shape such a model is deployed at.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmedge.bundle import Bundle, InputSpec, own_items
from mmedge.bundle.vocab import vocab_size
from mmedge.errors import InputError
from mmedge.runtime import SAMPLES_SUFFIX, read_samples

__all__ = ["BenchInputs", "bench_inputs", "item_counts", "items_by_input", "load_arrays", "load_npz", "save_npz"]

BenchInputs = Mapping[int, Mapping[str, np.ndarray]]  # batch size → input name → tensor
_FALLBACK_VOCAB = 2  # ids 0 and 1 exist in every vocabulary (pad, unk)


def item_counts(bundle: Bundle, items: Mapping[str, int]) -> dict[str, int]:
    """Batch symbol → items per call, from ``items`` keyed by modality or input name (``{"text": 20}``:
    every call scores 20 label texts, whatever the batch size).

    Only inputs on a modality's own batch symbol count their items apart (a bundle whose output scores
    every item of one modality against every item of another); elsewhere all inputs share the batch.
    """
    inputs = bundle.manifest.inputs
    counts: dict[str, int] = {}
    for key, count in items.items():
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise InputError(f"items {key}={count!r}: the count must be a positive integer")
        specs = [s for s in inputs if key in (s.name, s.modality) and s.shape]
        if not specs:
            raise InputError(
                f"items {key}: no input or modality of that name; inputs: "
                + ", ".join(f"{s.name} ({s.modality})" for s in inputs)
            )
        shared = [f"{s.name} {list(s.shape)}" for s in specs if not own_items(s)]
        if shared:
            raise InputError(
                f"items {key}: {', '.join(shared)} shares the batch with the other inputs, so it cannot take "
                "a count of its own; only a bundle whose output scores every item of one modality against every "
                "item of another (CLIP's logits_per_image, exported with a batch per modality) can; time other "
                "shapes with the batch sizes"
            )
        counts.update(dict.fromkeys((s.shape[0] for s in specs), count))
    return counts


def bench_inputs(
    bundle: Bundle,
    batch_sizes: Sequence[int],
    given: Mapping[str, Any] | str | os.PathLike[str] | None,
    seed: int,
    items: Mapping[str, int] | None = None,
) -> dict[int, dict[str, np.ndarray]]:
    """The tensors for each batch size: synthetic (``given=None``), or ``given`` arrays / ``.npz`` cycled.
    ``items`` (batch symbol → count, :func:`item_counts`) sizes the inputs on those symbols instead."""
    specs = bundle.manifest.inputs
    items = dict(items or {})
    if given is None:
        return {
            b: {s.name: _synthetic(bundle, s, _shape(s, b, items), seed, i) for i, s in enumerate(specs)}
            for b in batch_sizes
        }
    arrays = load_arrays(Path(given), bundle)[0] if isinstance(given, str | os.PathLike) else dict(given)
    missing = [s.name for s in specs if s.name not in arrays and s.default is None]
    unknown = [k for k in arrays if k not in {s.name for s in specs}]
    if missing or unknown:
        raise InputError(
            f"benchmark inputs must be model tensors keyed by input name ({', '.join(s.name for s in specs)}); "
            f"missing {missing}, unknown {unknown}"
        )
    tensors = {k: np.asarray(v) for k, v in arrays.items()}
    for name, t in tensors.items():
        if t.ndim == 0 or t.shape[0] == 0:
            raise InputError(f"benchmark input {name!r} has shape {list(t.shape)}; it needs a non-empty batch axis")
    own = items_by_input(bundle, items)
    return {b: {k: _cycle(t, own.get(k, b)) for k, t in tensors.items()} for b in batch_sizes}


def items_by_input(bundle: Bundle, items: Mapping[str, int]) -> dict[str, int]:
    """Input name → items per call, for the inputs on the batch symbols ``items`` counts."""
    return {s.name: items[s.shape[0]] for s in bundle.manifest.inputs if s.shape and s.shape[0] in items}


def _synthetic(bundle: Bundle, spec: InputSpec, shape: tuple[int, ...], seed: int, index: int) -> np.ndarray:
    rng = np.random.default_rng([seed, index])
    dtype = np.dtype(spec.dtype)
    if spec.default is not None:  # what the model is fed when the input is omitted (token_type_ids: 0)
        return np.full(shape, spec.default, dtype)
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind == "b":
        return rng.random(shape) < 0.5
    # Token ids must index the embedding table; the vocabulary says how big it is.
    high = (vocab_size(bundle, spec) if spec.modality == "text" else None) or _FALLBACK_VOCAB
    return rng.integers(0, high, shape).astype(dtype)


def _shape(spec: InputSpec, batch: int, items: Mapping[str, int]) -> tuple[int, ...]:
    if spec.shape and isinstance(spec.shape[0], int) and spec.shape[0] != batch:
        raise InputError(
            f"input {spec.name!r} has a fixed batch dim of {spec.shape[0]}, so it cannot be benchmarked at batch "
            f"{batch}; pass batch sizes of {spec.shape[0]} only"
        )
    shape = spec.sized_shape(batch, items)
    if shape is None:
        raise InputError(
            f"input {spec.name!r}: a symbolic dim is not batch and the bundle records no example_shape "
            "to size it; pass inputs (an .npz of model tensors, --inputs)"
        )
    return shape


def _cycle(tensor: np.ndarray, batch: int) -> np.ndarray:
    return np.ascontiguousarray(tensor[np.arange(batch) % tensor.shape[0]])


def load_arrays(path: Path, bundle: Bundle, *, mixed: str = "error") -> tuple[dict[str, np.ndarray], str]:
    """Samples along the first axis from an ``.npz`` of model tensors, or from a ``.jsonl`` samples file of
    raw files and strings preprocessed as the bundle will (:func:`mmedge.runtime.read_samples`), and what
    was done to them ("" or a note).

    Samples that differ in shape (sound files kept at their own lengths) cannot be one batch: with
    ``mixed="largest"`` the largest is taken (a latency budget's worst case), else an InputError says so.
    """
    if path.suffix != SAMPLES_SUFFIX:
        return load_npz(path), ""
    samples = read_samples(path, bundle, what="inputs")
    if len({tuple(s[name].shape for name in sorted(s)) for s in samples}) == 1:
        return {name: np.concatenate([s[name] for s in samples]) for name in samples[0]}, ""
    shapes = ", ".join(sorted({f"{name} {list(s[name].shape)}" for s in samples for name in s}))
    if mixed != "largest":
        raise InputError(
            f"inputs file {path}: its samples differ in shape after preprocessing ({shapes}), so they cannot be "
            "compared as one batch; give samples of one shape (sound files of one duration)"
        )
    index = max(range(len(samples)), key=lambda i: sum(a.size for a in samples[i].values()))
    return dict(samples[index]), f"the largest of {len(samples)} samples of different shapes (line {index + 1})"


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """Arrays of an ``.npz`` file, with a clear error if it is missing or not an npz."""
    if not path.is_file():
        raise InputError(f"inputs file {path} does not exist; pass an .npz of model tensors keyed by input name")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError) as e:
        raise InputError(f"{path} is not a readable .npz file ({e}); save inputs with numpy.savez") from e


def save_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> Path:
    np.savez(path, **arrays)
    return path
