"""Strings and id lists → a padded ``(batch, length)`` int64 tensor, using the bundle's vocabulary.

Two tokenizers, chosen by the input's :class:`~mmedge.bundle.TextPreprocess`:

* ``vocab_file``: one token per line, line index = id. Text is lower-cased (if ``lowercase``),
  split on whitespace, and each word looked up; unknown words become ``unk_id`` (or an
  InputError when the bundle has none).
* ``tokenizer_file``: a Hugging Face ``tokenizers`` JSON file (needs the ``tokenizers`` package,
  ``pip install 'mmedge[text]'``), truncated to ``max_length`` by the tokenizer itself so special
  tokens survive.

Every item is padded with ``pad_id`` or cropped to one fixed length (the input's fixed sequence
dim, else ``max_length``) — never to the longest item of the batch — so an item's ids, and thus
the model's output for it, do not depend on what else is in the batch.

An item is a string, a sequence of ids, or a text pair — ``("question", "passage")`` or
``{"text": ..., "text_pair": ...}`` as transformers' pipelines take it — which a Hugging Face
tokenizer encodes as one sequence with its token type (segment) ids: 0 for the first text, 1 for
the second (BERT's ``token_type_ids``); other items' type ids are 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from mmedge.bundle import Bundle, InputSpec, TextPreprocess
from mmedge.bundle.vocab import text_asset, vocab_tokens
from mmedge.errors import BundleError, InputError
from mmedge.runtime.limits import DEFAULT_LIMITS, InputLimits

__all__ = [
    "Tokenizer",
    "Vocabulary",
    "attention_mask",
    "is_text",
    "load_tokenizer",
    "pad_ids",
    "sequence_length",
    "text_pair",
    "tokenize",
]

PAIR_KEYS = frozenset({"text", "text_pair"})  # a pair as transformers' pipelines take it
# A text is cut to this many characters per max_length token before the tokenizer sees it. `tokenizers`
# computes every overflowing window of a truncated text (a 1-MB string: 316 MB, 1 s), and truncates
# a pair by pairing every window of one text with every window of the other: memory grows with the
# product of their lengths (two 20,000-word texts: 4.6 GB, 6 s), so a small request could exhaust a
# server. The kept tokens come from the texts' starts, so the cut changes nothing unless a text's
# first characters hold fewer tokens than max_length (words averaging over 16 characters) or both
# texts of a pair are over the cap (then which is longer is judged on the cut texts).
CHARS_PER_TOKEN = 16


class Tokenizer(Protocol):
    """What the runtime needs from a tokenizer."""

    vocab_size: int

    def encode(self, text: str) -> list[int]: ...

    def encode_pair(self, text: str, pair: str) -> tuple[list[int], list[int]]:
        """The ids of a text pair as one sequence, and each token's type id (0 first text, 1 second)."""
        ...


@dataclass(frozen=True)
class Vocabulary:
    """A whitespace tokenizer over a one-token-per-line vocabulary file."""

    ids: dict[str, int]
    vocab_size: int
    unk_id: int | None
    lowercase: bool

    @classmethod
    def from_file(cls, path: Path, pre: TextPreprocess) -> Vocabulary:
        tokens = vocab_tokens(path)
        ids: dict[str, int] = {}
        for i, token in enumerate(tokens):
            ids.setdefault(token, i)  # a repeated token keeps its first id
        return cls(ids=ids, vocab_size=len(tokens), unk_id=pre.unk_id, lowercase=pre.lowercase)

    def encode(self, text: str) -> list[int]:
        words = (text.lower() if self.lowercase else text).split()
        unknown = [w for w in words if w not in self.ids]
        if unknown and self.unk_id is None:
            raise InputError(
                f"words not in the bundle's vocabulary and it has no unk_id: {unknown[:10]}; "
                "use only known words or pass token ids"
            )
        return [self.ids.get(w, self.unk_id) for w in words]

    def encode_pair(self, text: str, pair: str) -> tuple[list[int], list[int]]:
        raise InputError(
            "a text pair needs the bundle's Hugging Face tokenizer (its separator and segment ids); this "
            "bundle has a word vocabulary: pass one text per item, or export with --tokenizer"
        )


class _HFTokenizer:
    """A Hugging Face ``tokenizers`` tokenizer, truncating to the bundle's max_length."""

    def __init__(self, path: Path, max_length: int) -> None:
        try:
            from tokenizers import Tokenizer as HFTokenizer
        except ImportError as e:
            raise InputError(
                "this bundle tokenizes strings with a Hugging Face tokenizer, which needs the "
                "`tokenizers` package: pip install 'mmedge[text]' (or pass token ids instead of strings)"
            ) from e
        try:
            self._tokenizer = HFTokenizer.from_file(str(path))
        except Exception as e:
            raise BundleError(f"tokenizer file {path.name} cannot be read ({e}); re-export the bundle") from e
        self._tokenizer.enable_truncation(max_length)
        self._tokenizer.no_padding()
        self._chars = max_length * CHARS_PER_TOKEN
        self.vocab_size = self._tokenizer.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return list(self._tokenizer.encode(text[: self._chars]).ids)  # see CHARS_PER_TOKEN

    def encode_pair(self, text: str, pair: str) -> tuple[list[int], list[int]]:
        cut = self._chars  # see CHARS_PER_TOKEN
        encoding = self._tokenizer.encode(text[:cut], pair[:cut])  # truncated longest-first, as transformers
        return list(encoding.ids), list(encoding.type_ids)


def load_tokenizer(bundle: Bundle, spec: InputSpec) -> Tokenizer | None:
    """The tokenizer of a text input, or None if the bundle ships none (ids only).

    The file must be one of the bundle's assets, so load_bundle has checked its hash.
    """
    pre = spec.preprocess
    path = text_asset(bundle, spec) if isinstance(pre, TextPreprocess) else None
    if path is None:
        return None
    if pre.tokenizer_file:
        return _HFTokenizer(path, pre.max_length)
    return Vocabulary.from_file(path, pre)


def sequence_length(spec: InputSpec) -> int:
    """The length every item is padded/cropped to: a fixed seq dim if the graph has one, else max_length."""
    pre = spec.preprocess
    if len(spec.shape) == 2 and isinstance(spec.shape[1], int):
        return spec.shape[1]
    if isinstance(pre, TextPreprocess):
        return pre.max_length
    raise InputError(f"input {spec.name!r} has no text preprocessing in the bundle; pass an int64 tensor")


def text_pair(item: Any) -> tuple[str, str] | None:
    """The two texts of a pair item (a 2-tuple of strings, or a mapping of text and text_pair); else None."""
    if isinstance(item, tuple) and len(item) == 2 and all(isinstance(t, str) for t in item):
        return item
    if isinstance(item, Mapping) and set(item) == PAIR_KEYS and all(isinstance(t, str) for t in item.values()):
        return item["text"], item["text_pair"]
    return None


def is_text(item: Any) -> bool:
    """Whether an item needs the tokenizer: a string or a text pair."""
    return isinstance(item, str) or text_pair(item) is not None


def tokenize(
    items: Sequence[Any], tokenizer: Tokenizer | None, spec: InputSpec, limits: InputLimits = DEFAULT_LIMITS
) -> tuple[list[list[int]], list[list[int]]]:
    """Each item (a string, a text pair or a sequence of ids) as a list of ids, and its token type ids
    (the tokenizer's for a pair, zeros otherwise); empty texts are errors."""
    ids_out: list[list[int]] = []
    types_out: list[list[int]] = []
    for index, item in enumerate(items):
        pair = text_pair(item)
        if pair is not None or isinstance(item, str):
            if tokenizer is None:
                raise InputError(
                    f"input {spec.name!r}: got text but the bundle has no vocabulary or tokenizer; pass token ids"
                )
            ids, types = tokenizer.encode_pair(*pair) if pair is not None else (tokenizer.encode(item), None)
            if not ids:
                raise InputError(f"input {spec.name!r}: item {index} is empty text ({item!r}); pass at least one word")
        else:
            ids, types = _ids(item, spec, index, limits), None
        ids_out.append(ids)
        types_out.append(types if types is not None else [0] * len(ids))
    return ids_out, types_out


def _ids(item: Any, spec: InputSpec, index: int, limits: InputLimits) -> list[int]:
    what = f"input {spec.name!r}: item {index}"
    if isinstance(item, Mapping):
        raise InputError(
            f"{what} is a dict with keys {sorted(map(str, item))[:5]}; a text pair is "
            '{"text": ..., "text_pair": ...} (both strings)'
        )
    if isinstance(item, np.ndarray):
        limits.check_elements(what, item.size, f"array of shape {list(item.shape)}")
    elif isinstance(item, Sequence) and not isinstance(item, str | bytes):
        limits.check_elements(what, len(item), f"a sequence of {len(item)} ids")
    try:
        array = np.asarray(item)
    except (ValueError, TypeError, OverflowError) as e:  # ragged nesting, objects numpy cannot convert
        raise InputError(f"{what} must be a string or a 1-D sequence of int token ids ({e})") from e
    if array.ndim == 1 and array.size == 0:
        raise InputError(f"{what} has no token ids; pass at least one")
    if array.ndim != 1 or array.dtype.kind not in "iu":
        raise InputError(
            f"{what} must be a string or a 1-D sequence of int token ids, "
            f"found {type(item).__name__} of dtype {array.dtype} and shape {list(array.shape)}"
        )
    bounds = np.iinfo(spec.dtype) if np.dtype(spec.dtype).kind in "iu" else None
    if bounds is not None and (int(array.min()) < bounds.min or int(array.max()) > bounds.max):
        raise InputError(
            f"{what} has token ids from {int(array.min())} to {int(array.max())}, outside {spec.dtype}; "
            "ids must index the bundle's vocabulary"
        )
    return [int(i) for i in array]


def pad_ids(ids: Sequence[Sequence[int]], length: int, pad_id: int, dtype: str = "int64") -> np.ndarray:
    """Stack id lists into ``(len(ids), length)`` of ``dtype``, cropping or padding with ``pad_id``."""
    out = np.full((len(ids), length), pad_id, dtype=dtype)
    for row, seq in enumerate(ids):
        kept = seq[:length]
        out[row, : len(kept)] = kept
    return out


def attention_mask(ids: Sequence[Sequence[int]], length: int) -> np.ndarray:
    """int64 ``(len(ids), length)``: 1 where :func:`pad_ids` kept a token of the item, 0 on padding."""
    out = np.zeros((len(ids), length), dtype=np.int64)
    for row, seq in enumerate(ids):
        out[row, : min(len(seq), length)] = 1
    return out
