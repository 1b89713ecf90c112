"""``forward(batch)`` with a dict of tensors (Lightning style): the dict's entries become the bundle's inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from mmedge.bundle import ImagePreprocess, load_bundle
from mmedge.errors import ExportError
from mmedge.export import diagnose, export_model, forward_arguments, load_config
from mmedge.export._config import example_inputs
from mmedge.runtime import Pipeline

VOCAB = 50


class _BatchNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.image_encoder = nn.Sequential(nn.Conv2d(3, 8, 3, 2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.text_encoder = nn.EmbeddingBag(VOCAB, 8)
        self.head = nn.Linear(16, 3)

    def forward(self, batch: dict[str, Tensor], scale: Tensor) -> Tensor:
        features = torch.cat([self.image_encoder(batch["image"]), self.text_encoder(batch["text"])], dim=1)
        return self.head(features) * scale


def _example(n: int = 2, seed: int = 0) -> dict[str, object]:
    g = torch.Generator().manual_seed(seed)
    batch = {"image": torch.randn(n, 3, 32, 32, generator=g), "text": torch.randint(0, VOCAB, (n, 7), generator=g)}
    return {"batch": batch, "scale": torch.ones(n, 1)}


def test_a_dict_argument_s_entries_are_the_bundle_s_inputs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = _BatchNet().eval()
    result = export_model(model, _example(), out=tmp_path / "b")
    assert [i.name for i in load_bundle(result.path).manifest.inputs] == ["image", "text", "scale"]
    (note,) = [w for w in result.warnings if "forward's argument 'batch' is a dict" in w]
    assert "'image', 'text'" in note
    assert "forward" not in vars(model)  # the caller's model is left as it was
    new = _example(3, seed=1)
    got = Pipeline(result.path).run({**{k: v.numpy() for k, v in new["batch"].items()}, "scale": new["scale"].numpy()})
    with torch.no_grad():
        want = model(**new).numpy()
    np.testing.assert_allclose(got["logits"], want, rtol=1e-4, atol=1e-5)
    assert diagnose(model, _example()).split  # doctor reads the model the same way


def test_export_toml_describes_a_dict_argument_as_nested_tables(tmp_path: Path) -> None:
    toml = tmp_path / "export.toml"
    toml.write_text(
        '[inputs.batch.image]\nshape = [2, 3, 32, 32]\n[inputs.batch.text]\nshape = [2, 7]\ndtype = "int64"\n'
        "[inputs.scale]\nshape = [2, 1]\n",
        encoding="utf-8",
    )
    config = load_config(toml)
    assert config.arguments == {"batch": ("image", "text")}
    assert config.inputs["image"].preprocess is None
    with toml.open("a", encoding="utf-8") as f:  # the table the export's hint names, by the input's name
        f.write("[inputs.image.preprocess]\nsize = [32, 32]\n")
    assert load_config(toml).inputs["image"].preprocess == ImagePreprocess(size=(32, 32))
    example = example_inputs(_BatchNet(), config, batch=2)
    assert set(example) == {"batch", "scale"}
    assert int(example["batch"]["text"].max()) < VOCAB  # bounded by the EmbeddingBag, found through forward(batch)


@pytest.mark.parametrize(
    ("batch", "message"),
    [
        ({"image": torch.randn(2, 3, 32, 32), "text": [1, 2]}, "entry 'text', is a list"),
        ({"image": torch.randn(2, 3, 32, 32), "scale": torch.ones(2, 1)}, "'scale' is also another argument"),
    ],
)
def test_a_dict_argument_that_cannot_be_inputs_is_refused(tmp_path: Path, batch: dict, message: str) -> None:
    with pytest.raises(ExportError, match=message):
        export_model(_BatchNet().eval(), {"batch": batch, "scale": torch.ones(2, 1)}, out=tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_a_pytorch_baseline_is_called_with_the_dict_rebuilt_from_the_bundle_s_inputs() -> None:
    """``mmedge bench --torch-model`` feeds the bundle's inputs by name; ``forward(batch, scale)`` gets its dict."""
    model = _BatchNet().eval()
    example = _example()
    inputs = {**example["batch"], "scale": example["scale"]}
    arguments = forward_arguments(model, inputs)
    assert set(arguments) == {"batch", "scale"}
    assert set(arguments["batch"]) == {"image", "text"}
    with torch.no_grad():
        np.testing.assert_array_equal(model(**arguments).numpy(), model(**example).numpy())
    ones = torch.ones(1, 2)
    assert forward_arguments(nn.Linear(2, 2), {"input": ones}) == {"input": ones}  # named: as they are
