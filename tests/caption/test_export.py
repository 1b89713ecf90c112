"""``export_captioner`` and the manifest's generation contract."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from mmedge.bundle import (
    RAW_INPUTS,
    Asset,
    Component,
    Edge,
    GenerationSpec,
    InputSpec,
    Manifest,
    ModelInfo,
    OutputSpec,
    TensorSpec,
    load_bundle,
    manifest_from_dict,
    manifest_to_dict,
)
from mmedge.data import BOS_ID, EOS_ID, PAD_ID, VOCAB
from mmedge.errors import BundleError, ExportError
from mmedge.export import export_captioner
from mmedge.models import CaptionConfig, CaptionNet


@pytest.mark.slow
def test_captioner_bundle_layout_and_verification(trained) -> None:
    m = load_bundle(trained.bundle).manifest
    roles = {c.name: (c.role, c.modality) for c in m.components}
    assert roles == {
        "image_encoder": ("encoder", "image"),
        "decoder_init": ("decoder", None),
        "decoder_step": ("decoder", None),
    }
    assert m.generation == GenerationSpec(
        decoder="decoder_step",
        token_input="tokens",
        logits_output="logits",
        state=(("h", "h_out"), ("c", "c_out")),
        bos_id=BOS_ID,
        eos_id=EOS_ID,
        pad_id=PAD_ID,
        max_length=7,  # CaptionConfig.max_caption_length counts <bos>
        vocab="vocab",
    )
    assert (trained.bundle / m.asset("vocab").file).read_text().splitlines() == list(VOCAB)
    step = m.component("decoder_step")
    shapes = {t.name: t.shape for t in (*step.inputs, *step.outputs)}
    assert shapes == {
        "tokens": ("batch", 1),
        "h": (1, "batch", 64),
        "c": (1, "batch", 64),
        "logits": ("batch", len(VOCAB)),
        "h_out": (1, "batch", 64),
        "c_out": (1, "batch", 64),
    }
    assert [(e.source, e.output, e.input) for e in m.edges_into("decoder_step")] == [
        ("decoder_init", "h0", "h"),
        ("decoder_init", "c0", "c"),
    ]
    # every component checked on the example batch (3) and one more item; the chain by generating
    rows = {(r.component, r.output): r for r in trained.export.verification}
    assert all(r.passed for r in rows.values())
    assert rows["decoder_step", "h_out"].shapes == ((1, 3, 64), (1, 4, 64))
    assert step.verification[-1].reference == "pytorch-generate"
    assert step.verification[-1].passed


def _tiny_captioner() -> CaptionNet:
    torch.manual_seed(0)
    return CaptionNet(CaptionConfig(image_size=16, channels=(4,), grid=2, feature_dim=8, embed_dim=4, hidden=8))


def _no_config(model: CaptionNet) -> CaptionNet:
    model.config = None
    return model


@pytest.mark.parametrize(
    ("model", "options", "message"),
    [
        pytest.param(lambda: torch.nn.Linear(2, 2), {}, "model has no `image_encoder` submodule", id="not-a-captioner"),
        pytest.param(lambda: _no_config(_tiny_captioner()), {}, "pass max_length=", id="no-max-length"),
        pytest.param(_tiny_captioner, {"vocab": ()}, "needs its vocabulary", id="no-vocab"),
        pytest.param(_tiny_captioner, {"state_names": ("h",)}, "returns 2 tensors but state_names has 1", id="states"),
        pytest.param(_tiny_captioner, {"state_names": ("h", "h")}, "distinct non-empty names", id="same-names"),
    ],
)
def test_export_errors_say_what_is_missing(model, options: dict, message: str, tmp_path: Path) -> None:
    image = torch.zeros(2, 3, 16, 16)
    with pytest.raises(ExportError, match=message):
        export_captioner(model(), {"image": image}, out=tmp_path / "b", **options)
    assert not (tmp_path / "b").exists()


def _manifest(**generation: object) -> Manifest:
    """A hand-made generative manifest (no files): encoder → decoder state, vocabulary of 6."""
    feat = TensorSpec("feat", "float32", (1, "batch", 4))
    decoder = Component(
        "step",
        "step.onnx",
        "decoder",
        inputs=(TensorSpec("tokens", "int64", ("batch", 1)), TensorSpec("h", "float32", (1, "batch", 4))),
        outputs=(TensorSpec("logits", "float32", ("batch", 6)), TensorSpec("h_out", "float32", (1, "batch", 4))),
    )
    spec = GenerationSpec("step", "tokens", "logits", (("h", "h_out"),), bos_id=2, eos_id=3)
    return Manifest(
        model=ModelInfo("hand-made"),
        inputs=(InputSpec("image", "image", "float32", ("batch", 3, 8, 8)),),
        components=(
            Component("enc", "enc.onnx", "encoder", (TensorSpec("image", "float32", ("batch", 3, 8, 8)),), (feat,)),
            decoder,
        ),
        wiring=(Edge(RAW_INPUTS, "image", "enc", "image"), Edge("enc", "feat", "step", "h")),
        outputs=(OutputSpec("logits", "step", "logits"),),
        assets=(Asset("vocab", "vocab.txt"),),
        generation=dataclasses.replace(spec, **generation),
    )


def test_generation_spec_round_trips_and_is_absent_from_other_manifests(tiny_bundle: Path) -> None:
    m = _manifest()
    assert manifest_from_dict(json.loads(json.dumps(manifest_to_dict(m)))) == m
    assert "generation" not in manifest_to_dict(load_bundle(tiny_bundle).manifest)


def _edit_component(**changes: object):
    def edit(m: Manifest) -> Manifest:
        step = dataclasses.replace(m.component("step"), **changes)
        return dataclasses.replace(m, components=(m.components[0], step))

    return edit


def _with_memory(m: Manifest) -> Manifest:
    step = m.component("step")
    memory = TensorSpec("memory", "float32", ("batch", 4))
    return _edit_component(inputs=(*step.inputs, memory))(m)


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        pytest.param(_manifest(decoder="nope"), "decoder 'nope' is not a component", id="decoder"),
        pytest.param(_edit_component(role="head")(_manifest()), "has role 'head', not 'decoder'", id="role"),
        pytest.param(_manifest(token_input="x"), "token_input 'x' must be an int64/int32 [batch, 1]", id="token"),
        pytest.param(_manifest(logits_output="h_out"), "logits_output 'h_out' must be a [batch, vocab]", id="logits"),
        pytest.param(_manifest(state=(("h", "c_out"),)), "state pair ('h', 'c_out') must be", id="state-pair"),
        pytest.param(
            _edit_component(
                inputs=(TensorSpec("tokens", "int64", ("batch", 1)), TensorSpec("h", "float32", (1, 2, 4)))
            )(_manifest()),
            "state input 'h' must have exactly one axis named 'batch'",
            id="state-batch",
        ),
        pytest.param(
            dataclasses.replace(_manifest(), wiring=(*_manifest().wiring, Edge(RAW_INPUTS, "image", "step", "tokens"))),
            "token_input 'tokens' is fed by the wiring",
            id="token-wired",
        ),
        pytest.param(_with_memory(_manifest()), "input 'memory' of 'step' is neither", id="unfed-input"),
        pytest.param(_manifest(bos_id=6), "bos_id 6 is not a token id of the 6-token vocabulary", id="bos"),
        pytest.param(_manifest(max_length=0), "max_length must be a positive int", id="max-length"),
        pytest.param(_manifest(vocab="words"), "vocab asset 'words' is not among the assets", id="vocab"),
    ],
)
def test_inconsistent_generation_specs_are_bundle_errors(manifest: Manifest, message: str) -> None:
    with pytest.raises(BundleError, match="inconsistent") as info:
        manifest_from_dict(manifest_to_dict(manifest))
    assert message in str(info.value)


def test_malformed_state_pairs_are_bundle_errors() -> None:
    data = manifest_to_dict(_manifest())
    data["generation"]["state"] = [["h"]]
    with pytest.raises(BundleError, match=r"generation\.state must be"):
        manifest_from_dict(data)
