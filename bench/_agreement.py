"""How closely each variant's outputs follow PyTorch FP32 on the same generated samples.

Speed alone misleads: a peer whose default INT8 quantizes an audio model's log-mel front-end is
fast and has lost the audio modality. So every variant (mmedge's bundles, the monolithic graph,
each peer) runs the same ``N`` samples one at a time at batch 1 (as one batch where an output
pairs every row with every other, a CLIP similarity matrix: each row's top-1 then ranks all the
samples' texts), in its own worker, and its outputs are scored against the PyTorch eager
variant's: logits and scores by top-1 agreement, anything else (embeddings) by cosine similarity
per sample. Outputs are matched by position, in the order of the bundle's manifest outputs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmedge.bench._types import Agreement
from mmedge.bundle import RANKED_KINDS, OutputSpec
from mmedge.errors import MMEdgeError
from mmedge.verify import top1_matches

__all__ = ["agreement", "measure_agreement", "run_samples", "samples_of", "score_output"]

_EPS = 1e-12


def score_output(name: str, kind: str, reference: np.ndarray, candidate: np.ndarray) -> Agreement:
    """One output's agreement: ``reference`` and ``candidate`` are ``[N, ...]``, one row per sample."""
    if reference.shape != candidate.shape:
        raise MMEdgeError(
            f"output {name!r}: PyTorch gave shape {list(reference.shape)} but the variant {list(candidate.shape)}; "
            "a variant must compute the same outputs, in the manifest's order"
        )
    n = reference.shape[0]
    ref = reference.reshape(n, -1).astype(np.float64)
    got = candidate.reshape(n, -1).astype(np.float64)
    if kind in RANKED_KINDS and ref.shape[1] > 1:
        same = float(np.mean(top1_matches(ref, got)))
        return Agreement(output=name, metric="top1", value=same, worst=same, samples=n)
    dot = np.sum(ref * got, axis=1)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1)
    cosine = np.where(norms > _EPS, dot / np.maximum(norms, _EPS), 1.0)  # two zero vectors agree
    return Agreement(output=name, metric="cosine", value=float(cosine.mean()), worst=float(cosine.min()), samples=n)


def agreement(
    outputs: Sequence[OutputSpec], reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray]
) -> tuple[Agreement, ...]:
    """Every manifest output scored; ``reference``/``candidate`` map output position ("0", "1", ...) to arrays."""
    if len(candidate) != len(reference):
        raise MMEdgeError(f"the variant gave {len(candidate)} outputs, PyTorch {len(reference)}")
    return tuple(
        score_output(spec.name, spec.kind, reference[str(i)], candidate[str(i)])
        for i, spec in enumerate(outputs[: len(reference)])
    )


def samples_of(arrays: Mapping[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    """``[N, ...]`` arrays by input name → N feed dicts of batch 1."""
    counts = {a.shape[0] for a in arrays.values()}
    if len(counts) != 1:
        raise MMEdgeError(f"samples must share their first (sample) axis, found lengths {sorted(counts)}")
    n = counts.pop()
    return [{k: np.ascontiguousarray(v[i : i + 1]) for k, v in arrays.items()} for i in range(n)]


def run_samples(
    run: Callable[[Mapping[str, np.ndarray]], Sequence[np.ndarray]], samples: Path, out: Path, together: bool = False
) -> dict[str, str]:
    """In a worker: run every sample at batch 1 (``together``: all as one batch), save the stacked outputs
    to ``out`` (``.npz``)."""
    with np.load(samples, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    feeds = [arrays] if together else samples_of(arrays)
    rows = [[np.asarray(o) for o in run(f)] for f in feeds]
    stacked = {str(i): np.concatenate([r[i] for r in rows]) for i in range(len(rows[0]))} if rows else {}
    np.savez(out, **stacked)
    return {"outputs": str(out)}


def measure_agreement(
    workers: Sequence[Any],
    reference: str,
    samples: Path,
    scratch: Path,
    outputs: Sequence[OutputSpec],
    *,
    together: bool = False,
) -> tuple[dict[str, tuple[Agreement, ...]], dict[str, str]]:
    """Every worker runs ``samples`` (``together``: as one batch, for outputs whose rows pair with one
    another); each is scored against ``reference``'s outputs.

    Returns the agreements by variant and, for variants whose outputs could not be scored, why.
    """
    found: dict[str, dict[str, np.ndarray]] = {}
    failed: dict[str, str] = {}
    for i, w in enumerate(workers):
        out = scratch / f"outputs-{i}.npz"
        try:
            w.request({"cmd": "outputs", "samples": str(samples), "out": str(out), "together": together})
        except MMEdgeError as e:
            failed[w.name] = f"agreement not measured: {e}"
            continue
        with np.load(out, allow_pickle=False) as data:
            found[w.name] = {k: data[k] for k in data.files}
    if reference not in found:
        return {}, failed | {reference: failed.get(reference, "agreement not measured: no reference outputs")}
    scores = {}
    for name, arrays in found.items():
        if name == reference:
            continue
        try:
            scores[name] = agreement(outputs, found[reference], arrays)
        except MMEdgeError as e:
            failed[name] = f"agreement not measured: {e}"
    return scores, failed
