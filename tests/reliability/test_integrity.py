"""Bundle integrity beyond tests/test_bundle.py: every file, every kind of bad manifest, and the Pipeline's door.

A tampered or malformed bundle is refused when it is loaded — by ``load_bundle`` and by
``Pipeline(path)`` alike — with a BundleError naming what is wrong, before onnxruntime is ever
given a file. tests/test_bundle.py covers one changed byte, ``..``/absolute paths, a symlinked
file, version 99, IO mismatches and the manifest size limit; this adds the rest.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mmedge.bundle import MANIFEST_NAME, load_bundle
from mmedge.errors import BundleError
from mmedge.runtime import Pipeline

FILES = ["text_encoder.onnx", "image_encoder.onnx", "audio_encoder.onnx", "fusion_head.onnx", "vocab.txt"]


def _refused(bundle: Path, message: str) -> None:
    """Both doors refuse the bundle with a BundleError matching ``message``."""
    with pytest.raises(BundleError, match=message):
        load_bundle(bundle)
    with pytest.raises(BundleError, match=message):
        Pipeline(bundle, "cpu")


@pytest.mark.parametrize("name", FILES)
@pytest.mark.parametrize("where", [0.0, 0.5, 1.0], ids=["first-byte", "middle-byte", "last-byte"])
def test_a_changed_byte_in_any_file_is_refused(tiny_bundle: Path, name: str, where: float) -> None:
    path = tiny_bundle / name
    data = bytearray(path.read_bytes())
    data[min(int(len(data) * where), len(data) - 1)] ^= 0x01
    path.write_bytes(bytes(data))
    _refused(tiny_bundle, rf"{re.escape(name)} does not match its sha256")


@pytest.mark.parametrize("name", FILES)
def test_a_missing_or_replaced_file_is_refused(tiny_bundle: Path, name: str) -> None:
    (tiny_bundle / name).unlink()
    (tiny_bundle / name).mkdir()  # a directory where the file was
    _refused(tiny_bundle, rf"file {re.escape(name)} is missing")


def test_a_file_reached_through_a_linked_folder_is_refused(tiny_bundle: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (tiny_bundle / "audio_encoder.onnx").rename(outside / "audio_encoder.onnx")
    os.symlink(outside, tiny_bundle / "models")
    _edit(tiny_bundle, lambda d: d["components"][2].update(file="models/audio_encoder.onnx"))
    _refused(tiny_bundle, "leaves the bundle directory \\(through a linked folder\\)")


def test_a_symlinked_manifest_is_refused(tiny_bundle: Path, tmp_path: Path) -> None:
    (tiny_bundle / MANIFEST_NAME).rename(tmp_path / "elsewhere.json")
    os.symlink(tmp_path / "elsewhere.json", tiny_bundle / MANIFEST_NAME)
    _refused(tiny_bundle, "is a symlink")


def test_a_linked_bundle_directory_loads(tiny_bundle: Path, tmp_path: Path) -> None:
    """Only links inside a bundle are refused; the bundle folder itself may be reached through one."""
    os.symlink(tiny_bundle, tmp_path / "current")
    assert load_bundle(tmp_path / "current").manifest.model.name == "tiny"


def _edit(bundle: Path, edit: Callable[[Any], Any]) -> None:
    path = bundle / MANIFEST_NAME
    data = json.loads(path.read_text())
    replaced = edit(data)
    path.write_text(json.dumps(data if replaced is None else replaced))


def _set(*path_and_value: Any) -> Callable[[Any], None]:
    *path, value = path_and_value

    def edit(data: Any) -> None:
        for key in path[:-1]:
            data = data[key]
        data[path[-1]] = value

    return edit


def _duplicate_component(data: dict) -> None:
    data["components"].append(dict(data["components"][0]))


MANIFEST_EDITS = [
    pytest.param(lambda d: [d], "must be a JSON object, found list", id="a-list"),
    pytest.param(lambda d: "manifest", "must be a JSON object, found str", id="a-string"),
    pytest.param(_set("format_version", 0), "unsupported bundle format_version 0", id="version-0"),
    pytest.param(_set("format_version", "1"), "unsupported bundle format_version '1'", id="version-string"),
    pytest.param(lambda d: d.pop("format_version") and None, "unsupported bundle format_version None", id="no-version"),
    pytest.param(_duplicate_component, "component 'text_encoder' is listed twice", id="duplicate-component"),
    pytest.param(
        _set("assets", 0, "file", "../vocab.txt"), "asset 'vocab': path '../vocab.txt' leaves", id="asset-escapes"
    ),
    pytest.param(_set("components", 1, "file", 1), r"components\[1\]\.file is int, expected str", id="file-int"),
    pytest.param(_set("components", 1, "name", ["a"]), r"components\[1\]\.name is list, expected str", id="name-list"),
    pytest.param(_set("inputs", 0, "all"), "malformed \\(AttributeError", id="input-not-an-object"),
    pytest.param(_set("wiring", 2, "target", {}), r"wiring\[2\]\.target is dict, expected str", id="target-dict"),
    pytest.param(_set("inputs", 1, "shape", 1, 3.5), "shape dims must be ints or names", id="dim-float"),
    pytest.param(
        _set("inputs", 1, "preprocess", "mean", "abc"), r"preprocess\.mean is str, expected tuple", id="mean-str"
    ),
    pytest.param(
        _set("inputs", 1, "dtype", "int64"),
        "input 'image' is int64 \\['batch', 3, 8, 8\\] but feeds image_encoder.image, float32",
        id="raw-input-unlike-its-encoder",
    ),
    pytest.param(_set("inputs", 1, "preprocess", "size", [0, 8]), r"size \(0, 8\) is out of range", id="size-0"),
    pytest.param(
        _set("inputs", 1, "preprocess", "size", [16, 8]), "size \\(16, 8\\) differs from the shape", id="size"
    ),
    pytest.param(_set("inputs", 1, "preprocess", "std", [1, 0, 1]), r"\|std\| >= 1e-6", id="std-0"),
    pytest.param(_set("inputs", 1, "preprocess", "mean", [0.5, 0.5]), "mean/std must be equally long", id="mean-len"),
    pytest.param(_set("inputs", 1, "preprocess", "scale", 1e300), r"scale must be in \(0, 1e6\]", id="scale"),
    pytest.param(_set("inputs", 1, "preprocess", "layout", "CHW"), "layout 'CHW' is not", id="layout"),
    pytest.param(_set("inputs", 2, "preprocess", "sample_rate", -1), "sample_rate -1 Hz is out of range", id="rate"),
    pytest.param(_set("inputs", 2, "preprocess", "max_seconds", 1e12), "gives no usable length", id="seconds"),
    pytest.param(_set("inputs", 0, "preprocess", "max_length", 0), "max_length 0 is out of range", id="max-length"),
    pytest.param(_set("inputs", 0, "preprocess", "pad_id", 2**70), "pad_id and unk_id must be token ids", id="pad-id"),
    pytest.param(_set("inputs", 2, "shape", 1, 2**31), "is out of range", id="fixed-dim-too-large"),
    pytest.param(_set("inputs", 2, "example_shape", [1, -160]), "is out of range", id="negative-example"),
]


@pytest.mark.parametrize(("edit", "message"), MANIFEST_EDITS)
def test_an_edited_manifest_is_refused(tiny_bundle: Path, edit: Callable[[Any], Any], message: str) -> None:
    _edit(tiny_bundle, edit)
    _refused(tiny_bundle, message)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("[" * 100_000 + "]" * 100_000, "RecursionError", id="deep-nesting"),
        pytest.param('{"format_version": 1' + "0" * 5000 + "}", "not valid JSON", id="5000-digit-number"),
        pytest.param("\udcff", "not valid JSON", id="not-utf8"),
        pytest.param('{"format_version": NaN}', "format_version nan", id="nan"),
    ],
)
def test_an_unparseable_manifest_is_refused(tiny_bundle: Path, text: str, message: str) -> None:
    (tiny_bundle / MANIFEST_NAME).write_bytes(text.encode("utf-8", "surrogateescape"))
    _refused(tiny_bundle, message)


def test_an_unreadable_onnx_file_is_a_bundle_error_at_the_pipeline_too(tiny_bundle: Path) -> None:
    """Even with hash checks off, onnxruntime never sees a file that is not ONNX."""
    (tiny_bundle / "fusion_head.onnx").write_bytes(b"\x08\x07garbage")
    with pytest.raises(BundleError, match=r"fusion_head\.onnx is not a readable ONNX file"):
        Pipeline(tiny_bundle, "cpu", check_hashes=False)
