"""The one OpenVINO graph kept composed and compiled in a cache folder: a later Pipeline reads it
without composing, gives the same outputs, never reads a stale or damaged entry, and a cache that
cannot be written costs start-up only."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from tinybundle import tiny_inputs

from mmedge import openvino_cache, openvino_graph
from mmedge.bundle import load_bundle
from mmedge.errors import ConfigError
from mmedge.openvino_cache import GRAPH_PREFIX, GraphCache
from mmedge.runtime import Pipeline

pytest.importorskip("openvino")

ALL = ("text_encoder", "image_encoder", "audio_encoder", "fusion_head")


def _not_composed(*_args: object, **_kwargs: object) -> None:
    raise AssertionError("composed although the cache holds the graph")


def _graphs(cache: Path) -> list[Path]:
    return sorted(cache.glob(f"{GRAPH_PREFIX}*.xml"))


def test_a_second_pipeline_reads_the_graph_from_the_cache(
    tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache, x = tmp_path / "cache", tiny_inputs(batch=2, seed=3)
    with Pipeline(tiny_bundle, "cpu") as split:
        expected = split.run(x)["logits"]
    with Pipeline(tiny_bundle, "openvino", cache_dir=cache) as first:
        assert first.whole_graph == ALL
        np.testing.assert_allclose(first.run(x)["logits"], expected, rtol=1e-4, atol=1e-5)
    graphs = _graphs(cache)
    assert len(graphs) == 2  # the example shape compiled at open, then the call's batch of 2
    assert all(g.with_suffix(".bin").is_file() for g in graphs)
    assert list(cache.glob("*.blob"))  # OpenVINO's compiled models beside them
    assert not list(cache.glob(".scratch-*"))

    monkeypatch.setattr(openvino_graph, "_compose", _not_composed)
    with Pipeline(tiny_bundle, "openvino", cache_dir=cache) as second:
        assert second.whole_graph == ALL
        np.testing.assert_allclose(second.run(x)["logits"], expected, rtol=1e-4, atol=1e-5)
    assert _graphs(cache) == graphs


def test_shapes_past_the_cache_still_match(tiny_bundle: Path, tmp_path: Path) -> None:
    with (
        Pipeline(tiny_bundle, "cpu") as split,
        Pipeline(tiny_bundle, "openvino", cache_dir=tmp_path / "cache", lazy=True, max_graph_shapes=2) as one,
    ):
        for batch, seq in ((1, 6), (3, 6), (2, 9)):  # the third is past max_graph_shapes: run split, not cached
            x = tiny_inputs(batch=batch, seq=seq, seed=batch + seq)
            np.testing.assert_allclose(one.run(x)["logits"], split.run(x)["logits"], rtol=1e-4, atol=1e-5)
    assert len(_graphs(tmp_path / "cache")) == 2


def test_a_changed_file_is_another_entry(tiny_bundle: Path, tmp_path: Path) -> None:
    bundle = load_bundle(tiny_bundle)
    files = {c.name: bundle.path / c.file for c in bundle.manifest.components}
    signature = ((1, 6), (1, 3, 8, 8), (1, 160))
    before = GraphCache(tmp_path, bundle.manifest, files, ALL).path(signature)
    assert GraphCache(tmp_path, bundle.manifest, files, ALL).path(signature) == before
    assert GraphCache(tmp_path, bundle.manifest, files, ALL).path(((2, 6), (2, 3, 8, 8), (2, 160))) != before
    with files["fusion_head"].open("ab") as f:  # any byte of any component file
        f.write(b"\0")
    assert GraphCache(tmp_path, bundle.manifest, files, ALL).path(signature) != before


def test_a_damaged_entry_is_rebuilt(tiny_bundle: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache, x = tmp_path / "cache", tiny_inputs(batch=1, seed=4)
    with Pipeline(tiny_bundle, "openvino", cache_dir=cache, lazy=True) as first:
        expected = first.run(x)["logits"]
    (graph,) = _graphs(cache)
    graph.write_text("<net>truncated", encoding="utf-8")
    with (
        caplog.at_level(logging.WARNING, logger="mmedge.runtime"),
        Pipeline(tiny_bundle, "openvino", cache_dir=cache, lazy=True) as second,
    ):
        assert second.whole_graph == ALL
        np.testing.assert_allclose(second.run(x)["logits"], expected, rtol=1e-5, atol=1e-6)
    assert "cannot be compiled" in caplog.text
    assert graph.read_text(encoding="utf-8").startswith("<?xml")  # rewritten whole


def test_a_cache_that_cannot_be_written_costs_only_start_up(
    tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import openvino as ov

    def full_disk(*_args: object, **_kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ov, "save_model", full_disk)
    cache = tmp_path / "cache"
    with (
        caplog.at_level(logging.WARNING, logger="mmedge.runtime"),
        Pipeline(tiny_bundle, "openvino", cache_dir=cache) as p,
    ):
        assert p.whole_graph == ALL
        assert p.run(tiny_inputs())["logits"].shape == (2, 3)
    assert "not caching the OpenVINO graph" in caplog.text
    assert _graphs(cache) == []
    assert not list(cache.glob(".scratch-*"))


def test_cache_dir_must_be_a_folder_it_can_create(tiny_bundle: Path, tmp_path: Path) -> None:
    taken = tmp_path / "a-file"
    taken.write_text("x", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"cache_dir .* cannot be created"):
        Pipeline(tiny_bundle, "openvino", cache_dir=taken / "cache")
    with pytest.raises(ConfigError, match="cache_dir must be a directory path or None"):
        Pipeline(tiny_bundle, "openvino", cache_dir=3)  # type: ignore[arg-type]


def test_a_component_on_openvino_alone_is_cached_too(tiny_bundle: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with Pipeline(tiny_bundle, {"image_encoder": "openvino", "*": "cpu"}, cache_dir=cache) as p:
        assert p.whole_graph == ()
        assert p.run(tiny_inputs())["logits"].shape == (2, 3)
    assert list(cache.glob("*.blob"))
    assert _graphs(cache) == []


def test_recorded_hashes_name_the_same_entry_without_reading_the_files(
    tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bundle loaded with hash checks gives the cache the manifest's (checked) hashes; they name
    the entry that hashing the files names, so check_hashes=False finds the same one."""
    bundle = load_bundle(tiny_bundle)
    files = {c: bundle.openvino_path(c) for c in ALL}
    signature = ((1, 6), (1, 3, 8, 8), (1, 160))
    hashed = GraphCache(tmp_path, bundle.manifest, files, ALL).path(signature)
    recorded = {c: bundle.openvino_sha256(c) for c in ALL}
    assert GraphCache(tmp_path, bundle.manifest, files, ALL, recorded).path(signature) == hashed

    def no_read(path: object) -> str:
        raise AssertionError(f"hashed {path} again")

    monkeypatch.setattr(openvino_cache, "sha256_file", no_read)
    with Pipeline(tiny_bundle, "openvino", cache_dir=tmp_path / "cache") as p:
        assert p.whole_graph == ALL
    assert len(_graphs(tmp_path / "cache")) == 1
