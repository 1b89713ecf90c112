"""Split planning, input checks, axes and error paths: everything decided before any ONNX is written."""

from __future__ import annotations

from collections import namedtuple

import pytest
import torch
from tinymodels import ConvAudio, ConvImage, MeanText, TriNet, tri_inputs
from torch import Tensor, nn

from mmedge.bundle import TextPreprocess
from mmedge.errors import ExportError
from mmedge.export import Tolerance, export_model
from mmedge.export._axes import input_axes, observed_axes, second_inputs
from mmedge.export._exporters import unsupported_op
from mmedge.export._split import guess_modality, plan_split
from mmedge.export._tree import flatten, rebuild


def _plan(model: nn.Module, inputs: dict, encoders: dict | None = None):
    return plan_split(model.eval(), inputs, encoders, {}, {})


def test_flatten_names_every_tensor_and_rebuild_restores_containers() -> None:
    Pair = namedtuple("Pair", ["left", "right"])
    a, b, c, d = (torch.full((1,), float(i)) for i in range(4))
    nested = (a, {"h": b, "skip": None, "pair": Pair(c, d)})
    pairs, structure = flatten(nested, "text_features", "test")
    assert [n for n, _ in pairs] == [
        "text_features_0",
        "text_features_1_h",
        "text_features_1_pair_0",
        "text_features_1_pair_1",
    ]
    assert structure == [
        "text_features_0",
        {"h": "text_features_1_h", "skip": None, "pair": ["text_features_1_pair_0", "text_features_1_pair_1"]},
    ]
    rebuilt = rebuild(nested, [t + 10 for _, t in pairs])
    assert isinstance(rebuilt[1]["pair"], Pair)
    assert rebuilt[1]["pair"].right.item() == 13.0
    assert rebuilt[1]["skip"] is None


def test_flatten_rejects_non_tensor_outputs() -> None:
    with pytest.raises(ExportError, match="returns a str"):
        flatten((torch.zeros(1), "label"), "x", "encoder 'x'")


def test_auto_split_picks_children_called_on_one_raw_input() -> None:
    split = _plan(TriNet(), tri_inputs())
    assert split.auto
    assert [(e.name, e.path, e.modality, e.inputs) for e in split.encoders] == [
        ("text_encoder", "text_encoder", "text", ("text",)),
        ("image_encoder", "image_encoder", "image", ("image",)),
        ("audio_encoder", "audio_encoder", "audio", ("audio",)),
    ]
    assert any("auto-split: audio_encoder = TriNet.audio_encoder" in n for n in split.notes)


def test_auto_split_names_two_encoders_of_one_modality_after_their_inputs() -> None:
    class Stereo(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.left_net, self.right_net, self.head = ConvImage(), ConvImage(), nn.Linear(8, 2)

        def forward(self, left: Tensor, right: Tensor) -> Tensor:
            return self.head(torch.cat([self.left_net(left), self.right_net(right)], 1))

    image = torch.randn(1, 3, 8, 8)
    split = _plan(Stereo(), {"left": image, "right": image.clone()})
    assert [(e.name, e.modality) for e in split.encoders] == [("left_encoder", "image"), ("right_encoder", "image")]


def test_auto_split_without_candidates_asks_for_encoders() -> None:
    class Fused(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mix = nn.Linear(8, 2)

        def forward(self, a: Tensor, b: Tensor) -> Tensor:
            return self.mix(torch.cat([a, b], 1))

    with pytest.raises(ExportError, match=r"could not detect encoders.*encoders=\{"):
        _plan(Fused(), {"a": torch.randn(1, 4), "b": torch.randn(1, 4)})


def test_wrong_encoder_name_suggests_the_right_one() -> None:
    with pytest.raises(
        ExportError,
        match=r"no submodule 'txt_encoder'\. Did you mean 'text_encoder'.*direct children are: text_encoder, image_encoder, audio_encoder, head",
    ):
        _plan(TriNet(), tri_inputs(), {"text": "txt_encoder"})


def test_computation_before_an_encoder_is_folded_into_it() -> None:
    class PreprocessInForward(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.audio_encoder, self.head = ConvAudio(), nn.Linear(8, 2)

        def forward(self, audio: Tensor) -> Tensor:
            return self.head(self.audio_encoder(torch.log1p(audio.abs())))

    split = _plan(PreprocessInForward(), {"audio": torch.randn(2, 100)}, {"audio": "audio_encoder"})
    [spec] = split.encoders
    assert (spec.inputs, spec.folded) == (("audio",), ("abs", "log1p"))
    assert any("audio_encoder: folded the computation" in n for n in split.notes)


@pytest.mark.parametrize(
    ("encoders", "match"),
    [
        pytest.param(
            {"text": "text_encoder", "other": "text_encoder"}, "named for more than one encoder", id="same-module-twice"
        ),
        pytest.param({"text": "text_encoder", "emb": "text_encoder.embedding"}, "is inside encoder", id="nested"),
        pytest.param({"text-x": "text_encoder"}, "must be a modality", id="bad-key"),
        pytest.param({}, "encoders is empty", id="empty"),
    ],
)
def test_bad_encoder_maps_are_refused(encoders: dict, match: str) -> None:
    with pytest.raises(ExportError, match=match):
        _plan(TriNet(), tri_inputs(), encoders)


def test_encoder_called_twice_or_never_is_refused() -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.text_encoder, self.unused = MeanText(), MeanText()

        def forward(self, a: Tensor, b: Tensor) -> Tensor:
            return self.text_encoder(a) + self.text_encoder(b)

    inputs = {"a": torch.randint(0, 5, (1, 3)), "b": torch.randint(0, 5, (1, 3))}
    with pytest.raises(ExportError, match="is called 2 times"):
        _plan(Twice(), inputs, {"text": "text_encoder"})
    with pytest.raises(ExportError, match="was never called"):
        _plan(Twice(), inputs, {"text": "unused"})


@pytest.mark.parametrize(
    ("inputs", "match"),
    [
        pytest.param(
            {"text": torch.zeros(1, 2, dtype=torch.long)}, "required argument 'image' has no example", id="missing"
        ),
        pytest.param({"txt": torch.zeros(1, 2, dtype=torch.long)}, "'txt' is not an argument of forward", id="unknown"),
        pytest.param({"text": [1, 2]}, "'text' is a list, not a tensor", id="not-a-tensor"),
    ],
)
def test_example_inputs_must_fit_forward(tmp_path, inputs: dict, match: str) -> None:
    with pytest.raises(ExportError, match=match):
        export_model(TriNet(), inputs, out=tmp_path / "b")
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize(
    ("options", "match"),
    [
        pytest.param({"audio_frontend": "fft"}, "audio_frontend must be one of", id="frontend"),
        pytest.param({"opset": 9}, "opset must be an integer from 13 to 20", id="opset"),
        pytest.param({"tolerance": Tolerance(atol=-1.0)}, "non-negative", id="tolerance"),
        pytest.param({"tolerance": Tolerance(min_cosine=0.99)}, "no min_cosine", id="tolerance-cosine"),
        pytest.param({"modalities": {"text": "video"}}, "'video' is not one of", id="modality"),
        pytest.param(
            {"preprocess": {"img": TextPreprocess(max_length=4)}}, r"preprocess names \['img'\]", id="preprocess-name"
        ),
    ],
)
def test_bad_options_are_refused_before_exporting(tmp_path, options: dict, match: str) -> None:
    with pytest.raises(ExportError, match=match):
        export_model(TriNet(), tri_inputs(), out=tmp_path / "b", **options)


@pytest.mark.parametrize(
    ("name", "tensor", "preprocess", "expected"),
    [
        pytest.param("tokens", torch.zeros(1, 5, dtype=torch.long), None, "text", id="name-tokens"),
        pytest.param("x", torch.zeros(1, 5, dtype=torch.long), None, "text", id="int-rank2"),
        pytest.param("pixels", torch.zeros(1, 3, 4, 4), None, "image", id="name-pixels"),
        pytest.param("x", torch.zeros(1, 3, 4, 4), None, "image", id="float-rank4"),
        pytest.param("wav", torch.zeros(1, 80), None, "audio", id="name-wav"),
        pytest.param("x", torch.zeros(1, 80), None, "audio", id="float-rank2"),
        pytest.param("x", torch.zeros(1, 80), TextPreprocess(max_length=8), "text", id="preprocess-wins"),
        pytest.param("x", torch.zeros(1, 2, 3, 4, 5), None, "other", id="unknown"),
    ],
)
def test_guess_modality(name: str, tensor: Tensor, preprocess: object, expected: str) -> None:
    assert guess_modality(name, tensor, preprocess) == expected


def test_axes_by_modality_and_a_mask_that_matches_text_length() -> None:
    inputs = {
        "text": torch.zeros(2, 7, dtype=torch.long),
        "image": torch.zeros(2, 3, 8, 8),
        "audio": torch.zeros(2, 1, 400),
        "mask": torch.ones(2, 7),
    }
    modalities = {"text": "text", "image": "image", "audio": "audio", "mask": "other"}
    axes, notes = input_axes(inputs, modalities, dynamic=True)
    assert axes == {
        "text": {0: "batch", 1: "seq"},
        "image": {0: "batch"},
        "audio": {0: "batch", 2: "samples"},
        "mask": {0: "batch", 1: "seq"},
    }
    assert len(notes) == 1
    assert "'mask' axis 1" in notes[0]
    assert input_axes(inputs, modalities, dynamic=False)[0] == {n: {} for n in inputs}


def test_second_inputs_move_every_symbol_and_keep_values_valid() -> None:
    inputs = {"text": torch.randint(3, 9, (2, 8)), "image": torch.randn(2, 3, 8, 8), "audio": torch.randn(2, 400)}
    modalities = {"text": "text", "image": "image", "audio": "audio"}
    axes, _ = input_axes(inputs, modalities, dynamic=True)
    second = second_inputs(inputs, axes, modalities)
    assert {n: tuple(t.shape) for n, t in second.items()} == {"text": (3, 6), "image": (3, 3, 8, 8), "audio": (3, 300)}
    assert int(second["text"].min()) >= 3
    assert int(second["text"].max()) <= 8
    assert not torch.equal(second["image"][:2], inputs["image"])


def test_observed_axes_name_dims_after_the_symbol_that_moved() -> None:
    sizes = ({"batch": 2, "seq": 7}, {"batch": 3, "seq": 5})
    assert observed_axes("h", ((1, 2, 6), (1, 3, 6)), sizes) == {1: "batch"}
    assert observed_axes("out", ((2, 7, 6), (3, 5, 6)), sizes) == {0: "batch", 1: "seq"}
    assert observed_axes("frames", ((2, 41), (3, 31)), sizes) == {0: "batch", 1: "frames_dim1"}
    with pytest.raises(ExportError, match="has rank 2 on the example input but rank 3"):
        observed_axes("x", ((2, 7), (3, 5, 1)), sizes)


@pytest.mark.parametrize(
    ("message", "op"),
    [
        pytest.param(
            "Exporting the operator 'aten::cummax' to ONNX opset version 18 is not supported",
            "aten::cummax",
            id="torchscript",
        ),
        pytest.param(
            "No ONNX function found for <OpOverload(op='aten.kthvalue', overload='default')>.",
            "aten::kthvalue",
            id="dynamo",
        ),
        pytest.param("shape mismatch", None, id="none"),
    ],
)
def test_unsupported_op_is_parsed_from_exporter_errors(message: str, op: str | None) -> None:
    outer = RuntimeError("Failed to convert the exported program")
    outer.__cause__ = ValueError(message)
    assert unsupported_op(outer) == op
