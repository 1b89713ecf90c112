"""An audio input without preprocessing takes it from the model's own spectrogram front-end (its sample rate)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from mmedge.bundle import AudioPreprocess, load_bundle
from mmedge.errors import BundleError
from mmedge.export import ExportResult, export_model
from mmedge.runtime import Audio, Pipeline

RATE = 22050


class _Encoder(nn.Module):
    def __init__(self, resample: bool = False) -> None:
        import torchaudio

        super().__init__()
        self.resample = torchaudio.transforms.Resample(44100, RATE) if resample else nn.Identity()
        self.mfcc = torchaudio.transforms.MFCC(
            RATE, n_mfcc=8, melkwargs={"n_fft": 256, "hop_length": 128, "n_mels": 16}
        )
        self.proj = nn.Linear(8, 4)

    def forward(self, audio: Tensor) -> Tensor:
        x = self.mfcc(self.resample(audio)).mean(-1)  # (batch, [channels,] n_mfcc)
        return self.proj(x.reshape(x.shape[0], -1, 8).mean(1))


class _Net(nn.Module):
    def __init__(self, resample: bool = False) -> None:
        super().__init__()
        self.audio_encoder, self.head = _Encoder(resample), nn.Linear(4, 2)

    def forward(self, audio: Tensor) -> Tensor:
        return self.head(self.audio_encoder(audio))


def _export(model: nn.Module, example: Tensor, out: Path) -> ExportResult:
    torch.manual_seed(0)
    return export_model(model.eval(), {"audio": example}, {"audio": "audio_encoder"}, out=out)


@pytest.mark.parametrize("channels", [None, 1], ids=["batch-samples", "batch-1-samples"])
def test_sample_rate_and_length_come_from_the_model_s_mfcc(tmp_path: Path, channels: int | None) -> None:
    shape = (2, RATE // 2) if channels is None else (2, channels, RATE // 2)
    result = _export(_Net(), 0.1 * torch.randn(*shape), tmp_path / "b")
    pre = load_bundle(result.path).manifest.input("audio").preprocess
    assert pre == AudioPreprocess(sample_rate=RATE, max_seconds=0.5, mono=True)
    (note,) = [w for w in result.warnings if "audio preprocessing taken from the model's spectrogram" in w]
    for said in ("audio_encoder.mfcc", "sample_rate=22050", "max_seconds=0.5", "[inputs.audio.preprocess]"):
        assert said in note
    assert not any("no preprocessing metadata" in w for w in result.warnings)

    t = np.arange(RATE) / RATE
    wave = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)  # 1 s at the model's rate: cropped to 0.5 s
    ready = wave[: RATE // 2].reshape((1, RATE // 2) if channels is None else (1, 1, RATE // 2))
    with Pipeline(result.path, "cpu") as pipe:
        direct = pipe.run({"audio": ready})["logits"]
        assert np.allclose(pipe.run({"audio": [Audio(wave, RATE)]})["logits"], direct, atol=1e-5)
        stereo44k = np.stack([np.interp(np.arange(2 * 44100) / 44100, t, wave)] * 2).astype(np.float32)
        resampled = pipe.run({"audio": [Audio(stereo44k, 44100)]})["logits"]  # downmixed, resampled
    assert np.allclose(resampled, direct, atol=0.05)


def test_a_resample_in_the_model_leaves_the_rate_to_the_user(tmp_path: Path) -> None:
    result = _export(_Net(resample=True), 0.1 * torch.randn(2, 44100 // 2), tmp_path / "b")
    assert load_bundle(result.path).manifest.input("audio").preprocess is None
    (hint,) = [w for w in result.warnings if "no preprocessing metadata" in w]
    assert "the rate the model was trained at" in hint
    assert "22050 samples" in hint
    assert "16 kHz" not in hint


def test_mono_is_refused_for_an_input_of_several_channels(tmp_path: Path) -> None:
    result = _export(_Net(), 0.1 * torch.randn(2, 2, RATE // 4), tmp_path / "b")
    assert load_bundle(result.path).manifest.input("audio").preprocess.mono is False
    text = (result.path / "manifest.json").read_text()
    (result.path / "manifest.json").write_text(text.replace('"mono": false', '"mono": true'))
    with pytest.raises(BundleError, match="mono=true but the input takes 2 channels; set mono=false"):
        load_bundle(result.path)


def test_a_features_input_is_hinted_as_features_not_a_many_channel_wave(tmp_path: Path) -> None:
    """(batch, 16 mel bins, 40 frames) computed outside the model: the hint says how to take sound files."""

    class Features(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.audio_encoder = nn.Sequential(nn.Conv1d(16, 8, 3), nn.AdaptiveAvgPool1d(1), nn.Flatten())
            self.head = nn.Linear(8, 2)

        def forward(self, input_features: Tensor) -> Tensor:
            return self.head(self.audio_encoder(input_features))

    result = export_model(Features().eval(), {"input_features": torch.randn(2, 16, 40)}, out=tmp_path / "b")
    (hint,) = [w for w in result.warnings if "no preprocessing metadata" in w]
    assert "for Whisper's log-mel features (16 bins × 40 frames), --processor" in hint
    assert 'features = "whisper_log_mel", n_mels = 16' in hint
    assert "MelSpectrogram at the start of the audio encoder" in hint
    assert "max_seconds = 40 / sample_rate and mono = false" in hint
