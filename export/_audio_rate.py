"""Audio preprocessing read from the model's own spectral front-end.

A torchaudio ``MelSpectrogram``, ``MFCC`` or ``LFCC`` (or mmedge's ``MelFrontend``) knows the sample rate
the model was trained at. With it and the example's length, an audio input the user gave no
preprocessing for still takes sound files and waves at any rate (resampled, padded or cropped), as
the image input of a model with a known size would; the export's notes say what was inferred and how
to override it. A ``Resample`` in front of the spectrogram means the input rate is not the
spectrogram's: nothing is inferred then, nor where the front-ends disagree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mmedge.bundle import AudioPreprocess
from mmedge.export._frontend import outermost
from mmedge.export._types import EncoderSpec

__all__ = ["infer_audio_preprocess", "sample_rates"]


def sample_rates(module: Any) -> dict[str, int]:
    """Path → sample rate of each spectral front-end inside ``module`` that has one; a ``Resample``
    module is reported with rate 0 (its input rate is not what the spectrogram says)."""
    import torchaudio

    from mmedge.export.mel import MelFrontend

    t = torchaudio.transforms
    kinds = (t.MelSpectrogram, t.MFCC, t.LFCC, MelFrontend)
    found = {}
    for path, m in module.named_modules():
        if isinstance(m, t.Resample):
            found[path] = 0
        elif isinstance(m, kinds) and int(getattr(m, "sample_rate", 0) or 0) > 0:
            found[path] = int(m.sample_rate)
    return found


def infer_audio_preprocess(
    model: Any,
    encoders: Sequence[EncoderSpec],
    modalities: Mapping[str, str],
    inputs: Mapping[str, Any],
    preprocess: Mapping[str, Any],
) -> tuple[dict[str, AudioPreprocess], list[str]]:
    """AudioPreprocess for each audio input without one whose front-end tells its sample rate, and a note each.

    The front-end is looked for in the input's encoder, or in the whole model when it has one audio
    input only (a spectrogram computed in ``forward`` before the encoder is called).
    """
    audio = [n for n, m in modalities.items() if m == "audio" and n not in preprocess]
    only = len([m for m in modalities.values() if m == "audio"]) == 1
    found: dict[str, AudioPreprocess] = {}
    notes: list[str] = []
    for name in audio:
        shape = tuple(int(d) for d in inputs[name].shape)
        if len(shape) not in (2, 3):
            continue
        path = next((e.path for e in encoders if name in e.inputs), "")
        rates = {f"{path}.{p}" if p else path: r for p, r in sample_rates(model.get_submodule(path)).items()}
        if not rates and only:
            rates = sample_rates(model)
        distinct = set(rates.values())
        if len(distinct) != 1 or 0 in distinct:
            continue
        rate = distinct.pop()
        mono = len(shape) == 2 or shape[1] == 1
        found[name] = AudioPreprocess(sample_rate=rate, max_seconds=shape[-1] / rate, mono=mono)
        where = ", ".join(sorted(p or "(the model)" for p in outermost(rates)))
        notes.append(
            f"input {name!r}: audio preprocessing taken from the model's spectrogram ({where}): "
            f"sample_rate={rate}, max_seconds={shape[-1] / rate:g} (the example's {shape[-1]} samples), "
            f"{'mono' if mono else f'{shape[1]} channels'}; sound files and waves at other rates are resampled "
            f"and padded or cropped to that length{_as_pcm(inputs[name])}. Set [inputs.{name}.preprocess] "
            "(or preprocess=) to change it"
        )
    return found, notes


def _as_pcm(example: Any) -> str:
    """How an integer audio input is fed ("" for floats): as PCM samples of its width."""
    if example.is_floating_point():
        return ""
    dtype = str(example.dtype).removeprefix("torch.")
    return f", then fed as {dtype} PCM samples (waves in [-1, 1] scaled to the type's full range)"
