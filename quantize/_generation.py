"""End-to-end agreement of a generative bundle: greedy captions of a version against FP32's.

A decoder is fed by the generation loop, not the wiring, so its output cannot be scored like
other outputs (run on the held-out samples, compare one tensor). Instead each held-out sample
is captioned twice with the runtime's own greedy search (:mod:`mmedge.decoding`): by the FP32
components and by the version under test. The agreement is the fraction of captions that are
identical token for token; the tensor comparison is of the captions' log-probabilities, which
shows how far quantization moved the decoder even where the words did not change.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from mmedge.bundle import Manifest, OutputSpec
from mmedge.decoding import generate
from mmedge.errors import QuantizationError
from mmedge.quantize._metrics import compare
from mmedge.quantize._samples import SampleExecutor
from mmedge.quantize.report import TensorComparison

__all__ = ["CAPTION", "caption_spec", "compare_captions"]

CAPTION = "caption"  # the name of the end-to-end output in the report


def caption_spec(manifest: Manifest) -> OutputSpec | None:
    """The end-to-end output a generative bundle is judged by, or None for other bundles."""
    g = manifest.generation
    if g is None:
        return None
    return OutputSpec(name=CAPTION, component=g.decoder, tensor=g.logits_output, kind="token_ids")


def compare_captions(
    manifest: Manifest, executor: SampleExecutor, reference: Mapping[str, Path], versions: Mapping[str, Path]
) -> tuple[float, TensorComparison, list[np.ndarray], list[np.ndarray]]:
    """(exact-match rate, comparison of log-probabilities, reference ids, version ids) of a
    generative bundle's captions; ids are int64 [examples, max_length] per sample, padded with
    the pad id."""
    ref_ids, ref_scores = _captions(manifest, executor, reference)
    ids, scores = _captions(manifest, executor, versions)
    same = np.concatenate([np.all(a == b, axis=1) for a, b in zip(ref_ids, ids, strict=True)])
    comparison = compare("caption log-probability", ref_scores, scores)
    return float(same.mean()) if same.size else 1.0, comparison, ref_ids, ids


def _captions(
    manifest: Manifest, executor: SampleExecutor, versions: Mapping[str, Path]
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Greedy captions (padded ids) and their log-probabilities, per sample of ``executor``."""
    g = manifest.generation
    if g is None:
        raise QuantizationError(f"bundle of {manifest.model.name} has no decoder to generate captions with")
    decoder = manifest.component(g.decoder)

    def step(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return executor.run(g.decoder, versions[g.decoder], feeds)

    all_ids, all_scores = [], []
    for initial in executor.wired(versions, g.decoder):
        result = generate(step, initial, spec=g, decoder=decoder, vocab=())
        ids = np.full((len(result.token_ids), g.max_length), g.pad_id, dtype=np.int64)
        for row, tokens in enumerate(result.token_ids):
            ids[row, : len(tokens)] = tokens
        all_ids.append(ids)
        all_scores.append(np.asarray(result.scores, dtype=np.float64))
    return all_ids, all_scores
