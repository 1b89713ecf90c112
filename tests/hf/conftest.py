"""The tiny Hugging Face models of ``hf._models``, exported once per session.

Exports take ~1 minute each on 2 cores, so the bundles are session fixtures shared by every test
that only reads them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("transformers", reason="the Hugging Face tests need the hf extra: pip install 'mmedge[hf]'")
pytest.importorskip("tokenizers", reason="the Hugging Face tests need the hf extra: pip install 'mmedge[hf]'")

import torch
from hf._models import (
    IMAGE_SIZE,
    SENTENCES,
    Exported,
    bert_resnet,
    bert_tokenizer,
    clip_tokenizer,
    encode,
    fast,
    tiny_clip,
)


@pytest.fixture(scope="session")
def bert_export(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    """BertResNetNet exported with its WordPiece tokenizer in the bundle."""
    from mmedge.export import export_model

    tok = bert_tokenizer()
    hf = fast(tok, "[PAD]")
    model = bert_resnet()
    texts = SENTENCES[:2]
    gen = torch.Generator().manual_seed(0)
    inputs = {**encode(hf, texts), "image": torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE, generator=gen)}
    out = tmp_path_factory.mktemp("hf") / "bert_resnet"
    result = export_model(model, inputs, {"text": "text_encoder", "image": "image_encoder"}, out=out, tokenizer=tok)
    return Exported(model=model, hf=hf, result=result, path=Path(out))


@pytest.fixture(scope="session")
def clip_export(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    """A tiny CLIPDualEncoder exported with a transformers fast tokenizer in the bundle."""
    from mmedge.export import export_model
    from mmedge.models.hf import CLIPDualEncoder

    tok = clip_tokenizer()
    hf = fast(tok, "<pad>")
    clip = tiny_clip(tok.get_vocab_size())
    model = CLIPDualEncoder(clip).eval()
    gen = torch.Generator().manual_seed(1)
    inputs = {**encode(hf, SENTENCES[2:4]), "pixel_values": torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE, generator=gen)}
    out = tmp_path_factory.mktemp("hf") / "clip"
    result = export_model(model, inputs, {"text": "text_encoder", "image": "image_encoder"}, out=out, tokenizer=hf)
    return Exported(model=model, hf=hf, result=result, path=Path(out), clip=clip)
