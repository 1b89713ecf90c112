"""Ray batch inference on a local 2-CPU cluster equals ``Pipeline.run`` on the same rows."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import ray
from PIL import Image
from tinybundle import tiny_inputs

from mmedge.errors import BundleError
from mmedge.integrations.ray import predict_dataset
from mmedge.runtime import Pipeline

pytestmark = [
    pytest.mark.slow,  # starting Ray takes 10-20 s
    pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*"),  # Ray Data warns about its own options
    # Ray Data leaves its per-dataset log file open; when the garbage collector closes it during a
    # test, Python reports the unclosed file there (one clean-clone run failed on it). "in.": the
    # filter syntax splits on colons.
    pytest.mark.filterwarnings(
        "ignore:Exception ignored in. <_io.FileIO name='[^']*/ray-data-dataset_:pytest.PytestUnraisableExceptionWarning"
    ),
]

RTOL, ATOL = 1e-5, 1e-6
ROWS = 10


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # no telemetry: tests stay on loopback
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


def by_id(dataset: object, *columns: str) -> dict[str, np.ndarray]:
    """``columns`` of every row, stacked in id order (Ray does not keep row order by default)."""
    rows = sorted(dataset.take_all(), key=lambda r: int(r["id"]))
    assert [int(r["id"]) for r in rows] == list(range(ROWS))
    return {k: np.stack([np.asarray(r[k]) for r in rows]) for k in columns}


def test_tensor_columns_equal_pipeline_run(local_ray: None, tiny_dir: Path, pipeline: Pipeline) -> None:
    inputs = tiny_inputs(batch=ROWS)
    items = [{"id": i, **{k: v[i] for k, v in inputs.items()}} for i in range(ROWS)]
    out = by_id(predict_dataset(ray.data.from_items(items), tiny_dir, batch_size=3, actors=2), "logits", "text")
    np.testing.assert_allclose(out["logits"], pipeline.run(inputs)["logits"], rtol=RTOL, atol=ATOL)
    np.testing.assert_array_equal(out["text"], inputs["text"])  # input columns are kept


def test_raw_columns_are_preprocessed_like_pipeline_run(
    local_ray: None, tiny_dir: Path, pipeline: Pipeline, tmp_path: Path
) -> None:
    rng = np.random.default_rng(3)
    paths = []
    for i in range(ROWS):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(rng.integers(0, 256, (6 + i, 9, 3), dtype=np.uint8)).save(paths[-1])
    waves = [rng.uniform(-1, 1, 50 + 20 * i).astype(np.float32) for i in range(ROWS)]  # ragged: raw items
    texts = [f"bright cat {'dog ' * i}" for i in range(ROWS)]
    items = [{"id": i, "caption": texts[i], "path": paths[i], "audio": waves[i]} for i in range(ROWS)]
    result = predict_dataset(
        ray.data.from_items(items), tiny_dir, columns={"text": "caption", "image": "path"}, batch_size=4, actors=2
    )
    expected = pipeline.run({"text": texts, "image": paths, "audio": waves})
    np.testing.assert_allclose(by_id(result, "logits")["logits"], expected["logits"], rtol=RTOL, atol=ATOL)


def test_encode_and_shipped_bundle(local_ray: None, tiny_dir: Path, pipeline: Pipeline, tmp_path: Path) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_dir, copy)
    images = tiny_inputs(batch=ROWS)["image"]
    items = [{"id": i, "image": images[i], "text": np.array([1, 2])} for i in range(ROWS)]
    result = predict_dataset(
        ray.data.from_items(items), copy, encode="image", ship_bundle=True, batch_size=5, output_prefix="emb_"
    )
    shutil.rmtree(copy)  # the actors start only now (lazy): they must use the shipped copy
    out = by_id(result, "emb_image_features")
    np.testing.assert_allclose(
        out["emb_image_features"], pipeline.encode("image", images)["image_features"], rtol=RTOL, atol=ATOL
    )


def test_missing_column_is_a_clear_error(local_ray: None, tiny_dir: Path) -> None:
    items = [{"id": i, "words": "cat"} for i in range(2)]
    result = predict_dataset(ray.data.from_items(items), tiny_dir, columns={"text": "caption"})
    with pytest.raises(Exception, match=r"mapped columns are missing: 'text' → 'caption'"):
        result.take_all()


def test_broken_bundle_fails_in_the_driver(local_ray: None, tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="does not exist"):
        predict_dataset(ray.data.from_items([{"x": 1}]), tmp_path / "nope")
