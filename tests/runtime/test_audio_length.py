"""Audio shorter than an encoder's graph allows is refused before onnxruntime runs, with the minimum.

The minimum is read from the ONNX graph (reflect pads, Conv/pool kernels and STFT frames along
time). Tiny ``onnx.helper`` graphs pin each rule; the reference audio encoder (log-mel front-end,
n_fft 400 at 16 kHz, exported by mmedge) is checked against onnxruntime at the boundary.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from tinybundle import tiny_inputs

from mmedge.errors import InputError
from mmedge.runtime import Audio, Pipeline
from mmedge.runtime._audio_length import minimum_length

OPSET = 17


def _graph_file(tmp_path: Path, nodes: list, initializers: dict[str, np.ndarray], rank: int = 2) -> Path:
    dims = ["batch", "samples"] if rank == 2 else ["batch", 1, "samples"]
    graph = helper.make_graph(
        nodes,
        "audio",
        [helper.make_tensor_value_info("audio", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v, k) for k, v in initializers.items()],
    )
    path = tmp_path / "audio.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]), path)
    return path


def _ints(*values: int) -> np.ndarray:
    return np.array(values, np.int64)


def _weight(kernel: int) -> np.ndarray:
    return np.ones((2, 1, kernel), np.float32)


UNSQUEEZE = helper.make_node("Unsqueeze", ["audio", "axis1"], ["u"])


@pytest.mark.parametrize(
    ("nodes", "initializers", "expected"),
    [
        pytest.param(
            [UNSQUEEZE, helper.make_node("Conv", ["u", "w"], ["out"], strides=[2])],
            {"axis1": _ints(1), "w": _weight(33)},
            33,
            id="conv-kernel",
        ),
        pytest.param(
            [UNSQUEEZE, helper.make_node("Conv", ["u", "w"], ["out"], pads=[8, 8])],
            {"axis1": _ints(1), "w": _weight(33)},
            17,
            id="conv-padded",
        ),
        pytest.param(
            [UNSQUEEZE, helper.make_node("Conv", ["u", "w"], ["out"], dilations=[3])],
            {"axis1": _ints(1), "w": _weight(5)},
            13,
            id="conv-dilated",
        ),
        pytest.param(
            [UNSQUEEZE, helper.make_node("Conv", ["u", "w"], ["out"], auto_pad="SAME_UPPER")],
            {"axis1": _ints(1), "w": _weight(5)},
            None,
            id="conv-same-padding",
        ),
        pytest.param(
            [
                UNSQUEEZE,
                helper.make_node("Pad", ["u", "pads"], ["p"], mode="reflect"),
                helper.make_node("Conv", ["p", "w"], ["out"], strides=[160]),
            ],
            {"axis1": _ints(1), "pads": _ints(0, 0, 200, 0, 0, 200), "w": _weight(400)},
            201,
            id="centred-stft-as-conv",
        ),
        pytest.param(
            [
                UNSQUEEZE,
                helper.make_node("Conv", ["u", "w"], ["c"], strides=[2]),
                helper.make_node("Relu", ["c"], ["r"]),
                helper.make_node("MaxPool", ["r"], ["out"], kernel_shape=[4], strides=[4]),
            ],
            {"axis1": _ints(1), "w": _weight(5)},
            11,  # conv: (11 - 5) // 2 + 1 = 4 frames, exactly the pool's kernel
            id="conv-then-pool",
        ),
        pytest.param(
            [
                UNSQUEEZE,
                helper.make_node("QuantizeLinear", ["u", "scale", "zero"], ["q"]),
                helper.make_node("DequantizeLinear", ["q", "scale", "zero"], ["dq"]),
                helper.make_node("DequantizeLinear", ["w8", "scale", "zero8"], ["w"]),
                helper.make_node("Conv", ["dq", "w"], ["out"], strides=[4]),
            ],
            {
                "axis1": _ints(1),
                "scale": np.array(0.01, np.float32),
                "zero": np.array(0, np.uint8),
                "zero8": np.array(0, np.int8),
                "w8": np.ones((2, 1, 25), np.int8),
            },
            25,
            id="int8-qdq-conv",
        ),
        pytest.param(
            [
                UNSQUEEZE,
                helper.make_node("Transpose", ["u"], ["t"], perm=[0, 2, 1]),
                helper.make_node("Transpose", ["t"], ["t2"], perm=[0, 2, 1]),
                helper.make_node("Conv", ["t2", "w"], ["out"]),
            ],
            {"axis1": _ints(1), "w": _weight(7)},
            7,
            id="through-transposes",
        ),
        pytest.param(
            [
                helper.make_node("Unsqueeze", ["audio", "axis2"], ["u"]),
                helper.make_node("STFT", ["u", "step", "", "frame"], ["out"]),
            ],
            {"axis2": _ints(2), "step": _ints(160), "frame": _ints(400)},
            400,
            id="stft-op",
        ),
        pytest.param([helper.make_node("ReduceMean", ["audio"], ["out"], keepdims=0)], {}, None, id="no-minimum"),
    ],
)
def test_minimum_read_from_the_graph(tmp_path: Path, nodes: list, initializers: dict, expected: int | None) -> None:
    found = minimum_length(_graph_file(tmp_path, nodes, initializers), "audio")
    assert (found.samples if found is not None else None) == expected


def test_minimum_matches_onnxruntime(tmp_path: Path) -> None:
    """The minimum is exact for a graph the walk follows: one sample less fails in onnxruntime."""
    import onnxruntime as ort

    nodes = [
        UNSQUEEZE,
        helper.make_node("Pad", ["u", "pads"], ["p"], mode="reflect"),
        helper.make_node("Conv", ["p", "w"], ["c"], strides=[3]),
        helper.make_node("Conv", ["c", "w2"], ["out"]),
    ]
    weights = {"w": _weight(40), "w2": np.ones((2, 2, 5), np.float32)}
    path = _graph_file(tmp_path, nodes, {"axis1": _ints(1), "pads": _ints(0, 0, 4, 0, 0, 4), **weights})
    least = minimum_length(path, "audio")
    assert least is not None
    assert least.samples == 44  # (44 + 8 - 40) // 3 + 1 = 5 frames: the second kernel's size
    options = ort.SessionOptions()
    options.log_severity_level = 4  # the failing run below is expected: keep its log line off stderr
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    session.run(None, {"audio": np.zeros((1, least.samples), np.float32)})
    with pytest.raises(Exception, match=r"INVALID_ARGUMENT|Invalid"):
        session.run(None, {"audio": np.zeros((1, least.samples - 1), np.float32)})


def test_short_audio_is_refused_before_onnxruntime_runs(tiny_bundle: Path, capfd: pytest.CaptureFixture) -> None:
    x = tiny_inputs(batch=1)
    with Pipeline(tiny_bundle, providers="cpu") as pipe:
        with pytest.raises(InputError) as err:
            pipe.run({**x, "audio": x["audio"][:, :20]})
        pipe.run({**x, "audio": x["audio"][:, :33]})  # the audio encoder's first Conv has 33 taps
    assert str(err.value) == (
        "input 'audio': audio of 20 samples (0.00125 s at 16000 Hz) is too short: at least 33 samples "
        "(0.002063 s at 16000 Hz) are needed (audio_encoder: an unnamed Conv node has a kernel of 33 along "
        "time); pass longer audio or pad it with zeros"
    )
    assert "onnxruntime" not in capfd.readouterr().err


@pytest.fixture(scope="module")
def reference_audio_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference TriModal audio encoder (centred log-mel STFT, n_fft 400, hop 160 at 16 kHz) and a
    linear head, exported by mmedge on one second of audio."""
    import torch
    from torch import nn

    from mmedge.bundle import AudioPreprocess
    from mmedge.export import export_model
    from mmedge.export.mel import MelFrontend
    from mmedge.models.trimodal import AudioEncoder, TriModalConfig

    config = TriModalConfig()

    class AudioNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            mel = MelFrontend(config.sample_rate, config.n_fft, config.hop_length, config.n_mels)
            self.audio_encoder = AudioEncoder(mel, config.audio_channels, config.audio_features)
            self.head = nn.Linear(config.audio_features, 3)

        def forward(self, audio: torch.Tensor) -> torch.Tensor:
            return self.head(self.audio_encoder(audio))

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("reference-audio") / "bundle"
    audio = torch.randn(1, config.sample_rate) * 0.1
    preprocess = {"audio": AudioPreprocess(config.sample_rate, config.audio_seconds)}
    export_model(AudioNet().eval(), {"audio": audio}, {"audio": "audio_encoder"}, out=out, preprocess=preprocess)
    return out


@pytest.mark.slow
def test_reference_audio_encoder_minimum_is_one_reflect_pad(
    reference_audio_bundle: Path, capfd: pytest.CaptureFixture
) -> None:
    rng = np.random.default_rng(0)
    with Pipeline(reference_audio_bundle, providers="cpu") as pipe:
        spec = next(i for i in pipe.manifest.inputs if i.name == "audio")
        assert spec.shape[-1] == "samples"
        with pytest.raises(InputError) as err:
            pipe.run({"audio": np.zeros((1, 200), np.float32)})
        # the shortest accepted audio, a second, and ten seconds all run
        for samples in (201, 16_000, 160_000):
            out = pipe.run({"audio": (rng.standard_normal((1, samples)) * 0.1).astype(np.float32)})
            assert all(np.isfinite(v).all() for v in out.values())
    message = str(err.value)
    assert "audio of 200 samples (0.0125 s at 16000 Hz) is too short: at least 201 samples (0.01256 s" in message
    assert "reflects 200 samples at an edge" in message
    assert "onnxruntime" not in capfd.readouterr().err


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(
            "one-frame.wav",
            "input 'audio' item 0: {path} holds 1 sample(s) per channel (6.25e-05 s at 16000 Hz), too short to be "
            "audio: give at least 1 ms (16 samples at 16000 Hz)",
            id="one-frame-stereo-file",
        ),
        pytest.param(
            Audio(np.zeros((2, 1), np.float32), 16000),
            "input 'audio' item 0: the wave has 1 sample(s) per channel (6.25e-05 s at 16000 Hz), too short to be "
            "audio: give at least 1 ms (16 samples at 16000 Hz)",
            id="one-sample-stereo-array",
        ),
        pytest.param(
            (np.zeros((2, 30), np.float32), 44100),
            "input 'audio' item 0: the wave has 30 sample(s) per channel (0.00068 s at 44100 Hz), too short to be "
            "audio: give at least 1 ms (45 samples at 44100 Hz)",
            id="short-at-44k",
        ),
    ],
)
def test_raw_audio_too_short_to_be_audio(tiny_bundle: Path, tmp_path: Path, value, expected: str) -> None:
    import soundfile

    if isinstance(value, str):
        value = tmp_path / value
        soundfile.write(value, np.zeros((1, 2), np.float32), 16000)  # one frame, two channels
    with Pipeline(tiny_bundle, providers="cpu") as pipe, pytest.raises(InputError) as err:
        pipe.run({**tiny_inputs(batch=1), "audio": value})
    assert str(err.value) == expected.format(path=value)


def test_an_onnxruntime_failure_past_the_check_is_still_translated(
    tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where no minimum is known, onnxruntime's failure still arrives as an InputError naming the component."""
    from mmedge.runtime._inputs import InputRouter

    monkeypatch.setattr(InputRouter, "minimum_samples", lambda _self, _name: None)
    with Pipeline(tiny_bundle, providers="cpu") as pipe, pytest.raises(InputError) as err:
        pipe.run({**tiny_inputs(batch=2), "audio": np.zeros((2, 3), np.float32)})
    assert str(err.value).startswith("component 'audio_encoder' failed on inputs (audio: float32 [2, 3])")
