"""A model that takes integer PCM samples (a microphone's int16, scaled inside ``forward``): the export
needs no bound for them, reads the input as audio, and the bundle feeds sound files as PCM."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from mmedge.bundle import AudioPreprocess, InputSpec, load_bundle
from mmedge.export import export_model, load_config
from mmedge.export._config import example_inputs
from mmedge.runtime import Pipeline
from mmedge.runtime.preprocess import prepare

RATE = 16000


class _Pcm16Net(nn.Module):
    def __init__(self) -> None:
        import torchaudio

        super().__init__()
        self.mel = torchaudio.transforms.MelSpectrogram(RATE, n_fft=256, hop_length=128, n_mels=16)
        self.conv = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(8, 3)

    def forward(self, x: Tensor) -> Tensor:  # a name that says nothing: its dtype does
        return self.head(self.conv(torch.log(self.mel(x.float() / 32768.0) + 1e-6).unsqueeze(1)))


def test_an_int16_pcm_model_takes_sound_files(tmp_path: Path) -> None:
    toml = tmp_path / "export.toml"
    toml.write_text('[inputs.x]\nshape = [2, 8000]\ndtype = "int16"\n', encoding="utf-8")
    torch.manual_seed(0)
    model = _Pcm16Net().eval()
    example = example_inputs(model, load_config(toml), batch=2)  # no "needs high": PCM spans int16
    assert int(example["x"].min()) < -30000
    assert int(example["x"].max()) > 30000
    result = export_model(model, example, out=tmp_path / "b")
    spec = load_bundle(result.path).manifest.input("x")
    assert (spec.modality, spec.dtype) == ("audio", "int16")
    assert spec.preprocess == AudioPreprocess(sample_rate=RATE, max_seconds=0.5)
    assert any("fed as int16 PCM samples" in w for w in result.warnings)

    t = np.arange(8000) / RATE
    pcm = np.round(0.4 * np.sin(2 * np.pi * 440 * t) * 32767).astype("<i2")
    path = tmp_path / "tone.wav"
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(RATE)
        f.writeframes(pcm.tobytes())
    got = Pipeline(result.path).run({"x": str(path)})["logits"]
    with torch.no_grad():
        want = model(torch.from_numpy(pcm.astype(np.int16))[None]).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize(
    ("dtype", "silence", "peak"), [("int16", 0, 32767), ("int8", 0, 127), ("uint8", 128, 255)], ids=str
)
def test_waves_become_pcm_of_the_input_s_width(dtype: str, silence: int, peak: int) -> None:
    n = RATE // 100  # 10 ms
    pre = AudioPreprocess(sample_rate=RATE, max_seconds=n / RATE)
    spec = InputSpec("pcm", "audio", dtype, ("batch", n), preprocess=pre)
    wave_ = np.zeros(n, np.float32)
    wave_[1:4] = [1.0, -1.0, 0.5]
    tensor = prepare(spec, wave_, lambda: None)
    assert tensor.dtype == np.dtype(dtype)
    assert tensor.shape == (1, n)
    assert tensor[0, 0] == silence
    assert tensor[0, 1] == peak  # full scale clipped to the type's top, not wrapped round
    assert tensor[0, 2] == np.iinfo(dtype).min
    assert tensor[0, 3] == silence + (peak + 1 - silence) // 2
