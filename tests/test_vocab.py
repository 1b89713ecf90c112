"""mmedge.bundle.vocab: a text input's id bound read from its vocabulary asset, without a tokenizer."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from mmedge.bundle import Asset, Bundle, TextPreprocess, load_bundle
from mmedge.bundle.vocab import text_asset, vocab_size
from mmedge.errors import BundleError


def _bundle(
    tiny_bundle: Path, tmp_path: Path, files: dict[str, str], pre: TextPreprocess, listed: bool = True
) -> Bundle:
    """The tiny bundle's manifest with text preprocessing ``pre``, over a folder holding ``files``."""
    manifest = load_bundle(tiny_bundle).manifest
    inputs = tuple(dataclasses.replace(i, preprocess=pre) if i.name == "text" else i for i in manifest.inputs)
    assets = tuple(Asset(name, name) for name in files) if listed else ()
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    return Bundle(tmp_path, dataclasses.replace(manifest, inputs=inputs, assets=assets), check_hashes=False)


WORDLEVEL = {"model": {"type": "WordLevel", "vocab": {"<pad>": 0, "<unk>": 1, "cat": 2}}, "added_tokens": []}
UNIGRAM = {"model": {"type": "Unigram", "vocab": [["<unk>", 0.0], ["a", -1.0]]}, "added_tokens": [{"id": 5}]}


@pytest.mark.parametrize(
    ("files", "pre", "expected"),
    [
        pytest.param({"vocab.txt": "<pad>\n<unk>\ncat\ndog\n"}, {"vocab_file": "vocab.txt"}, 4, id="vocab-file"),
        pytest.param(
            {"tokenizer.json": json.dumps(WORDLEVEL)}, {"tokenizer_file": "tokenizer.json"}, 3, id="wordlevel"
        ),
        pytest.param({"tokenizer.json": json.dumps(UNIGRAM)}, {"tokenizer_file": "tokenizer.json"}, 6, id="added-ids"),
        pytest.param({}, {}, None, id="ids-only"),
    ],
)
def test_vocab_size(tiny_bundle: Path, tmp_path: Path, files: dict[str, str], pre: dict, expected: int | None) -> None:
    bundle = _bundle(tiny_bundle, tmp_path, files, TextPreprocess(max_length=4, **pre))
    assert vocab_size(bundle, bundle.manifest.input("text")) == expected


def test_matches_the_hugging_face_tokenizer(tiny_bundle: Path, tmp_path: Path) -> None:
    tokenizers = pytest.importorskip("tokenizers")
    hf = tokenizers.Tokenizer(tokenizers.models.WordLevel({"<pad>": 0, "<unk>": 1, "cat": 2}, unk_token="<unk>"))
    hf.add_special_tokens(["<bos>", "<eos>"])
    pre = TextPreprocess(max_length=4, tokenizer_file="tokenizer.json")
    bundle = _bundle(tiny_bundle, tmp_path, {"tokenizer.json": hf.to_str()}, pre)
    assert vocab_size(bundle, bundle.manifest.input("text")) == hf.get_vocab_size() == 5


def test_an_unlisted_file_is_refused(tiny_bundle: Path, tmp_path: Path) -> None:
    pre = TextPreprocess(max_length=4, vocab_file="vocab.txt")
    bundle = _bundle(tiny_bundle, tmp_path, {"vocab.txt": "a\n"}, pre, listed=False)
    with pytest.raises(BundleError, match=r"'vocab\.txt' is not listed in the manifest's assets"):
        text_asset(bundle, bundle.manifest.input("text"))


def test_a_broken_tokenizer_file_is_a_bundle_error(tiny_bundle: Path, tmp_path: Path) -> None:
    pre = TextPreprocess(max_length=4, tokenizer_file="tokenizer.json")
    bundle = _bundle(tiny_bundle, tmp_path, {"tokenizer.json": '{"model": {}}'}, pre)
    with pytest.raises(BundleError, match=r"tokenizer file tokenizer\.json cannot be read"):
        vocab_size(bundle, bundle.manifest.input("text"))
