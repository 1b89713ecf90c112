"""A Hugging Face transformer quantized to dynamic INT8 packages for phones, matching its bundle.

Dynamic INT8 re-quantizes every activation at run time, so a graph optimised differently (one
fusion more or less) rounds some values to the neighbouring INT8 step and drifts far past a float
tolerance. The ``.ort`` file must therefore be optimised from the graph with the exporter's shape
information intact, as the desktop session optimises it: without it onnxruntime cannot fuse
DistilBERT's residual + LayerNorm into SkipLayerNormalization and the check failed (0.03 on a
user-style model).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from mmedge.export import export_model
from mmedge.mobile.api import package_mobile
from mmedge.quantize import quantize_bundle

VOCAB, TOKENS = 200, 24


class _Tagger(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        from transformers import DistilBertConfig, DistilBertModel

        config = DistilBertConfig(vocab_size=VOCAB, dim=64, n_layers=2, n_heads=4, hidden_dim=128)
        self.bert = DistilBertModel(config)
        self.cls = nn.Linear(64, 5)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.cls(self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state[:, 0])


def _samples(n: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [
        {"input_ids": rng.integers(1, VOCAB, (1, TOKENS)), "attention_mask": np.ones((1, TOKENS), np.int64)}
        for _ in range(n)
    ]


@pytest.fixture(scope="module")
def int8_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("transformers")
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("transformer")
    example = {k: torch.from_numpy(v) for k, v in _samples(1, 0)[0].items()}
    export_model(_Tagger().eval(), example, {"text": "bert"}, out=root / "fp32")
    quantize_bundle(
        root / "fp32",
        root / "int8",
        calibration=_samples(8, 1),
        holdout=_samples(4, 2),
        recipe={"text_encoder": "dynamic", "fusion_head": "fp32"},
        speed_check=False,
    )
    return root / "int8"


@pytest.mark.parametrize("target", ["generic", "android"])
def test_a_dynamic_int8_transformer_packages_and_verifies(int8_bundle: Path, tmp_path: Path, target: str) -> None:
    report = package_mobile(int8_bundle, tmp_path / "mobile", target=target)
    (text,) = [c for c in report.components if c.name == "text_encoder"]
    assert text.verification.passed
    assert text.difference_from_default <= 1e-4
    if report.optimization != "basic":  # the fusion the desktop session makes too (NNAPI's level has none)
        assert "com.microsoft:SkipLayerNormalization" in text.ops


def test_a_derived_mask_takes_the_texts_length_not_the_export_example(int8_bundle: Path) -> None:
    """A tokenizer's max_length (77) beside the example the export ran at (24 tokens): the mask the
    runtime derives from the strings is as long as the text, so phones get 77 for both."""
    import dataclasses

    from mmedge.bundle import TextPreprocess, load_bundle
    from mmedge.mobile._shapes import plan_dims

    manifest = load_bundle(int8_bundle).manifest
    ids = dataclasses.replace(
        manifest.input("input_ids"), preprocess=TextPreprocess(max_length=77, mask_input="attention_mask")
    )
    assert manifest.input("attention_mask").example_shape == (1, TOKENS)
    inputs = tuple(ids if i.name == "input_ids" else i for i in manifest.inputs)
    plan = plan_dims(dataclasses.replace(manifest, inputs=inputs), None, fix_all=True)
    assert plan.fixed["seq"] == 77
