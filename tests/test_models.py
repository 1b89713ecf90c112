"""Reference models: forward shapes, any-length encoders, exporter-facing attributes, decoder steps."""

from __future__ import annotations

import dataclasses
import functools
import inspect

import pytest
import torch
from tinymodels import TINY_CONFIGS, tiny_model

from mmedge.bundle import AudioPreprocess, ImagePreprocess, TextPreprocess
from mmedge.data import BOS_ID, EOS_ID, PAD_ID
from mmedge.models import (
    REFERENCE_MODELS,
    CaptionNet,
    TriModalNet,
)

# One tiny configuration per reference model: the forward tests run over this table, and the
# guard test below fails when a model is added to REFERENCE_MODELS without an entry here.
TINY = {name: functools.partial(tiny_model, name) for name in TINY_CONFIGS}
PREPROCESS_BY_MODALITY = {
    "text": TextPreprocess,
    "tokens": TextPreprocess,
    "image": ImagePreprocess,
    "audio": AudioPreprocess,
}


@pytest.fixture(scope="module", params=sorted(TINY))
def model(request: pytest.FixtureRequest) -> torch.nn.Module:
    torch.manual_seed(0)
    return TINY[request.param]().eval()


def test_every_reference_model_has_a_forward_test() -> None:
    assert set(TINY) == set(REFERENCE_MODELS)
    assert all(type(TINY[name]()) is cls for name, cls in REFERENCE_MODELS.items())


@pytest.mark.parametrize("batch", [pytest.param(1, id="batch1"), pytest.param(3, id="batch3")])
def test_forward_on_example_inputs(model: torch.nn.Module, batch: int) -> None:
    inputs = model.example_inputs(batch)
    assert list(inputs) == list(inspect.signature(model.forward).parameters)
    with torch.no_grad():
        logits = model(**inputs)
    if isinstance(model, CaptionNet):
        assert logits.shape == (batch, inputs["tokens"].shape[1], len(model.vocab))
    else:
        assert logits.shape == (batch, len(model.labels))
    assert torch.isfinite(logits).all()


def test_example_inputs_are_reproducible(model: torch.nn.Module) -> None:
    a, b = model.example_inputs(2), model.example_inputs(2)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_exporter_attributes(model: torch.nn.Module) -> None:
    params = list(inspect.signature(model.forward).parameters)
    assert sorted(model.preprocess) == sorted(params)
    for name, pre in model.preprocess.items():
        assert isinstance(pre, PREPROCESS_BY_MODALITY[name])
    assert model.preprocess["image"].size == (32, 32)
    assert model.vocab[:2] == ("<pad>", "<unk>")
    assert len(model.labels) > 1
    encoders = {n for n, _ in model.named_children() if n.endswith("_encoder")}
    assert encoders == {f"{p}_encoder" for p in params if p != "tokens"}


@pytest.mark.parametrize("name", ["TextImageNet", "TriModalNet", "ResNetBertNet"])
def test_text_encoders_take_any_length(name: str) -> None:
    encoder = TINY[name]().eval().text_encoder
    with torch.no_grad():
        short, long = encoder(torch.randint(4, 40, (2, 5))), encoder(torch.randint(4, 40, (2, 23)))
    assert short.shape == long.shape
    assert short.shape[0] == 2


def test_audio_encoder_takes_any_length() -> None:
    encoder = TINY["TriModalNet"]().eval().audio_encoder
    with torch.no_grad():
        a, b = encoder(torch.randn(2, 4000)), encoder(torch.randn(2, 12345))
    assert a.shape == b.shape == (2, 8)


def test_transformer_ignores_padding() -> None:
    encoder = TINY["ResNetBertNet"]().eval().text_encoder
    text = torch.tensor([[5, 9, 7, 0], [6, 0, 0, 0]])
    with torch.no_grad():
        padded = encoder(torch.cat([text, torch.zeros(2, 5, dtype=torch.long)], dim=1))
        torch.testing.assert_close(padded, encoder(text), rtol=1e-5, atol=1e-5)


def test_torchaudio_frontend_gives_the_same_logits_from_the_same_checkpoint() -> None:
    torch.manual_seed(0)
    conv = TINY["TriModalNet"]().eval()
    config = dataclasses.replace(conv.config, audio_frontend="torchaudio")
    stft = TriModalNet(config).eval()
    stft.load_state_dict(conv.state_dict())  # the front-ends keep no state: strict load works
    inputs = conv.example_inputs(2)
    with torch.no_grad():
        torch.testing.assert_close(conv(**inputs), stft(**inputs), rtol=1e-4, atol=1e-4)


def test_caption_decoder_step_matches_teacher_forcing() -> None:
    model = TINY["CaptionNet"]().eval()
    inputs = model.example_inputs(2)
    with torch.no_grad():
        full = model(**inputs)
        h, c = model.decoder.init_state(model.image_encoder(inputs["image"]))
        assert h.shape == c.shape == (1, 2, 16)
        for t in range(inputs["tokens"].shape[1]):
            logits, h, c = model.decoder.step(inputs["tokens"][:, t : t + 1], h, c)
            torch.testing.assert_close(logits, full[:, t], rtol=1e-5, atol=1e-5)


def test_generate_greedy_pads_after_eos() -> None:
    model = TINY["CaptionNet"]().eval()
    torch.nn.init.zeros_(model.decoder.out.weight)
    with torch.no_grad():
        model.decoder.out.bias.copy_(torch.arange(len(model.vocab), dtype=torch.float32) == EOS_ID)
    out = model.generate_greedy(model.example_inputs(2)["image"], max_len=5)
    assert out.tolist() == [[EOS_ID], [EOS_ID]]  # everyone finished: stops early
    assert (model.bos_id, model.eos_id, model.pad_id) == (BOS_ID, EOS_ID, PAD_ID)

    free = TINY["CaptionNet"]().eval()
    out = free.generate_greedy(free.example_inputs(3)["image"], max_len=6)
    assert out.dtype == torch.long
    assert out.shape[0] == 3
    assert 1 <= out.shape[1] <= 6
    for row in out.tolist():
        if EOS_ID in row:
            assert set(row[row.index(EOS_ID) + 1 :]) <= {PAD_ID}
