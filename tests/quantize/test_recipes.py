"""Recipe choice from the ops of a graph: the auto rules, the spectral front-end, overrides."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from mmedge.errors import QuantizationError
from mmedge.quantize import Recipe, choose_recipe
from mmedge.quantize.recipes import frontend_nodes, resolve_recipes, shallow_convs


def _w(name: str, *shape: int) -> onnx.TensorProto:
    return numpy_helper.from_array(np.ones(shape, np.float32), name)


def _model(nodes: list, inputs: list, inits: list, out: str = "y") -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, t, None) for n, t in inputs],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


X = [("x", TensorProto.FLOAT)]
IDS = [("ids", TensorProto.INT64)]

CONV = _model([helper.make_node("Conv", ["x", "w"], ["y"], name="conv")], X, [_w("w", 4, 3, 5, 5)])
SHALLOW_CONV = _model([helper.make_node("Conv", ["x", "w"], ["y"], name="conv")], X, [_w("w", 4, 3, 3, 3)])
GEMM = _model([helper.make_node("Gemm", ["x", "w"], ["y"], name="fc")], X, [_w("w", 8, 4)])
LSTM = _model(
    [
        helper.make_node("Gather", ["emb", "ids"], ["e"], name="embed"),
        helper.make_node("LSTM", ["e", "W", "R"], ["", "y"], hidden_size=4, name="lstm"),
    ],
    IDS,
    [_w("emb", 10, 4), _w("W", 1, 16, 4), _w("R", 1, 16, 4)],
)
ATTENTION = _model(
    [
        helper.make_node("MatMul", ["x", "wq"], ["q"], name="q"),
        helper.make_node("MatMul", ["x", "wk"], ["k"], name="k"),
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1], name="kt"),
        helper.make_node("MatMul", ["q", "kt"], ["s"], name="scores"),
        helper.make_node("Softmax", ["s"], ["p"], axis=-1, name="softmax"),
        helper.make_node("MatMul", ["p", "x"], ["y"], name="mix"),
    ],
    X,
    [_w("wq", 4, 4), _w("wk", 4, 4)],
)
EMBEDDING = _model(
    [
        helper.make_node("Gather", ["emb", "ids"], ["e"], name="embed"),
        helper.make_node("ReduceMean", ["e"], ["y"], axes=[1], name="mean"),
    ],
    IDS,
    [_w("emb", 10, 4)],
)
NOTHING = _model([helper.make_node("Relu", ["x"], ["y"], name="relu")], X, [])
# waveform -> DFT-as-conv -> power -> mel matmul -> log -> conv classifier
MEL = _model(
    [
        helper.make_node("Unsqueeze", ["x", "axes"], ["u"], name="unsqueeze"),
        helper.make_node("Conv", ["u", "dft"], ["spec"], strides=[4], name="dft_conv"),
        helper.make_node("Mul", ["spec", "spec"], ["power"], name="power"),
        helper.make_node("Transpose", ["power"], ["pt"], perm=[0, 2, 1], name="to_frames"),
        helper.make_node("MatMul", ["pt", "fb"], ["mel"], name="mel"),
        helper.make_node("Add", ["mel", "eps"], ["mel_eps"], name="floor"),
        helper.make_node("Log", ["mel_eps"], ["log_mel"], name="log"),
        helper.make_node("Transpose", ["log_mel"], ["lt"], perm=[0, 2, 1], name="to_channels"),
        helper.make_node("Conv", ["lt", "w"], ["y"], name="classifier_conv"),
    ],
    X,
    [
        numpy_helper.from_array(np.array([1], np.int64), "axes"),
        _w("dft", 8, 1, 8),
        _w("fb", 8, 4),
        _w("eps", 1),
        _w("w", 2, 4, 9),
    ],
)
# a log-probability after three linear layers is not a front-end: nothing is squared
LOG_PROBS = _model(
    [
        helper.make_node("Gemm", ["x", "w1"], ["a"], name="fc1"),
        helper.make_node("Gemm", ["a", "w2"], ["b"], name="fc2"),
        helper.make_node("Gemm", ["b", "w3"], ["c"], name="fc3"),
        helper.make_node("Softmax", ["c"], ["p"], name="softmax"),
        helper.make_node("Log", ["p"], ["y"], name="log"),
    ],
    X,
    [_w("w1", 4, 4), _w("w2", 4, 4), _w("w3", 4, 4)],
)


@pytest.mark.parametrize(
    ("model", "mode", "reason"),
    [
        pytest.param(CONV, "static", "conv/linear", id="conv-static"),
        pytest.param(GEMM, "static", "conv/linear", id="linear-static"),
        pytest.param(LSTM, "dynamic", "LSTM", id="lstm-dynamic"),
        pytest.param(ATTENTION, "dynamic", "attention", id="attention-dynamic"),
        pytest.param(EMBEDDING, "dynamic", "embedding", id="embedding-dynamic"),
        pytest.param(NOTHING, "fp32", "no conv", id="no-weights-fp32"),
        pytest.param(SHALLOW_CONV, "fp32", "shallow convs stay FP32", id="shallow-conv-fp32"),
        pytest.param(MEL, "static", "spectral front-end (7 nodes)", id="mel-static-with-frontend"),
        pytest.param(LOG_PROBS, "static", "conv/linear", id="log-probs-static"),
    ],
)
def test_choose_recipe(model: onnx.ModelProto, mode: str, reason: str) -> None:
    recipe = choose_recipe(model)
    assert recipe.mode == mode
    assert reason in recipe.reason


def test_static_recipe_defaults_match_measured_choice() -> None:
    r = Recipe.for_mode("static")
    assert (r.per_channel, r.reduce_range, r.activation_type, r.weight_type) == (True, False, "uint8", "int8")
    assert {"LayerNormalization", "Softmax"} <= set(r.exclude_op_types)
    assert Recipe.for_mode("dynamic").per_channel is False


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        pytest.param(MEL, ["unsqueeze", "dft_conv", "power", "to_frames", "mel", "floor", "log"], id="mel-region"),
        pytest.param(LOG_PROBS, [], id="late-log-is-not-a-frontend"),
        pytest.param(CONV, [], id="no-log"),
    ],
)
def test_frontend_nodes(model: onnx.ModelProto, expected: list[str]) -> None:
    assert sorted(frontend_nodes(model)) == sorted(expected)


def test_stft_op_is_a_frontend_anchor() -> None:
    model = _model(
        [
            helper.make_node("STFT", ["x", "step"], ["s"], name="stft"),
            helper.make_node("ReduceSumSquare", ["s"], ["y"], name="power"),
        ],
        X,
        [numpy_helper.from_array(np.array(4, np.int64), "step")],
    )
    assert frontend_nodes(model) == ["stft"]


def test_shallow_convs_lists_convs_too_shallow_for_int8() -> None:
    model = _model(
        [
            helper.make_node("Conv", ["x", "w_in"], ["a"], name="first"),  # 1 channel, 3x3: 9 values per output
            helper.make_node("Conv", ["a", "w_dw"], ["b"], group=8, name="depthwise"),  # its own INT8 kernel
            helper.make_node("Conv", ["b", "w_deep"], ["y"], name="deep"),  # 8 channels, 3x3: 72
        ],
        X,
        [_w("w_in", 8, 1, 3, 3), _w("w_dw", 8, 1, 3, 3), _w("w_deep", 8, 8, 3, 3)],
    )
    assert shallow_convs(model, 32) == {"first": 9}
    assert shallow_convs(model, 100) == {"first": 9, "deep": 72}
    assert shallow_convs(model, 0) == {}


def test_resolve_recipes_mixes_auto_modes_and_recipes() -> None:
    custom = Recipe("static", per_channel=False)
    got = resolve_recipes({"image": "dynamic", "head": custom}, {"image": CONV, "head": GEMM, "text": LSTM})
    assert got["image"].mode == "dynamic"
    assert got["head"].per_channel is False
    assert got["head"].reason == "given by the caller"
    assert got["text"].mode == "dynamic"
    assert "LSTM" in got["text"].reason


@pytest.mark.parametrize(
    ("recipe", "match"),
    [
        pytest.param({"nope": "static"}, r"unknown components \['nope'\]", id="unknown-component"),
        pytest.param("int4", "expected 'auto', one of", id="unknown-mode"),
    ],
)
def test_resolve_recipes_rejects(recipe: object, match: str) -> None:
    with pytest.raises(QuantizationError, match=match):
        resolve_recipes(recipe, {"image": CONV})


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"mode": "int4"}, id="mode"),
        pytest.param({"activation_type": "int4"}, id="activation-type"),
        pytest.param({"min_conv_depth": -1}, id="min-conv-depth"),
        pytest.param({"op_types": "MatMul"}, id="op-types-a-string"),
        pytest.param({"op_types": ("MatMul", "")}, id="op-types-empty-name"),
    ],
)
def test_recipe_validates_fields(kwargs: dict) -> None:
    with pytest.raises(QuantizationError, match="invalid Recipe"):
        Recipe(**kwargs)
