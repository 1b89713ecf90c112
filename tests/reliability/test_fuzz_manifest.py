"""Fuzzing manifest.json: any edit is refused at load with BundleError, or gives a bundle that works.

Each example replaces one node of the tiny bundle's manifest (anywhere in the tree) by random
JSON — wrong types, NaN/Infinity, huge or negative numbers, odd unicode, nested containers — or
deletes it, then loads the bundle. A manifest that still loads must build a Pipeline and run
raw inputs (strings, pixels, waves) to a result or a typed mmedge error: an edit can never turn
into a raw exception later, in the runtime.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from reliability._strategies import FUZZ

from mmedge.bundle import MANIFEST_NAME, load_bundle
from mmedge.errors import BundleError, MMEdgeError
from mmedge.runtime import Audio, Pipeline

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.sampled_from([0, 1, -1, 8, 2**31, 10**12])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["", "image", "text", "int64", "float32", "batch", "../x.onnx", "/etc/passwd", "vocab.txt"])
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)


@pytest.fixture(scope="module")
def scratch(shared_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the tiny bundle whose manifest each example overwrites."""
    out = tmp_path_factory.mktemp("manifest-fuzz") / "tiny"
    shutil.copytree(shared_bundle, out)
    return out


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (sequence of keys and indexes) to a node of a JSON tree."""
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*prefix, index))
    return found


def _edited(original: dict, path: tuple, value: Any, delete: bool) -> Any:
    data = json.loads(json.dumps(original))
    if not path:
        return value
    parent = data
    for key in path[:-1]:
        parent = parent[key]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return data


RAW = {
    "text": ["bright dog", "sea"],
    "image": [np.full((9, 7, 3), 200, np.uint8), np.zeros((4, 4), np.uint8)],
    "audio": [Audio(np.zeros(300, np.float32), 8000), np.ones(50, np.float32) * 0.1],
}


@FUZZ  # most edits are refused in ~1 ms; a loadable one builds four sessions (~20 ms)
@given(data=st.data())
def test_any_manifest_edit_is_refused_or_runs(shared_bundle: Path, scratch: Path, data: st.DataObject) -> None:
    original = json.loads((shared_bundle / MANIFEST_NAME).read_text())
    path = data.draw(st.sampled_from(_paths(original)), label="path")
    delete = bool(path) and data.draw(st.integers(0, 4), label="delete") == 0
    value = None if delete else data.draw(json_values, label="value")
    (scratch / MANIFEST_NAME).write_text(json.dumps(_edited(original, path, value, delete)), encoding="utf-8")
    try:
        bundle = load_bundle(scratch)
    except BundleError as e:
        message = str(e)
    else:
        message = ""
    if message:
        assert "manifest" in message or "bundle" in message
        return
    try:
        with Pipeline(bundle, "cpu", threads=1) as pipe:
            result = pipe.run(RAW)
    except MMEdgeError:  # a recipe the inputs cannot follow, say; typed is what matters here
        return
    for name, value in result.items():
        assert isinstance(name, str)
        assert np.isfinite(value).all()
        assert value.shape[0] == 2
