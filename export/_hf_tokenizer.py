"""A Hugging Face tokenizer stored in the bundle, so the runtime turns strings into ids without transformers.

``export_model(..., tokenizer=tok)`` saves ``tok`` (a ``tokenizers.Tokenizer`` or a transformers
fast tokenizer, whose ``backend_tokenizer`` is one) as ``tokenizer.json`` and describes the text
input with ``TextPreprocess(tokenizer_file="tokenizer.json", max_length, pad_id, mask_input)``.
An input named ``attention_mask`` beside the ids becomes the text's mask input: modality
"other", filled by the runtime from the same strings; one named ``token_type_ids`` becomes its
``type_ids_input``: the tokenizer's segment ids where an item is a text pair, and the default 0
otherwise (as transformers fills it when omitted). Only the ``tokenizers`` package is needed, here
and at run time.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmedge.bundle import Asset, TextPreprocess
from mmedge.errors import ExportError, translated

__all__ = [
    "MASK_NAME",
    "TOKENIZER_FILE",
    "TextSetup",
    "as_tokenizers",
    "load_tokenizer",
    "text_setup",
    "write_tokenizer",
]

TOKENIZER_FILE = "tokenizer.json"
MASK_NAME = "attention_mask"  # the name transformers (and optimum's ONNX configs) give the mask input
TYPE_IDS_NAME = "token_type_ids"  # BERT's segment ids: the tokenizer's for a text pair, 0 for one text (the default)
_IDS_NAME = "input_ids"


@dataclass(frozen=True)
class TextSetup:
    """What a tokenizer decides about the export: preprocessing and modalities of the text inputs."""

    tokenizer: Any  # a tokenizers.Tokenizer
    preprocess: dict[str, Any]  # every input's preprocessing, the text input's now from the tokenizer
    modalities: dict[str, str]  # the user's modalities plus the mask input as "other"
    defaults: dict[str, float]  # inputs filled when omitted: token_type_ids with 0 (one text per item)
    notes: tuple[str, ...] = ()  # what the export should tell: a max_length other than the example's


def as_tokenizers(tokenizer: Any) -> Any:
    """``tokenizer`` as a ``tokenizers.Tokenizer``: itself, or a transformers fast tokenizer's backend."""
    try:
        from tokenizers import Tokenizer
    except ImportError as e:
        raise ExportError("tokenizer= needs the `tokenizers` package: pip install 'mmedge[hf]'") from e
    if isinstance(tokenizer, Tokenizer):
        return tokenizer
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if isinstance(backend, Tokenizer):
        return backend
    raise ExportError(
        f"tokenizer must be a tokenizers.Tokenizer or a transformers fast tokenizer, found {type(tokenizer).__name__}; "
        "a slow (Python) transformers tokenizer cannot be saved as tokenizer.json: load it with use_fast=True"
    )


def load_tokenizer(path: str | Path) -> Any:
    """A ``tokenizers.Tokenizer`` from a ``tokenizer.json`` file, or from a folder holding one (what a fast
    tokenizer's ``save_pretrained`` writes; its ``tokenizer_config.json`` or ``special_tokens_map.json``
    names the padding token, which ``tokenizer.json`` often leaves out)."""
    given = Path(path)
    file = given / TOKENIZER_FILE if given.is_dir() else given
    if not file.is_file():
        raise ExportError(
            f"tokenizer {given}: no {TOKENIZER_FILE if given.is_dir() else 'such file'} there; give a tokenizer.json "
            "or the folder a fast tokenizer's save_pretrained(folder) wrote"
        )
    try:
        from tokenizers import Tokenizer
    except ImportError as e:
        raise ExportError("a tokenizer needs the `tokenizers` package: pip install 'mmedge[hf]'") from e
    with translated(ExportError, f"{file} is not a tokenizers JSON file (tokenizer.save / save_pretrained writes one)"):
        tok = Tokenizer.from_file(str(file))
    if tok.padding is None:
        for side in ("tokenizer_config.json", "special_tokens_map.json"):
            try:
                pad = json.loads((file.parent / side).read_text(encoding="utf-8")).get("pad_token")
            except (OSError, ValueError, AttributeError):
                continue
            pad = pad.get("content") if isinstance(pad, dict) else pad
            if isinstance(pad, str) and tok.token_to_id(pad) is not None:
                tok.enable_padding(pad_id=tok.token_to_id(pad), pad_token=pad)
                break
    return tok


def text_setup(
    tokenizer: Any, preprocess: Mapping[str, Any], modalities: Mapping[str, str], inputs: Mapping[str, Any]
) -> TextSetup:
    """The text input's TextPreprocess from ``tokenizer``; an ``attention_mask`` input becomes its mask."""
    tok = as_tokenizers(tokenizer)
    name = _text_input(preprocess, modalities, inputs)
    example = inputs[name]
    if example.dim() != 2 or example.is_floating_point():
        raise ExportError(
            f"text input {name!r} must be integer token ids of shape [batch, seq], found {example.dtype} "
            f"{list(example.shape)}"
        )
    given = preprocess.get(name)
    mask = MASK_NAME if MASK_NAME in inputs and name != MASK_NAME else None
    if mask is not None and tuple(inputs[mask].shape) != tuple(example.shape):
        raise ExportError(
            f"{mask!r} has shape {list(inputs[mask].shape)} but {name!r} has {list(example.shape)}; "
            "the mask must have one entry per token"
        )
    types = TYPE_IDS_NAME if TYPE_IDS_NAME in inputs and TYPE_IDS_NAME not in (name, *preprocess) else None
    if types is not None and tuple(inputs[types].shape) != tuple(example.shape):
        raise ExportError(
            f"{types!r} has shape {list(inputs[types].shape)} but {name!r} has {list(example.shape)}; "
            "segment ids must have one entry per token"
        )
    max_length = given.max_length if isinstance(given, TextPreprocess) else _max_length(tok, example)
    notes = ()
    if not isinstance(given, TextPreprocess) and max_length != example.shape[1]:
        notes = (
            f"input {name!r}: strings are padded or cut to {max_length} tokens, the tokenizer's truncation length "
            f"(the example has {example.shape[1]}); set [inputs.{name}.preprocess] max_length (or preprocess=) "
            "to change it",
        )
    spec = TextPreprocess(
        max_length=max_length,
        pad_id=_pad_id(tokenizer, tok, given, name),
        tokenizer_file=TOKENIZER_FILE,
        lowercase=False,  # the tokenizer's own normalizer decides
        mask_input=mask,
        type_ids_input=types,
    )
    extra = {mask: "other"} if mask is not None and mask not in modalities else {}
    if types is not None and types not in modalities:
        extra[types] = "other"
    return TextSetup(
        tokenizer=tok,
        preprocess={**preprocess, name: spec},
        modalities={**modalities, **extra},
        defaults={types: 0.0} if types is not None else {},
        notes=notes,
    )


def _text_input(preprocess: Mapping[str, Any], modalities: Mapping[str, str], inputs: Mapping[str, Any]) -> str:
    """The input that takes token ids: the one with TextPreprocess, else the text one (not the attention_mask),
    else input_ids."""
    named = [n for n, p in preprocess.items() if isinstance(p, TextPreprocess)]
    named = named or [n for n, m in modalities.items() if m == "text"]
    named = named or [n for n in inputs if n == _IDS_NAME]
    if len(named) > 1:  # the mask or segment ids said to be text too: they go with the ids
        named = [n for n in named if n not in (MASK_NAME, TYPE_IDS_NAME)] or named
    if len(named) != 1:
        found = f"candidates {named}" if named else "none"
        raise ExportError(
            f"tokenizer= needs exactly one text input to tokenize for ({found}); name it with "
            f"modalities={{'<input>': 'text'}} or call the ids argument {_IDS_NAME!r}"
        )
    return named[0]


def _max_length(tok: Any, example: Any) -> int:
    """The tokenizer's truncation length, else the example's sequence length (what was exported)."""
    truncation = tok.truncation
    return int(truncation["max_length"]) if truncation else int(example.shape[1])


def _pad_id(tokenizer: Any, tok: Any, given: Any, name: str) -> int:
    """The padding id: the tokenizer's when it knows one, else the given TextPreprocess's."""
    known = getattr(tokenizer, "pad_token_id", None)
    if known is None and tok.padding:
        known = tok.padding["pad_id"]
    if known is not None:
        return int(known)
    if isinstance(given, TextPreprocess):
        return given.pad_id
    raise ExportError(
        f"the tokenizer has no padding id for input {name!r}; call tokenizer.enable_padding(pad_id=..., "
        f"pad_token=...) or pass preprocess={{{name!r}: TextPreprocess(max_length=..., pad_id=...)}}"
    )


def write_tokenizer(directory: Path, tok: Any) -> Asset:
    """Save ``tok`` as the bundle's tokenizer.json and check that it loads back."""
    from tokenizers import Tokenizer

    path = directory / TOKENIZER_FILE
    with translated(ExportError, "the tokenizer cannot be saved as tokenizer.json"):
        tok.save(str(path))
        Tokenizer.from_file(str(path))
    return Asset(name="tokenizer", file=TOKENIZER_FILE)
