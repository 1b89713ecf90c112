"""The trainer: it learns the synthetic task, evaluates honestly, and checkpoints safely."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from mmedge.data import PAD_ID, VOCAB, make_captions, make_textimage, make_trimodal
from mmedge.models import CaptionConfig, CaptionNet, TriModalConfig, TriModalNet
from mmedge.train import CheckpointError, EpochStats, evaluate, load_checkpoint, save_checkpoint, train


class TinyTextImage(nn.Module):
    """Bag of words + a strided conv: enough to learn make_textimage in a few steps."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.EmbeddingBag(len(VOCAB), 8, padding_idx=PAD_ID)
        self.conv = nn.Conv2d(3, 4, 4, stride=4)
        self.fc = nn.Linear(8 + 4, 4)

    def forward(self, text: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.cat([self.embedding(text), self.conv(image).amax(dim=(2, 3))], dim=1))


class Constant(nn.Module):
    """Predicts the same caption token everywhere: a probe for how the trainer counts tokens."""

    def __init__(self, token: int) -> None:
        super().__init__()
        self.token = token
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, image: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(*tokens.shape, len(VOCAB))
        logits[..., self.token] = 1.0
        return logits * self.scale


@pytest.fixture(scope="module")
def textimage():
    return make_textimage(64, 0, image_size=16, text_length=8)


def _tiny(seed: int = 0) -> TinyTextImage:
    torch.manual_seed(seed)
    return TinyTextImage()


def test_history_callback_and_eval_mode(textimage) -> None:
    seen: list[EpochStats] = []
    model = _tiny()
    result = train(model, textimage, epochs=2, batch_size=16, lr=1e-2, on_epoch=seen.append)
    assert result.history == tuple(seen)
    assert [e.epoch for e in seen] == [1, 2]
    assert all(0.0 <= e.accuracy <= 1.0 and e.loss > 0 and e.seconds > 0 for e in seen)
    assert result.losses[1] < result.losses[0]
    assert result.checkpoint is None
    assert not model.training


def test_same_seed_same_run(textimage) -> None:
    a = train(_tiny(), textimage, epochs=2, batch_size=16, seed=3)
    b = train(_tiny(), textimage, epochs=2, batch_size=16, seed=3)
    c = train(_tiny(), textimage, epochs=2, batch_size=16, seed=4)
    assert a.losses == b.losses
    assert a.losses != c.losses


def test_evaluate_restores_the_mode(textimage) -> None:
    model = _tiny().train()
    accuracy = evaluate(model, textimage)
    assert 0.0 <= accuracy <= 1.0
    assert model.training


def test_data_without_the_model_inputs_is_refused(textimage) -> None:
    model = TriModalNet(TriModalConfig(image_size=16))
    with pytest.raises(ValueError, match=r"no \['audio'\]"):
        train(model, textimage, epochs=1)


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        pytest.param(PAD_ID, 0.0, id="pad-is-never-counted"),
        pytest.param(VOCAB.index("a"), 1 / 7, id="one-word-of-seven"),
    ],
)
def test_caption_accuracy_counts_non_pad_targets(token: int, expected: float) -> None:
    data = make_captions(30, 0, image_size=8)  # every caption is 6 words + <eos>
    assert evaluate(Constant(token), data) == pytest.approx(expected)


def test_caption_training_learns_beyond_the_template() -> None:
    data = make_captions(512, 0, image_size=16)
    torch.manual_seed(0)
    model = CaptionNet(CaptionConfig(image_size=16, channels=(8, 16), grid=2, feature_dim=32, embed_dim=16, hidden=32))
    result = train(model, data, epochs=10, batch_size=32, lr=1e-2)
    assert result.losses[-1] < result.losses[0] / 3
    # Without the image the best is 4 of 7 targets ("a", preposition, "the", <eos>) plus "middle"
    # after "in the" (1 caption in 5): 0.6 token accuracy. Beyond that the model reads the image.
    assert result.accuracies[-1] > 0.62


@pytest.mark.slow
def test_small_trimodal_model_learns_all_three_modalities() -> None:
    shape = {"image_size": 32, "audio_seconds": 0.5}
    data, held_out = make_trimodal(640, 0, **shape), make_trimodal(240, 1, **shape)
    torch.manual_seed(0)
    model = TriModalNet(TriModalConfig(**shape))
    train(model, data, epochs=4, batch_size=32, lr=2e-3)
    # chance is 1/8, and any one modality ignored caps accuracy at 1/2
    assert evaluate(model, held_out) >= 0.6


@pytest.mark.parametrize(
    "name", [pytest.param("model.pt", id="torch"), pytest.param("model.safetensors", id="safetensors")]
)
def test_checkpoint_round_trip(textimage, tmp_path: Path, name: str) -> None:
    model = _tiny(0)
    result = train(model, textimage, epochs=1, batch_size=32, checkpoint=tmp_path / "ckpt" / name)
    assert result.checkpoint == tmp_path / "ckpt" / name
    assert sorted(p.name for p in result.checkpoint.parent.iterdir()) == [name]  # no temp file left
    restored = load_checkpoint(_tiny(1), result.checkpoint)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(restored.state_dict()[key], value, rtol=0, atol=0)
    if name.endswith(".pt"):
        assert set(torch.load(result.checkpoint, weights_only=True)) == set(model.state_dict())


def test_checkpoint_of_another_model_names_every_bad_key(tmp_path: Path) -> None:
    path = save_checkpoint(nn.Sequential(nn.Linear(2, 3)), tmp_path / "other.pt")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(_tiny(), path)
    message = str(info.value)
    assert "missing from the checkpoint: " in message
    assert "fc.weight" in message
    assert "not in the model: 0.weight" in message

    wrong_shape = _tiny().state_dict() | {"fc.bias": torch.zeros(7)}
    torch.save(wrong_shape, tmp_path / "shape.pt")
    with pytest.raises(CheckpointError, match=r"fc.bias: checkpoint \[7\] vs model \[4\]"):
        load_checkpoint(_tiny(), tmp_path / "shape.pt")


@pytest.mark.parametrize(
    ("write", "message"),
    [
        pytest.param(None, "does not exist", id="missing"),
        pytest.param(
            lambda p: p.write_bytes(b"not a checkpoint"), "is not a readable PyTorch checkpoint", id="garbage"
        ),
        pytest.param(lambda p: torch.save(_tiny(), p), "refused to load .* pickled Python object", id="pickled-module"),
        pytest.param(lambda p: torch.save({"epoch": 3}, p), r"entries \['epoch'\] are not tensors", id="not-tensors"),
    ],
)
def test_unusable_checkpoints_are_refused(tmp_path: Path, write, message: str) -> None:
    path = tmp_path / "bad.pt"
    if write is not None:
        write(path)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(_tiny(), path)
