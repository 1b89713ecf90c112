"""export.toml integer inputs without ``high``: the bound is the ``num_embeddings`` of the
nn.Embedding / nn.EmbeddingBag that reads the input, else the "needs high" error."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from mmedge.errors import ExportError
from mmedge.export import ExportConfig, load_config
from mmedge.export._config import InputConfig, example_inputs


class _Tagger(nn.Module):
    """Text through an Embedding (a view of the input), tags through an EmbeddingBag, a BatchNorm image path."""

    def __init__(self) -> None:
        super().__init__()
        self.words = nn.Embedding(37, 4)
        self.tags = nn.EmbeddingBag(11, 4)
        self.norm = nn.BatchNorm1d(4)

    def forward(self, text: torch.Tensor, tags: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return self.words(text[:, :3]).mean(1) + self.tags(tags) + self.norm(image)


class _Offset(nn.Module):
    """The ids reach the embedding shifted: nothing reads the raw input, so its bound is unknown."""

    def __init__(self) -> None:
        super().__init__()
        self.words = nn.Embedding(50, 4)

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        return self.words(text + 1).mean(1)


def _config(**inputs: InputConfig) -> ExportConfig:
    return ExportConfig(inputs=inputs)


def test_bound_is_taken_from_the_embedding_that_reads_the_input() -> None:
    model = _Tagger().train()
    stats = model.norm.running_mean.clone()
    config = _config(
        text=InputConfig(shape=(4, 16), dtype="int64"),
        tags=InputConfig(shape=(4, 5), dtype="int64", low=2),
        image=InputConfig(shape=(4, 4)),
    )
    tensors = example_inputs(model, config, batch=4)
    assert tensors["text"].dtype == torch.int64
    assert int(tensors["text"].min()) >= 0
    assert 11 < int(tensors["text"].max()) < 37  # drawn from the whole vocabulary, not a placeholder
    assert int(tensors["tags"].min()) >= 2
    assert int(tensors["tags"].max()) < 11
    assert model.training  # the look ran in eval mode and put the model back
    torch.testing.assert_close(model.norm.running_mean, stats)
    assert not model.words._forward_pre_hooks  # hooks removed
    model.eval()(**tensors)


def test_an_explicit_high_is_kept() -> None:
    config = _config(
        text=InputConfig(shape=(2, 8), dtype="int64", high=5),
        tags=InputConfig(shape=(2, 3), dtype="int64", high=4),
        image=InputConfig(shape=(2, 4)),
    )
    tensors = example_inputs(_Tagger(), config, batch=2)
    assert int(tensors["text"].max()) < 5
    assert int(tensors["tags"].max()) < 4


@pytest.mark.parametrize(
    ("model", "detail"),
    [
        pytest.param(_Offset(), "no nn.Embedding or nn.EmbeddingBag of _Offset reads it directly, so", id="derived"),
        pytest.param(nn.Linear(4, 4), "no nn.Embedding or nn.EmbeddingBag of Linear reads it directly, so", id="none"),
    ],
)
def test_without_an_evident_bound_the_error_asks_for_high(model: nn.Module, detail: str) -> None:
    with pytest.raises(ExportError, match=r"\[inputs.text\] needs high = <exclusive upper bound>") as e:
        example_inputs(model, _config(text=InputConfig(shape=(2, 8), dtype="int64")), batch=2)
    assert detail in str(e.value)


def test_a_model_that_cannot_run_on_placeholders_says_why() -> None:
    class Picky(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.words = nn.Embedding(9, 2)

        def forward(self, text: torch.Tensor) -> torch.Tensor:
            if int(text.sum()) == 0:
                raise ValueError("all padding")
            return self.words(text)

    with pytest.raises(ExportError, match=r"placeholder ids to look failed: ValueError: all padding"):
        example_inputs(Picky(), _config(text=InputConfig(shape=(2, 8), dtype="int64")), batch=2)


def test_load_config_is_public(tmp_path: Path) -> None:
    path = tmp_path / "export.toml"
    path.write_text('[model]\nwidth = 3\n[inputs.text]\nshape = [1, 4]\ndtype = "int64"\n', encoding="utf-8")
    config = load_config(path)
    assert config.model == {"width": 3}
    assert config.inputs["text"].high is None
