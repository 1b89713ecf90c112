"""Symbolic shape inference before quantization types the opset-18 reductions onnxruntime's skips.

``torchaudio.transforms.AmplitudeToDB(top_db=...)`` exports ``ReduceMax(x, axes)`` with
``keepdims=0`` followed by a ``Sub``; onnxruntime's own inference left that output rankless and
raised, so every such log-mel encoder was pre-processed without symbolic shapes (a warning and a
"steps that failed" entry in every report).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from mmedge.quantize._apply import prepare
from mmedge.quantize._shapes import AXES_INPUT_REDUCTIONS


def _peak_clamp(op: str) -> onnx.ModelProto:
    """``x`` (batch, mels, frames) → ``max(x, reduce(x, axes=[-2, -1]) - 80)``, as AmplitudeToDB clamps."""
    nodes = [
        helper.make_node("Constant", [], ["axes"], value=helper.make_tensor("a", TensorProto.INT64, [2], [-2, -1])),
        helper.make_node(op, ["x", "axes"], ["peak"], keepdims=0),
        helper.make_node("Constant", [], ["top"], value=helper.make_tensor("t", TensorProto.FLOAT, [], [80.0])),
        helper.make_node("Sub", ["peak", "top"], ["floor"]),
        helper.make_node("Constant", [], ["dims"], value=helper.make_tensor("d", TensorProto.INT64, [2], [1, 2])),
        helper.make_node("Unsqueeze", ["floor", "dims"], ["floor3"]),
        helper.make_node("Max", ["x", "floor3"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "clamp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8, "frames"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _output_shape(model: onnx.ModelProto) -> list[int | str]:
    (info,) = model.graph.output
    return [d.dim_param or d.dim_value for d in info.type.tensor_type.shape.dim]


@pytest.mark.parametrize("op", AXES_INPUT_REDUCTIONS)
def test_reductions_with_an_axes_input_are_typed(op: str, tmp_path: Path) -> None:
    source = tmp_path / "clamp.onnx"
    onnx.save(_peak_clamp(op), str(source))
    pre = onnx.load(str(prepare("audio_encoder", source, tmp_path)))  # raised TypeError before for every op here
    assert _output_shape(pre) == ["batch", 8, "frames"]


def test_an_amplitude_to_db_log_mel_encoder_quantizes_with_symbolic_shapes(tmp_path: Path) -> None:
    import torch
    import torchaudio
    from torch import nn

    from mmedge.export import export_model
    from mmedge.quantize import quantize_bundle

    class Audio(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mel = torchaudio.transforms.MelSpectrogram(16000, n_fft=256, hop_length=128, n_mels=16)
            self.to_db = torchaudio.transforms.AmplitudeToDB(top_db=80.0)
            self.conv = nn.Sequential(nn.Conv2d(1, 16, 3), nn.ReLU(), nn.Conv2d(16, 8, 3))

        def forward(self, waveform: torch.Tensor) -> torch.Tensor:
            return self.conv(self.to_db(self.mel(waveform)).unsqueeze(1)).mean((2, 3))

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.audio_encoder = Audio()
            self.head = nn.Linear(8, 3)

        def forward(self, waveform: torch.Tensor) -> torch.Tensor:
            return self.head(self.audio_encoder(waveform))

    torch.manual_seed(0)
    export_model(Net().eval(), {"waveform": torch.randn(2, 4000)}, out=tmp_path / "fp32")
    rng = np.random.default_rng(0)
    samples = [{"waveform": rng.standard_normal((1, 4000)).astype(np.float32)} for _ in range(8)]
    report = quantize_bundle(
        tmp_path / "fp32", tmp_path / "int8", calibration=samples[:6], holdout=samples[6:], speed_check=False
    )
    audio = next(c for c in report.components if c.name == "audio_encoder")
    assert audio.failures == ()
    assert audio.precision == "int8", audio.reason
