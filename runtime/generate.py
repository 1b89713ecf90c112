"""Generation for bundles with a decoder (image captioning): what ``Pipeline.generate`` runs.

The components upstream of the decoder run once through the pipeline (preprocessing, encoder,
decoder init); then the decoder component runs once per token in the search of
:mod:`mmedge.decoding` (greedy, or beam search in numpy), fed as the manifest's
:class:`~mmedge.bundle.GenerationSpec` says. BOS/EOS/pad ids and the vocabulary that turns ids
into text come from the bundle, so the runtime needs nothing from the model's Python code.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

import numpy as np

from mmedge.bundle import Bundle, Component, GenerationSpec
from mmedge.decoding import STRATEGIES, Generation, generate, load_vocab
from mmedge.errors import BundleError, InputError
from mmedge.sessions import to_numpy

__all__ = ["STRATEGIES", "Generation", "Generator", "no_decoder_error"]

RunStep = Callable[[dict[str, Any]], Mapping[str, Any]]  # one run of the decoder's session


def no_decoder_error(bundle: Bundle) -> InputError:
    """The error for ``generate`` on a bundle that only classifies or embeds."""
    return InputError(
        f"this bundle has no decoder (role: decoder) and no generation spec, so it cannot generate: "
        f"{bundle.path} computes {', '.join(o.name for o in bundle.manifest.outputs)} with Pipeline.run(). "
        "Export a captioner with mmedge.export.export_captioner to generate text."
    )


class Generator:
    """The generation side of one bundle: its spec, decoder component and vocabulary."""

    def __init__(self, bundle: Bundle) -> None:
        spec = bundle.manifest.generation
        if spec is None:
            raise no_decoder_error(bundle)
        self.spec: GenerationSpec = spec
        self.decoder: Component = bundle.manifest.component(spec.decoder)
        self.vocab = load_vocab(bundle.asset_path(spec.vocab))
        width = next(t.shape[-1] for t in self.decoder.outputs if t.name == spec.logits_output)
        if isinstance(width, int) and width != len(self.vocab):
            raise BundleError(
                f"{spec.decoder}'s logits have {width} entries but the vocabulary asset {spec.vocab!r} has "
                f"{len(self.vocab)} tokens; re-export the bundle with the model's vocabulary"
            )

    def inputs(self, x: Any, raw_names: Collection[str]) -> Mapping[str, Any]:
        """``x`` as the inputs dict: a dict as given, else the value of the only raw input."""
        if isinstance(x, Mapping):
            return x
        if len(raw_names) != 1:
            raise InputError(
                f"this bundle generates from several inputs ({', '.join(sorted(raw_names))}); pass a dict of them"
            )
        return {next(iter(raw_names)): x}

    def run(
        self, run_step: RunStep, initial: Mapping[str, Any], *, max_len: int | None, strategy: str, beam_size: int
    ) -> Generation:
        """Search with the decoder session ``run_step`` from the wired ``initial`` decoder inputs."""
        name, logits = self.spec.decoder, self.spec.logits_output

        def step(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            out = {k: to_numpy(v) for k, v in run_step(feeds).items()}
            if not np.isfinite(out[logits]).all():
                raise InputError(
                    f"{name} computed NaN or Inf logits from finite inputs; the inputs are outside the range "
                    "the model works in (check how images are scaled)"
                )
            return out

        return generate(
            step,
            {k: to_numpy(v) for k, v in initial.items()},
            spec=self.spec,
            decoder=self.decoder,
            vocab=self.vocab,
            max_len=max_len,
            strategy=strategy,
            beam_size=beam_size,
        )
