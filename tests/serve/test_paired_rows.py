"""A model whose output pairs every row with every other (CLIP's image-text similarity matrix,
``logits_per_image``) is exported with a ``(batch, batch)`` output. Its rows are not independent,
so neither ``mmedge serve`` nor the one OpenVINO graph may cut or merge a call along the batch:
concurrent requests merged into one call would each get columns scored against the other
requests' texts. Each request gets its own ``(n, n)`` matrix, as the Pipeline computes it alone."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from tinymodels import Similarity
from torch import nn

from mmedge.bundle import has_batch_axis, load_bundle
from mmedge.export import export_model
from mmedge.runtime import Pipeline
from mmedge.serve import BatchPolicy, ServeOptions, create_app
from mmedge.serve.app import batching_problem


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    example = {"text": torch.randint(0, 50, (2, 6)), "image": torch.randn(2, 3, 16, 16)}
    out = tmp_path_factory.mktemp("paired") / "b"
    export_model(Similarity().eval(), example, modalities={"text": "other"}, out=out, dynamic=True)
    return out


def _request(n: int, seed: int) -> dict[str, list]:
    rng = np.random.default_rng(seed)
    return {"text": rng.integers(0, 50, (n, 6)).tolist(), "image": rng.normal(size=(n, 3, 16, 16)).tolist()}


def test_the_similarity_matrix_is_exported_with_paired_rows(bundle: Path) -> None:
    manifest = load_bundle(bundle).manifest
    (head,) = [c for c in manifest.components if c.name == "fusion_head"]
    assert head.outputs[0].shape == ("batch", "batch")
    assert not has_batch_axis(head.outputs[0].shape)
    assert "fusion_head.logits ['batch', 'batch']" in batching_problem(manifest)


def test_concurrent_requests_each_get_their_own_matrix(bundle: Path, serve_app: Callable) -> None:
    requests = [_request(1 + i % 3, seed=i) for i in range(6)]
    with Pipeline(bundle, "cpu", threads=1) as pipeline:
        alone = [
            pipeline.run({k: np.asarray(v, dtype=pipeline.manifest.input(k).dtype) for k, v in r.items()})
            for r in requests
        ]
        options = ServeOptions(batch=BatchPolicy(max_batch=32, max_wait_ms=200))
        with serve_app(create_app(pipeline, options)) as url, ThreadPoolExecutor(6) as pool:
            post = lambda body: httpx.post(f"{url}/v1/predict", json={"inputs": body}, timeout=30)  # noqa: E731
            responses = list(pool.map(post, requests))
            summary = httpx.get(f"{url}/v1/model").json()
    assert summary["batching"]["enabled"] is False
    for request, response, want in zip(requests, responses, alone, strict=True):
        assert response.status_code == 200, response.text
        got = np.asarray(response.json()["outputs"]["logits"])
        n = len(request["text"])
        assert got.shape == (n, n)
        np.testing.assert_allclose(got, want["logits"], atol=1e-5)


class SoundSimilarity(nn.Module):
    """Text against clips of any length (a dynamic time axis, pooled)."""

    def __init__(self) -> None:
        super().__init__()
        self.text_encoder = nn.Sequential(nn.Embedding(50, 16), nn.Flatten(), nn.Linear(16 * 6, 8))
        self.audio_encoder = nn.Sequential(nn.Conv1d(1, 8, 400, 160), nn.AdaptiveAvgPool1d(1), nn.Flatten())

    def forward(self, text: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        return self.audio_encoder(audio[:, None]) @ self.text_encoder(text).T


def test_clips_that_keep_their_lengths_are_not_run_apart_into_one_matrix(tmp_path: Path) -> None:
    from mmedge.bundle import AudioPreprocess
    from mmedge.errors import InputError

    example = {"text": torch.randint(0, 50, (2, 6)), "audio": torch.randn(2, 16000)}
    keep = {"audio": AudioPreprocess(16000, 1.0, pad=False)}
    out = tmp_path / "b"
    export_model(SoundSimilarity().eval(), example, modalities={"text": "other"}, preprocess=keep, out=out)
    text = np.zeros((2, 6), np.int64)
    with Pipeline(out, "cpu", threads=1) as pipeline:
        same = pipeline.run({"text": text, "audio": [np.zeros(8000, np.float32)] * 2})
        assert same["logits"].shape == (2, 2)  # clips of one length run together
        with pytest.raises(InputError, match=r"pair every row with every other"):
            pipeline.run({"text": text, "audio": [np.zeros(8000, np.float32), np.zeros(12000, np.float32)]})


def test_one_image_against_several_texts_says_how(bundle: Path) -> None:
    from mmedge.errors import InputError

    texts = np.zeros((3, 6), np.int64)
    with Pipeline(bundle, "cpu", threads=1) as pipeline:
        with pytest.raises(InputError, match=r"different batch sizes .*encode each side with Pipeline\.encode"):
            pipeline.run({"text": texts, "image": np.zeros((1, 3, 16, 16), np.float32)})
        image = pipeline.encode("image_encoder", np.zeros((1, 3, 16, 16), np.float32))
        text = pipeline.encode("text_encoder", texts)
    assert [a.shape for a in image.values()] == [(1, 8)]
    assert [a.shape for a in text.values()] == [(3, 8)]
