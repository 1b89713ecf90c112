"""Swap torchaudio MelSpectrograms and Spectrograms for their convolution equivalent (``audio_frontend``).

The STFT op that torchaudio's MelSpectrogram and Spectrogram export to is slow in ONNX Runtime (a user-style audio
encoder: 4.3 of 4.5 ms), unsupported by mobile execution providers, by OpenVINO at a dynamic length
and by the TorchScript exporter. ``MelFrontend.from_torchaudio`` computes the same spectrogram with
convolutions; the swap is checked numerically on the example input before anything is exported, and
recorded in the component's ``optimizations``. ``"conv"`` fails where the swap cannot be made or
does not verify; ``"auto"`` (the default) then puts the model's own modules back and says why.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from mmedge.errors import ExportError
from mmedge.export._tree import tensors
from mmedge.export._verify import numpy_of
from mmedge.verify import Tolerance

__all__ = ["SWAPPED", "FrontendSwap", "outermost", "swap_mel_frontends"]

# The torchaudio.transforms modules an audio encoder's export replaces by MelFrontend (the doctor
# reports STFTs inside them as replaced).
SWAPPED = ("MelSpectrogram", "Spectrogram")


@dataclass(frozen=True)
class FrontendSwap:
    """What the swap did: optimization records of what was replaced, or why nothing was (``auto``)."""

    optimizations: tuple[str, ...] = ()  # e.g. ("mel_frontend=conv:frontend.mel",)
    kept: str | None = None  # why the model's STFT front-end was exported as it is


def _spectrogram_paths(module: Any) -> list[str]:
    """Paths of the torchaudio MelSpectrograms and Spectrograms in ``module``, outermost only (a
    MelSpectrogram holds a Spectrogram)."""
    import torchaudio

    kinds = tuple(getattr(torchaudio.transforms, name) for name in SWAPPED)
    return outermost([name for name, m in module.named_modules() if isinstance(m, kinds)])


def outermost(paths: Iterable[str]) -> list[str]:
    """The module paths not inside another of ``paths`` (a MelSpectrogram holds a Spectrogram)."""
    found = list(paths)
    return [p for p in found if not any(p.startswith(f"{q}.") for q in found if q != p)]


def _put(encoder: Any, path: str, module: Any) -> None:
    parent_path, _, leaf = path.rpartition(".")
    setattr(encoder.get_submodule(parent_path) if parent_path else encoder, leaf, module)


def swap_mel_frontends(
    encoder: Any, run: Callable[[], Any], reference: Any, tol: Tolerance, component: str, *, mode: str = "conv"
) -> FrontendSwap:
    """Replace, in place, every MelSpectrogram and Spectrogram inside ``encoder`` and check ``run()`` still matches.

    ``run`` calls the encoder on the example input; ``reference`` is its output before the swap.
    ``mode="conv"`` raises :class:`ExportError` where a swap is impossible or changes the output;
    ``mode="auto"`` restores the original modules instead and returns the reason as ``kept``.
    """
    from mmedge.export.mel import MelFrontend

    paths = _spectrogram_paths(encoder)
    originals = {path: encoder.get_submodule(path) for path in paths}
    try:
        for path in paths:
            _put(encoder, path, MelFrontend.from_torchaudio(originals[path]))
        if paths:
            _check(run, reference, tol, component)
    except ExportError as e:
        if mode != "auto":
            raise
        for path, module in originals.items():
            _put(encoder, path, module)
        return FrontendSwap(kept=f"{component}: kept torchaudio's spectrogram (an ONNX STFT, slow in onnxruntime): {e}")
    return FrontendSwap(optimizations=tuple(f"mel_frontend=conv:{p}" for p in paths))


def _check(run: Callable[[], Any], reference: Any, tol: Tolerance, component: str) -> None:
    import numpy as np
    import torch

    with torch.no_grad():
        swapped = tensors(run())
    for i, (before, after) in enumerate(zip(tensors(reference), swapped, strict=True)):
        a, b = numpy_of(after).astype(np.float64), numpy_of(before).astype(np.float64)
        if a.shape != b.shape or not np.allclose(a, b, atol=tol.atol, rtol=tol.rtol):
            err = float(np.abs(a - b).max()) if a.shape == b.shape else float("nan")
            raise ExportError(
                f"{component}: the convolution mel front-end changes output {i} (max abs error {err:.3g}, "
                f"atol={tol.atol:g}, rtol={tol.rtol:g}); export with audio_frontend='keep' instead"
            )
