"""``audio_frontend="conv"``: swap torchaudio MelSpectrograms for their convolution equivalent.

The STFT op that torchaudio's MelSpectrogram exports to is slow in ONNX Runtime, unsupported by
mobile execution providers and by the TorchScript exporter. ``MelFrontend.from_torchaudio``
computes the same spectrogram with convolutions; the swap is checked numerically on the example
input before anything is exported, and recorded in the component's ``optimizations``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mmedge.errors import ExportError
from mmedge.export._tree import tensors
from mmedge.export._verify import numpy_of
from mmedge.verify import Tolerance

__all__ = ["swap_mel_frontends"]


def _mel_paths(module: Any) -> list[str]:
    import torchaudio

    return [name for name, m in module.named_modules() if isinstance(m, torchaudio.transforms.MelSpectrogram)]


def swap_mel_frontends(
    encoder: Any, run: Callable[[], Any], reference: Any, tol: Tolerance, component: str
) -> tuple[str, ...]:
    """Replace, in place, every MelSpectrogram inside ``encoder`` and check ``run()`` still matches.

    ``run`` calls the encoder on the example input; ``reference`` is its output before the swap.
    Returns the optimization records, e.g. ``("mel_frontend=conv:frontend.mel",)``.
    """
    import numpy as np
    import torch

    from mmedge.export.mel import MelFrontend

    paths = _mel_paths(encoder)
    for path in paths:
        parent_path, _, leaf = path.rpartition(".")
        parent = encoder.get_submodule(parent_path) if parent_path else encoder
        setattr(parent, leaf, MelFrontend.from_torchaudio(getattr(parent, leaf)))
    if not paths:
        return ()
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
    return tuple(f"mel_frontend=conv:{p}" for p in paths)
