"""A text input's vocabulary as the bundle ships it: which asset, its tokens, how many ids it has.

Every stage that makes token ids up (mobile's probe inputs, the runtime's checks, the bench's
synthetic inputs) needs the bound ``0 <= id < vocab_size`` of the embedding table, and reads it
here from the asset itself, without loading a tokenizer (a ``tokenizer.json`` would otherwise need
the optional ``tokenizers`` package).
"""

from __future__ import annotations

import json
from pathlib import Path

from mmedge.bundle._types import Bundle, InputSpec, TextPreprocess
from mmedge.errors import BundleError

__all__ = ["text_asset", "vocab_size", "vocab_tokens"]


def text_asset(bundle: Bundle, spec: InputSpec) -> Path | None:
    """The vocabulary or ``tokenizer.json`` of text input ``spec``; None if the bundle ships neither.

    The file must be one of the bundle's assets, so that load_bundle has checked its hash.
    """
    pre = spec.preprocess
    rel = (pre.tokenizer_file or pre.vocab_file) if isinstance(pre, TextPreprocess) else None
    if not rel:
        return None
    if rel not in {a.file for a in bundle.manifest.assets}:
        raise BundleError(
            f"input {spec.name!r}: tokenizer file {rel!r} is not listed in the manifest's assets, so its "
            "integrity cannot be checked; re-export the bundle"
        )
    return bundle.path / rel


def vocab_tokens(path: Path) -> list[str]:
    """The tokens of a one-token-per-line vocabulary file; line index = id."""
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]


def vocab_size(bundle: Bundle, spec: InputSpec) -> int | None:
    """How many token ids text input ``spec`` takes (the highest id + 1); None without a vocabulary."""
    path = text_asset(bundle, spec)
    if path is None:
        return None
    if isinstance(spec.preprocess, TextPreprocess) and spec.preprocess.tokenizer_file:
        return _tokenizer_json_size(path)
    return len(vocab_tokens(path))


def _tokenizer_json_size(path: Path) -> int:
    """Highest id + 1 of a Hugging Face ``tokenizer.json``: its model's vocabulary and added tokens."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        vocab = data["model"]["vocab"]
        # WordPiece/BPE/WordLevel map token -> id; Unigram lists [token, score] pairs in id order.
        ids = list(vocab.values()) if isinstance(vocab, dict) else list(range(len(vocab)))
        ids += [int(t["id"]) for t in data.get("added_tokens") or ()]
        return max(ids) + 1 if ids else 0
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise BundleError(f"tokenizer file {path.name} cannot be read ({e}); re-export the bundle") from e
