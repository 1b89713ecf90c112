"""Whisper encoders take sound files: ``--processor`` with a WhisperFeatureExtractor's
preprocessor_config.json gives the ``whisper_log_mel`` recipe, and the runtime computes the
features as the extractor does (checked against it on 10-s and 35-s clips, 80 and 128 mel bins),
from any rate and channel count. The export keeps Whisper's 3000 frames fixed (the encoder refuses
other lengths), and a Whisper model exported from the command line runs a WAV file as PyTorch runs
the extractor's features."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mmedge.bundle import AudioPreprocess, InputSpec, load_bundle
from mmedge.errors import ExportError
from mmedge.export._hf_processor import load_processor, processor_preprocess
from mmedge.runtime.preprocess import Audio, prepare_audio

transformers = pytest.importorskip("transformers", reason="needs the hf extra: pip install 'mmedge[hf]'")

WHISPER = AudioPreprocess(16000, 30.0, features="whisper_log_mel")


def _clip(seconds: float, rate: int = 16000, seed: int = 0) -> np.ndarray:
    """A tone sweep with noise and a silent gap: loud and quiet frames, as speech has."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * rate)) / rate
    wave = 0.4 * np.sin(2 * np.pi * (200 + 300 * t) * t) + 0.02 * rng.normal(size=t.size)
    wave[(t > seconds / 3) & (t < seconds / 2)] *= 0.001
    return wave.astype(np.float32)


def _spec(pre: AudioPreprocess, frames: int | str = 3000) -> InputSpec:
    return InputSpec("input_features", "audio", "float32", ("batch", pre.n_mels, frames), preprocess=pre)


def _recipe(extractor: object, tmp_path: Path, shape: tuple[int, ...]) -> AudioPreprocess:
    extractor.save_pretrained(tmp_path)
    return processor_preprocess(load_processor(tmp_path), {"input_features": shape}, {})["input_features"]


@pytest.mark.parametrize(("mels", "seconds"), [(80, 10.0), (128, 35.0)])
def test_the_features_are_the_extractors_for_short_and_cropped_clips(mels: int, seconds: float, tmp_path: Path) -> None:
    extractor = transformers.WhisperFeatureExtractor(feature_size=mels)
    pre = _recipe(extractor, tmp_path, (1, mels, 3000))
    assert pre == AudioPreprocess(16000, 30.0, features="whisper_log_mel", n_mels=mels)
    clip = _clip(seconds)
    got = prepare_audio(_spec(pre), [Audio(clip, 16000)]).samples
    want = extractor(clip, sampling_rate=16000, return_tensors="np").input_features  # padded or cut to 30 s
    assert got.shape == want.shape == (1, mels, 3000)
    # float32 FFTs of two libraries differ in the near-silent frames, whose log magnifies rounding: by 1.1e-4 at
    # one of 384,000 values on one EPYC, under 1e-4 on another
    np.testing.assert_allclose(got, want, atol=3e-4)


def test_other_rates_and_stereo_are_resampled_and_mixed_before_the_features() -> None:
    clip = _clip(10.0)
    stereo = np.stack([_clip(10.0, 44100, seed=1)] * 2)
    got = prepare_audio(_spec(WHISPER), [Audio(clip, 16000), Audio(stereo, 44100)]).samples
    assert got.shape == (2, 80, 3000)
    assert got.dtype == np.float32
    mono_16k = prepare_audio(_spec(WHISPER), [Audio(stereo[0], 44100)]).samples
    np.testing.assert_array_equal(got[1], mono_16k[0])  # two equal channels mix to the same wave


def test_keep_length_features_give_each_clip_its_frames() -> None:
    pre = AudioPreprocess(16000, 30.0, features="whisper_log_mel", pad=False)
    spec = _spec(pre, "frames")
    assert spec.keeps_length
    out = prepare_audio(spec, [Audio(_clip(2.0), 16000), Audio(_clip(5.0), 16000), Audio(_clip(0.005), 16000)])
    assert out.lengths == (200, 500, 1)  # samples // hop_length; a 5-ms clip is padded to one frame
    assert out.samples.shape == (3, 80, 500)


@pytest.mark.parametrize(
    ("pre", "shape", "problem"),
    [
        (WHISPER, ("batch", 128, 3000), r"feed \(batch, 80, frames\)"),
        (WHISPER, ("batch", "samples"), r"feed \(batch, 80, frames\), but the input's shape is \['batch', 'samples'\]"),
        (WHISPER, ("batch", 80, 1500), "gives 3000 frames of hop_length 160, but the input takes 1500"),
        (AudioPreprocess(16000, 30.0, mono=False, features="whisper_log_mel"), ("batch", 80, 3000), "set mono=true"),
        (AudioPreprocess(16000, 30.0, features="mfcc"), ("batch", 80, 3000), "features 'mfcc' is not one of"),
        (AudioPreprocess(16000, 30.0, features="whisper_log_mel", n_mels=300), ("batch", 300, 3000), "n_mels <="),
        (  # a hostile manifest: 480,000 frames of 65,536 samples would be 125 GB of windowed frames
            AudioPreprocess(16000, 30.0, features="whisper_log_mel", n_fft=65536, hop_length=1),
            ("batch", 80, "frames"),
            "too many to compute",
        ),
    ],
)
def test_a_recipe_that_cannot_feed_the_input_is_refused_at_load(
    pre: AudioPreprocess, shape: tuple, problem: str
) -> None:
    from mmedge.bundle._validate import _preprocess_problems

    problems = _preprocess_problems(InputSpec("input_features", "audio", "float32", shape, preprocess=pre))
    assert any(re.search(problem, p) for p in problems), problems


@pytest.mark.parametrize(
    ("extractor", "shape", "problem"),
    [
        (transformers.WhisperFeatureExtractor, (1, 80, 1500), r"makes \(batch, 80, 3000\) features"),
        (lambda: transformers.WhisperFeatureExtractor(dither=1e-5), (1, 80, 3000), "dither"),
    ],
)
def test_an_extractor_the_model_does_not_match_is_refused(
    extractor: object, shape: tuple, problem: str, tmp_path: Path
) -> None:
    with pytest.raises(ExportError, match=problem):
        _recipe(extractor(), tmp_path, shape)


WHISPER_TAGGER = """
import torch
from torch import nn
from transformers import WhisperConfig
from transformers.models.whisper.modeling_whisper import WhisperEncoder


class WhisperTagger(nn.Module):
    \"\"\"A Whisper encoder on log-mel input_features, mean-pooled into a classifier.\"\"\"

    def __init__(self):
        super().__init__()
        config = WhisperConfig(d_model=64, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=128)
        self.audio = WhisperEncoder(config)
        self.head = nn.Linear(64, 5)

    def forward(self, input_features):
        return self.head(self.audio(input_features).last_hidden_state.mean(dim=1))
"""


@dataclass(frozen=True)
class Exported:
    folder: Path  # the bundle is folder / "b"
    model: Any
    extractor: Any


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exported]:
    """A Whisper-encoder model exported from the command line with its extractor's folder."""
    import torch

    from mmedge.cli import main

    folder = tmp_path_factory.mktemp("whisper")
    extractor = transformers.WhisperFeatureExtractor()
    extractor.save_pretrained(folder / "whisper")
    (folder / "whisper_tagger.py").write_text(WHISPER_TAGGER, encoding="utf-8")
    sys.path.insert(0, str(folder))
    try:
        from whisper_tagger import WhisperTagger

        torch.manual_seed(0)
        model = WhisperTagger().eval()
        torch.save(model.state_dict(), folder / "tagger.pt")
        (folder / "export.toml").write_text("[inputs.input_features]\nshape = [1, 80, 3000]\n", encoding="utf-8")
        args = ["export", "--model", "whisper_tagger:WhisperTagger", "--checkpoint", str(folder / "tagger.pt")]
        args += ["--config", str(folder / "export.toml"), "--processor", str(folder / "whisper")]
        assert main([*args, "--out", str(folder / "b")]) == 0
        yield Exported(folder, model, extractor)
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop("whisper_tagger", None)


def test_a_whisper_model_exported_with_its_extractor_runs_a_wav_file_as_pytorch(exported: Exported) -> None:
    soundfile = pytest.importorskip("soundfile")
    import torch

    from mmedge.runtime import Pipeline

    folder = exported.folder
    spec = load_bundle(folder / "b").manifest.input("input_features")
    assert spec.shape == ("batch", 80, 3000)  # fixed frames: Whisper's encoder takes no other length
    assert spec.preprocess == WHISPER

    clips = [_clip(10.0, seed=0), _clip(4.0, seed=1)]
    for i, clip in enumerate(clips):
        soundfile.write(folder / f"clip{i}.wav", clip, 16000, subtype="FLOAT")
    with Pipeline(folder / "b") as pipeline:
        got = pipeline.run({"input_features": [str(folder / f"clip{i}.wav") for i in range(2)]})
    features = exported.extractor(clips, sampling_rate=16000, return_tensors="pt").input_features
    with torch.no_grad():
        want = exported.model(features).numpy()
    np.testing.assert_allclose(got["logits"], want, atol=1e-4)


def test_mmedge_serve_takes_waves_as_json_and_sound_files_for_the_features(exported: Exported) -> None:
    import httpx
    from serving import serving

    from mmedge.runtime import Pipeline
    from mmedge.serve import ServeOptions, create_app

    soundfile = pytest.importorskip("soundfile")
    clips = [_clip(3.0, seed=2), _clip(3.0, seed=3)]
    soundfile.write(exported.folder / "upload.wav", clips[0], 16000, subtype="FLOAT")
    with Pipeline(exported.folder / "b", threads=1) as pipeline, serving(create_app(pipeline, ServeOptions())) as url:
        want = pipeline.run({"input_features": [Audio(c, 16000) for c in clips]})["logits"]
        one = httpx.post(f"{url}/v1/predict", json={"inputs": {"input_features": clips[0].tolist()}}, timeout=60)
        rows = httpx.post(
            f"{url}/v1/predict", json={"inputs": {"input_features": np.stack(clips).tolist()}}, timeout=60
        )
        with open(exported.folder / "upload.wav", "rb") as f:
            upload = httpx.post(f"{url}/v1/predict", files={"input_features": ("upload.wav", f)}, timeout=60)
    for response in (one, rows, upload):
        assert response.status_code == 200, response.text
    np.testing.assert_allclose(one.json()["outputs"]["logits"], want[:1], atol=1e-5)
    np.testing.assert_allclose(rows.json()["outputs"]["logits"], want, atol=1e-5)
    np.testing.assert_allclose(upload.json()["outputs"]["logits"], want[:1], atol=1e-5)
