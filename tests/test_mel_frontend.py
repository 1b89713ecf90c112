"""MelFrontend: the convolution impl computes torchaudio's MelSpectrogram, and exports without STFT."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchaudio

from mmedge.errors import ExportError
from mmedge.models import MelFrontend

SR = 16000


def _log(mel: torch.Tensor) -> torch.Tensor:
    return torch.log(mel + 1e-6)


def _signal(kind: str, samples: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(samples)
    if kind == "random":
        return 0.3 * torch.randn(3, samples, generator=gen)
    t = torch.arange(samples) / SR
    tones = 0.5 * torch.sin(2 * math.pi * 440 * t) + 0.3 * torch.sin(2 * math.pi * 2500 * t + 1.0)
    # A -34 dB noise floor. In bins ~1e-10 below the frame's energy, float32 rounding alone moves
    # log-mel by ~1e-3 (torchaudio's own FFT included, against float64), so pure tones would test
    # float32 arithmetic rather than the front-end.
    return (tones + 0.01 * torch.randn(samples, generator=gen))[None]


@pytest.mark.parametrize("samples", [pytest.param(16000, id="1s"), pytest.param(7003, id="odd-length")])
@pytest.mark.parametrize("kind", ["random", "tone"])
@pytest.mark.parametrize(
    ("hop", "split"),
    [pytest.param(160, 20, id="two-stage"), pytest.param(147, None, id="one-conv")],  # gcd(400, 147) = 1
)
def test_conv_matches_torchaudio(kind: str, samples: int, hop: int, split: int | None) -> None:
    x = _signal(kind, samples)
    conv, reference = MelFrontend(SR, 400, hop, 64, impl="conv"), MelFrontend(SR, 400, hop, 64, impl="torchaudio")
    assert conv.split == split
    ref = reference(x)
    assert ref.shape == (x.shape[0], 64, samples // hop + 1)
    torch.testing.assert_close(_log(conv(x)), _log(ref), rtol=1e-4, atol=1e-4)


def test_leading_dims_are_kept() -> None:
    x = 0.3 * torch.randn(2, 3, 4000)
    out = MelFrontend()(x)
    assert out.shape == (2, 3, 64, 26)
    torch.testing.assert_close(out[1, 2], MelFrontend()(x[1, 2]), rtol=1e-5, atol=1e-6)


def test_frontends_keep_no_state() -> None:
    assert MelFrontend(impl="conv").state_dict() == {}
    assert MelFrontend(impl="torchaudio").state_dict() == {}


@pytest.mark.parametrize(
    "settings",
    [
        pytest.param({}, id="defaults"),
        pytest.param(
            {"n_fft": 512, "win_length": 300, "hop_length": 128, "n_mels": 40, "window_fn": torch.hamming_window},
            id="short-hamming",
        ),
        pytest.param(
            {"normalized": True, "power": 1.0, "norm": "slaney", "mel_scale": "slaney", "f_min": 50.0, "f_max": 7000.0},
            id="slaney-magnitude",
        ),
        pytest.param({"center": False, "normalized": "frame_length", "wkwargs": {"periodic": False}}, id="uncentred"),
        pytest.param({"pad": 37, "pad_mode": "constant", "power": 1.5}, id="padded-constant"),
    ],
)
def test_from_torchaudio_reproduces_the_module(settings: dict) -> None:
    ms = torchaudio.transforms.MelSpectrogram(SR, **{"n_fft": 400, "hop_length": 160, "n_mels": 64, **settings})
    front = MelFrontend.from_torchaudio(ms)
    assert front.impl == "conv"
    for samples in (16000, 5001):
        x = _signal("random", samples)
        expected = ms(x)
        assert front(x).shape == expected.shape
        torch.testing.assert_close(_log(front(x)), _log(expected), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "settings",
    [
        pytest.param({}, id="defaults"),
        pytest.param({"n_fft": 512, "win_length": 400, "hop_length": 160, "power": 1.0}, id="magnitude"),
        pytest.param({"n_fft": 257, "hop_length": 100, "center": False, "normalized": True}, id="odd-uncentred"),
    ],
)
def test_from_torchaudio_reproduces_a_linear_spectrogram(settings: dict) -> None:
    spec = torchaudio.transforms.Spectrogram(**{"n_fft": 400, "hop_length": 160, **settings})
    front = MelFrontend.from_torchaudio(spec)
    assert (front.impl, front.n_mels) == ("conv", spec.n_fft // 2 + 1)
    for samples in (16000, 5001):
        x = _signal("random", samples)
        expected = spec(x)
        assert front(x).shape == expected.shape
        # single bins (no mel sum) reach near zero, where a log magnifies float32 rounding: compare power
        torch.testing.assert_close(front(x), expected, rtol=1e-4, atol=1e-5 * float(expected.max()))


@pytest.mark.parametrize(
    ("module", "message"),
    [
        pytest.param(torchaudio.transforms.MelSpectrogram(SR, power=None), "power=None", id="complex"),
        pytest.param(torchaudio.transforms.Spectrogram(power=None), "power=None", id="complex-spectrogram"),
        pytest.param(
            torchaudio.transforms.AmplitudeToDB(),
            "expected a torchaudio.transforms.MelSpectrogram or Spectrogram",
            id="other",
        ),
    ],
)
def test_from_torchaudio_refuses_what_it_cannot_compute(module: torch.nn.Module, message: str) -> None:
    with pytest.raises(ExportError, match=message):
        MelFrontend.from_torchaudio(module)


@pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export:DeprecationWarning")
# torch.export deep-copies pytree specs through copyreg, so its own deprecation lands outside torch.*
@pytest.mark.filterwarnings("ignore:.*isinstance.treespec, LeafSpec.* is deprecated:FutureWarning")
@pytest.mark.parametrize("dynamo", [pytest.param(False, id="torchscript"), pytest.param(True, id="dynamo")])
def test_conv_frontend_exports_with_a_dynamic_length(tmp_path, dynamo: bool) -> None:
    import onnx
    import onnxruntime as ort

    front = MelFrontend(SR, 400, 160, 64).eval()
    path = tmp_path / "mel.onnx"
    # TorchScript: batch 1, as `mmedge export` often gets it; torch.export cannot keep a size-1 dim dynamic
    x = _signal("random", 8000)[: 2 if dynamo else 1]
    kwargs = (
        {
            "dynamic_shapes": {"waveform": {0: torch.export.Dim("batch"), 1: torch.export.Dim("samples", min=400)}},
            "external_data": False,
        }
        if dynamo
        else {"dynamic_axes": {"audio": {0: "batch", 1: "samples"}}}
    )
    torch.onnx.export(front, (x,), str(path), input_names=["audio"], output_names=["mel"], dynamo=dynamo, **kwargs)
    model = onnx.load(str(path))
    assert "STFT" not in {node.op_type for node in model.graph.node}
    # quant_pre_process runs onnxruntime's symbolic shape inference: it must follow every reshape
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    SymbolicShapeInference.infer_shapes(model, auto_merge=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for other in (x, _signal("random", 12345)[:2]):
        (got,) = session.run(None, {"audio": other.numpy()})
        np.testing.assert_allclose(np.log(got + 1e-6), _log(front(other)).detach().numpy(), rtol=1e-4, atol=1e-4)
