"""Tiny Hugging Face models and tokenizers built in code (nothing from the hub), for the hf tests.

Tokenizers: a BERT WordPiece tokenizer over a word list, and a CLIP-style byte-level-free BPE
trained on the sentences below. Models: BertResNetNet (2-layer BERT, ResNet-18, 32x32 images)
and a CLIPDualEncoder over a 2-layer CLIPModel. Test modules import these by name
(``from hf._models import encode``); conftest exports each model once per session.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "IMAGE_SIZE",
    "SENTENCES",
    "TEXT_LENGTH",
    "Exported",
    "bert_resnet",
    "bert_tokenizer",
    "clip_tokenizer",
    "encode",
    "fast",
    "tiny_clip",
]

SENTENCES = (
    "a photo of a red circle",
    "a photo of a blue square",
    "a small green triangle on a white background",
    "two dogs playing in the park",
    "the cat sleeps on the sofa",
    "a red car parked near the house",
    "people walking along a sunny beach",
    "a bowl of fruit on the table",
)
WORDS = sorted({w for s in SENTENCES for w in s.split()})
BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
TEXT_LENGTH = 12
IMAGE_SIZE = 32


def bert_tokenizer() -> object:
    """A BERT-style WordPiece tokenizer (lower-casing, [CLS] ... [SEP], [PAD] = 0) over WORDS."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    vocab = {t: i for i, t in enumerate((*BERT_SPECIALS, *WORDS, "##s", "##ing"))}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])]
    )
    tok.enable_padding(pad_id=vocab["[PAD]"], pad_token="[PAD]")
    return tok


def clip_tokenizer() -> object:
    """A CLIP-style BPE (<bos> ... <eos>) trained on SENTENCES; <eos> = 3, <pad> = 0."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=150, special_tokens=["<pad>", "<unk>", "<bos>", "<eos>"])
    tok.train_from_iterator(SENTENCES, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", 2), ("<eos>", 3)]
    )
    return tok


def fast(tok: object, pad: str) -> object:
    """The transformers fast tokenizer around ``tok``: the reference the bundle must reproduce."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=pad)


def encode(hf: object, texts: list[str] | tuple[str, ...], length: int = TEXT_LENGTH) -> dict[str, torch.Tensor]:
    """input_ids and attention_mask as transformers makes them, padded/truncated to ``length``."""
    batch = hf(list(texts), padding="max_length", max_length=length, truncation=True, return_tensors="pt")
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


def bert_resnet() -> torch.nn.Module:
    from mmedge.models.hf import BertResNetConfig, BertResNetNet

    torch.manual_seed(0)
    config = BertResNetConfig(
        vocab_size=len(BERT_SPECIALS) + len(WORDS) + 2,
        hidden=32,
        layers=2,
        heads=2,
        intermediate=64,
        max_positions=64,
        image_depth=18,
        image_size=IMAGE_SIZE,
        fusion_dim=16,
    )
    return BertResNetNet(config).eval()


def tiny_clip(vocab_size: int) -> torch.nn.Module:
    """A 2-layer CLIPModel (text and vision) from configs, random init."""
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    text = {
        "vocab_size": vocab_size,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "max_position_embeddings": 32,
        "pad_token_id": 0,
        "bos_token_id": 2,
        "eos_token_id": 3,
    }
    vision = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": IMAGE_SIZE,
        "patch_size": 8,
    }
    return CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).eval()


@dataclass(frozen=True)
class Exported:
    """A model exported once per session, and the references the tests compare its bundle with."""

    model: torch.nn.Module  # the exported model, in eval mode
    hf: Any  # the transformers fast tokenizer: the ids the bundle's strings must reproduce
    result: Any  # export_model's ExportResult
    path: Path  # the bundle directory
    clip: Any = None  # the CLIPModel inside a CLIPDualEncoder
