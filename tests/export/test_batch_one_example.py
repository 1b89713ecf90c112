"""A batch-1 example must not cost the batch axis: exporters fix size-1 dims, export retries at size 2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tinymodels import VOCAB, ConvImage
from torch import Tensor, nn

from mmedge.export import export_model
from mmedge.runtime import Pipeline


class TransformerText(nn.Module):
    """``nn.TransformerEncoder`` as people write it: its attention reshapes fix a batch of 1."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 16)
        layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)

    def forward(self, ids: Tensor) -> Tensor:
        return self.encoder(self.emb(ids)).mean(1)


class ImageTransformerText(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.image_encoder, self.text_encoder = ConvImage(), TransformerText()
        self.head = nn.Linear(4 + 16, 3)

    def forward(self, image: Tensor, text: Tensor) -> Tensor:
        return self.head(torch.cat([self.image_encoder(image), self.text_encoder(text)], 1))


def test_batch_one_example_exports_dynamic_batch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = ImageTransformerText().eval()
    example = {"image": torch.rand(1, 3, 16, 16), "text": torch.randint(0, VOCAB, (1, 6))}
    result = export_model(model, example, out=tmp_path / "b", monolithic=True)

    assert any("text_encoder: exported from the second input" in w and "has size 1" in w for w in result.warnings)
    pipe = Pipeline(tmp_path / "b")
    batch = {"image": torch.rand(3, 3, 16, 16), "text": torch.randint(0, VOCAB, (3, 9))}
    got = pipe.run({k: v.numpy() for k, v in batch.items()})["logits"]
    with torch.no_grad():
        want = model(**batch).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-3)
