"""mmedge.graph: the one wiring graph every stage and app asks (order, encoders, feeds)."""

from __future__ import annotations

import pytest

from mmedge.bundle import RAW_INPUTS, Component, Edge, InputSpec, Manifest, ModelInfo, OutputSpec, TensorSpec
from mmedge.errors import BundleError, InputError
from mmedge.graph import Graph


def _t(name: str) -> TensorSpec:
    return TensorSpec(name, "float32", ("batch", 4))


def _component(name: str, role: str, inputs: tuple[str, ...], outputs: tuple[str, ...]) -> Component:
    return Component(
        name=name,
        file=f"{name}.onnx",
        role=role,
        inputs=tuple(_t(n) for n in inputs),
        outputs=tuple(_t(n) for n in outputs),
    )


def _manifest(*, cycle: bool = False) -> Manifest:
    """Listed head first: text → text_encoder ─┐, image → image_encoder → pool ─┴→ head; decoder after pool.

    The decoder's ``state`` input is fed by the generation loop, not the wiring.
    """
    components = (
        _component("head", "head", ("t", "p"), ("logits",)),
        _component("pool", "encoder", ("i",), ("p",)),
        _component("text_encoder", "encoder", ("text",), ("t",)),
        _component("image_encoder", "encoder", ("image",), ("i",)),
        _component("decoder", "decoder", ("p", "state"), ("next",)),
    )
    wiring = [
        Edge(RAW_INPUTS, "text", "text_encoder", "text"),
        Edge(RAW_INPUTS, "image", "image_encoder", "image"),
        Edge("image_encoder", "i", "pool", "i"),
        Edge("text_encoder", "t", "head", "t"),
        Edge("pool", "p", "head", "p"),
        Edge("pool", "p", "decoder", "p"),
    ]
    if cycle:
        wiring.append(Edge("head", "logits", "image_encoder", "image"))
    return Manifest(
        model=ModelInfo("tiny"),
        inputs=(
            InputSpec("text", "text", "float32", ("batch", 4)),
            InputSpec("image", "image", "float32", ("batch", 4)),
        ),
        components=components,
        wiring=tuple(wiring),
        outputs=(OutputSpec("logits", "head", "logits"),),
    )


def test_order_puts_every_component_after_its_sources() -> None:
    order = Graph(_manifest()).order()
    assert order == ("text_encoder", "image_encoder", "pool", "head", "decoder")


def test_upstream_downstream_and_wiring_fed_inputs() -> None:
    g = Graph(_manifest())
    assert g.upstream("head") == {"text_encoder", "pool"}
    assert g.downstream("image_encoder") == {"pool", "head", "decoder"}
    assert g.downstream("head") == frozenset()
    assert g.unfed("decoder") == ("state",)
    assert not g.fed_by_wiring("decoder")
    assert g.fed_by_wiring("head")


def test_feeds_take_raw_inputs_and_upstream_outputs_along_edges() -> None:
    g = Graph(_manifest())
    raw = {"text": "T", "image": "I"}
    produced = {"text_encoder": {"t": "t-out"}, "pool": {"p": "p-out"}}
    assert g.feeds("head", raw, produced) == {"t": "t-out", "p": "p-out"}
    assert g.feeds("image_encoder", raw, {}) == {"image": "I"}
    assert g.feeds("decoder", raw, produced) == {"p": "p-out"}  # the loop feeds "state"


@pytest.mark.parametrize(
    ("name", "encoder"),
    [
        pytest.param("text", "text_encoder", id="modality"),
        pytest.param("image", "image_encoder", id="input"),
        pytest.param("image_encoder", "image_encoder", id="component"),
    ],
)
def test_encoder_for_resolves_modality_input_or_component(name: str, encoder: str) -> None:
    g = Graph(_manifest())
    assert g.encoders() == ("text_encoder", "image_encoder")
    assert g.encoder_for(name) == encoder


@pytest.mark.parametrize(
    ("name", "message"),
    [
        pytest.param("pool", "fed by other components, so it is not an encoder", id="fed-by-component"),
        pytest.param("video", "nothing to encode named 'video'", id="unknown"),
        pytest.param(3, r"a str\), found int", id="not-a-str"),
    ],
)
def test_encoder_for_refuses_what_is_no_encoder(name: object, message: str) -> None:
    with pytest.raises(InputError, match=message):
        Graph(_manifest()).encoder_for(name)  # type: ignore[arg-type]


def test_a_cycle_is_refused_when_the_graph_is_built() -> None:
    with pytest.raises(BundleError, match="cycle"):
        Graph(_manifest(cycle=True))
