"""A model whose output pairs every row with every other (CLIP's image-text similarity matrix,
``logits_per_image``) is exported with each modality counting its own items: an
``(image_batch, other_batch)`` output, so one photo is scored against several label texts in one
call. Its rows are not independent, so neither ``mmedge serve`` nor the one OpenVINO graph may cut
or merge a call along them: concurrent requests merged into one call would each get columns scored
against the other requests' texts. Each request gets its own matrix, as the Pipeline computes it
alone. A model that refuses different numbers of items keeps one shared batch, and the runtime's
error says how to score one item against several."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image
from tinymodels import Similarity
from torch import nn

from mmedge.bundle import has_batch_axis, load_bundle
from mmedge.export import export_model
from mmedge.runtime import Pipeline
from mmedge.serve import BatchPolicy, ServeOptions, create_app
from mmedge.serve.app import batching_problem

EXAMPLE = {
    "text": torch.randint(0, 50, (2, 6), generator=torch.Generator().manual_seed(0)),
    "image": torch.zeros(2, 3, 16, 16),
}


def _model() -> Similarity:
    torch.manual_seed(0)
    return Similarity().eval()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("paired") / "b"
    result = export_model(_model(), EXAMPLE, modalities={"text": "other"}, out=out, dynamic=True)
    assert any("each modality takes its own number of items" in w for w in result.warnings)
    return out


def _request(n: int, seed: int) -> dict[str, list]:
    rng = np.random.default_rng(seed)
    return {"text": rng.integers(0, 50, (n, 6)).tolist(), "image": rng.normal(size=(n, 3, 16, 16)).tolist()}


def test_the_similarity_matrix_is_exported_with_each_modality_counting_its_items(bundle: Path) -> None:
    manifest = load_bundle(bundle).manifest
    assert {i.name: i.shape[0] for i in manifest.inputs} == {"text": "other_batch", "image": "image_batch"}
    (head,) = [c for c in manifest.components if c.name == "fusion_head"]
    assert head.outputs[0].shape == ("image_batch", "other_batch")
    assert not has_batch_axis(head.outputs[0].shape)
    assert manifest.paired_outputs() == ("logits",)
    assert "fusion_head.logits ['image_batch', 'other_batch']" in batching_problem(manifest)


def test_encoders_counting_items_apart_run_in_turn_with_every_thread(bundle: Path) -> None:
    """A thread plan probed at one item each would starve the text encoder of a call scoring one photo
    against 20 labels (a 22 M-parameter CLIP: 134-147 ms planned, 83-94 in turn; benchmarks/NOTES.md)."""
    with Pipeline(bundle, "cpu", threads=2) as pipeline:
        assert pipeline.schedule.concurrent == frozenset()
        assert set(pipeline.schedule.threads.values()) == {2}


def test_one_image_is_scored_against_several_texts(bundle: Path, serve_app: Callable) -> None:
    model = _model()
    texts, image = torch.randint(0, 50, (5, 6)), torch.randn(1, 3, 16, 16)
    want = model(texts, image).detach().numpy()
    with Pipeline(bundle, "cpu", threads=1) as pipeline:
        got = pipeline.run({"text": texts.numpy(), "image": image.numpy()})["logits"]
        with serve_app(create_app(pipeline, ServeOptions())) as url:
            body = {"inputs": {"text": texts.tolist(), "image": image.tolist()}}
            response = httpx.post(f"{url}/v1/predict", json=body, timeout=30)
    assert got.shape == (1, 5)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(np.asarray(response.json()["outputs"]["logits"]), want, atol=1e-5)


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


def test_clips_that_keep_their_lengths_are_each_scored_against_every_text(tmp_path: Path) -> None:
    """Clips of different lengths run one by one, each against all the texts (which count their own
    items), and the rows are joined: each clip's row is its score as if it were run alone."""
    from mmedge.bundle import AudioPreprocess

    torch.manual_seed(0)
    model = SoundSimilarity().eval()
    example = {"text": torch.randint(0, 50, (2, 6)), "audio": torch.randn(2, 16000)}
    keep = {"audio": AudioPreprocess(16000, 1.0, pad=False)}
    out = tmp_path / "b"
    export_model(model, example, modalities={"text": "other"}, preprocess=keep, out=out)
    text = np.random.default_rng(0).integers(0, 50, (3, 6))
    clips = [np.random.default_rng(i).normal(size=n).astype(np.float32) for i, n in enumerate((8000, 12000))]
    with Pipeline(out, "cpu", threads=1) as pipeline:
        same = pipeline.run({"text": text, "audio": [clips[0], clips[0]]})
        assert same["logits"].shape == (2, 3)  # clips of one length run together
        got = pipeline.run({"text": text, "audio": clips})["logits"]
    with torch.no_grad():
        want = [model(torch.from_numpy(text), torch.from_numpy(c)[None]).numpy() for c in clips]
    assert got.shape == (2, 3)
    np.testing.assert_allclose(got, np.concatenate(want), atol=1e-5)


def test_clips_of_different_lengths_are_refused_where_rows_share_one_batch(tmp_path: Path) -> None:
    from mmedge.bundle import AudioPreprocess
    from mmedge.errors import InputError

    class Shared(SoundSimilarity):
        def forward(self, text: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
            a, t = self.audio_encoder(audio[:, None]), self.text_encoder(text)
            return a @ t.T + (a * t).sum()  # mixes rows: runs only on as many texts as clips

    example = {"text": torch.randint(0, 50, (2, 6)), "audio": torch.randn(2, 16000)}
    keep = {"audio": AudioPreprocess(16000, 1.0, pad=False)}
    out = tmp_path / "b"
    export_model(Shared().eval(), example, modalities={"text": "other"}, preprocess=keep, out=out)
    text = np.zeros((2, 6), np.int64)
    clips = [np.zeros(8000, np.float32), np.zeros(12000, np.float32)]
    with Pipeline(out, "cpu", threads=1) as pipeline, pytest.raises(InputError, match=r"pair every row with every"):
        pipeline.run({"text": text, "audio": clips})


class SharedSimilarity(Similarity):
    """Scores every image against every text, but also mixes the two batches row by row, so it runs
    only on as many images as texts."""

    def forward(self, text: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        t = self.text_encoder(text)
        i = self.image_encoder(image)
        return i @ t.T + (i * t).sum()


def test_a_model_refusing_different_counts_shares_one_batch_and_the_error_says_how(tmp_path: Path) -> None:
    from mmedge.errors import InputError

    torch.manual_seed(0)
    out = tmp_path / "b"
    result = export_model(SharedSimilarity().eval(), EXAMPLE, modalities={"text": "other"}, out=out)
    assert any("fails on different numbers of items per modality" in w for w in result.warnings)
    assert {i.name: i.shape[0] for i in load_bundle(out).manifest.inputs} == {"text": "batch", "image": "batch"}
    texts = np.zeros((3, 6), np.int64)
    with Pipeline(out, "cpu", threads=1) as pipeline:
        with pytest.raises(InputError, match=r"different batch sizes .*encode each side with Pipeline\.encode"):
            pipeline.run({"text": texts, "image": np.zeros((1, 3, 16, 16), np.float32)})
        image = pipeline.encode("image_encoder", np.zeros((1, 3, 16, 16), np.float32))
        text = pipeline.encode("text_encoder", texts)
    assert [a.shape for a in image.values()] == [(1, 8)]
    assert [a.shape for a in text.values()] == [(3, 8)]


class WordSimilarity(nn.Module):
    """Label words against images: token ids mean-pooled over positions of a table of 8."""

    def __init__(self) -> None:
        super().__init__()
        self.text_encoder = TextTower()
        self.image_encoder = nn.Sequential(nn.Conv2d(3, 4, 4, 4), nn.Flatten(), nn.Linear(4 * 4 * 4, 8))

    def forward(self, text: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        pooled, _ = self.text_encoder(text)
        return 5.0 * self.image_encoder(image) @ pooled.T


class TextTower(nn.Module):
    """Pooled and per-token states, as a transformers text model returns them; the head reads the first."""

    def __init__(self) -> None:
        super().__init__()
        self.tokens, self.positions = nn.Embedding(len(WORDS), 8), nn.Parameter(torch.randn(8, 8))

    def forward(self, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        states = self.tokens(text) + self.positions[: text.shape[1]]
        return states.mean(1), states


WORDS = ["<pad>", "<unk>", "cat", "dog", "car", "tree"]


def test_run_and_serve_score_one_photo_against_label_texts(tmp_path: Path, serve_app: Callable) -> None:
    from mmedge.bundle import ImagePreprocess, TextPreprocess
    from mmedge.cli import main

    torch.manual_seed(0)
    model = WordSimilarity().eval()
    example = {"text": torch.tensor([[2, 3, 0, 0], [4, 5, 2, 0]]), "image": torch.rand(2, 3, 16, 16)}
    pre = {"text": TextPreprocess(max_length=4, unk_id=1), "image": ImagePreprocess(size=(16, 16))}
    export_model(model, example, preprocess=pre, vocab=WORDS, out=tmp_path / "b")
    Image.fromarray(np.full((48, 64, 3), 200, np.uint8)).save(tmp_path / "photo.png")
    out = tmp_path / "out.json"
    args = ["run", str(tmp_path / "b"), "-i", f"image={tmp_path / 'photo.png'}", "--json"]
    with open(out, "w") as f, contextlib.redirect_stdout(f):
        assert main([*args, "-i", "text=cat", "-i", "text=dog car", "-i", "text=tree"]) == 0
    (rows,) = json.loads(out.read_text())["outputs"]["logits"]["top_k"]
    assert sorted(r["label"] for r in rows) == ["cat", "dog car", "tree"]
    with Pipeline(tmp_path / "b", "cpu", threads=1) as pipeline:
        want = pipeline.run({"text": ["cat", "dog car", "tree"], "image": [str(tmp_path / "photo.png")]})["logits"]
        # the labels' embeddings computed once: the output the head reads is enough to skip the encoder
        encoded = pipeline.encode("text_encoder", ["cat", "dog car", "tree"])
        (read,) = [e.output for e in pipeline.manifest.wiring if e.source == "text_encoder"]
        assert len(encoded) == 2
        cached = pipeline.run({"image": [str(tmp_path / "photo.png")], read: encoded[read]})["logits"]
        with serve_app(create_app(pipeline, ServeOptions())) as url:
            photo = {"image": ("photo.png", (tmp_path / "photo.png").read_bytes(), "image/png")}
            form = httpx.post(f"{url}/v1/predict", files=photo, data={"text": ["cat", "dog car", "tree"]}, timeout=30)
    np.testing.assert_allclose(cached, want, atol=1e-6)
    assert form.status_code == 200, form.text
    np.testing.assert_allclose(form.json()["outputs"]["logits"], want, atol=1e-5)
    assert form.json()["labels"] == {"logits": [["cat", "dog car", "tree"][int(want[0].argmax())]]}
    probs = np.exp(want[0] - want[0].max()) / np.exp(want[0] - want[0].max()).sum()
    got = {r["label"]: r["probability"] for r in rows}
    np.testing.assert_allclose([got[t] for t in ("cat", "dog car", "tree")], probs, rtol=1e-5)
    assert len(set(got.values())) == 3  # the texts score differently: each column is its own text


class NamedSimilarity(WordSimilarity):
    """The output under transformers' name, ``logits_per_image``: kind ``scores``, not ``logits``."""

    def forward(self, text: torch.Tensor, image: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits_per_image": super().forward(text, image)}


def test_scores_named_as_transformers_names_them_are_ranked_with_their_own_values(
    tmp_path: Path, serve_app: Callable
) -> None:
    """CLIP reads its scores with a softmax, SigLIP with a sigmoid per pair: the bundle cannot tell
    which, so the table ranks the labels by the model's own scores and shows them as they are."""
    from mmedge.bundle import ImagePreprocess, TextPreprocess
    from mmedge.cli import main

    torch.manual_seed(0)
    example = {"text": torch.tensor([[2, 3, 0, 0], [4, 5, 2, 0]]), "image": torch.rand(2, 3, 16, 16)}
    pre = {"text": TextPreprocess(max_length=4, unk_id=1), "image": ImagePreprocess(size=(16, 16))}
    export_model(NamedSimilarity().eval(), example, preprocess=pre, vocab=WORDS, out=tmp_path / "b")
    assert [(o.name, o.kind) for o in load_bundle(tmp_path / "b").manifest.outputs] == [("logits_per_image", "scores")]
    Image.fromarray(np.full((48, 64, 3), 90, np.uint8)).save(tmp_path / "photo.png")
    labels, out = ["cat", "dog car", "tree"], tmp_path / "out.json"
    args = ["run", str(tmp_path / "b"), "-i", f"image={tmp_path / 'photo.png'}", "--json"]
    with open(out, "w") as f, contextlib.redirect_stdout(f):
        assert main([*args, *(a for t in labels for a in ("-i", f"text={t}"))]) == 0
    (rows,) = json.loads(out.read_text())["outputs"]["logits_per_image"]["top_k"]
    with Pipeline(tmp_path / "b", "cpu", threads=1) as pipeline:
        (want,) = pipeline.run({"text": labels, "image": [str(tmp_path / "photo.png")]})["logits_per_image"]
        with serve_app(create_app(pipeline, ServeOptions())) as url:
            photo = {"image": ("photo.png", (tmp_path / "photo.png").read_bytes(), "image/png")}
            form = httpx.post(f"{url}/v1/predict", files=photo, data={"text": labels}, timeout=30)
    assert [r["label"] for r in rows] == [labels[i] for i in np.argsort(-want)]
    np.testing.assert_allclose([r["score"] for r in rows], np.sort(want)[::-1], rtol=1e-5)
    assert form.status_code == 200, form.text
    assert form.json()["labels"] == {"logits_per_image": [labels[int(want.argmax())]]}


def test_a_max_length_beyond_the_models_positions_is_refused_at_export(tmp_path: Path) -> None:
    from mmedge.bundle import TextPreprocess
    from mmedge.errors import ExportError

    example = {"text": torch.tensor([[2, 3, 0, 0], [4, 5, 2, 0]]), "image": torch.rand(2, 3, 16, 16)}
    pre = {"text": TextPreprocess(max_length=12, unk_id=1)}
    with pytest.raises(ExportError, match=r"fails on 12 tokens.*max_length"):
        export_model(WordSimilarity().eval(), example, preprocess=pre, vocab=WORDS, out=tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_phones_get_one_item_per_modality_unless_told(bundle: Path) -> None:
    from mmedge.mobile._shapes import plan_dims

    manifest = load_bundle(bundle).manifest
    assert plan_dims(manifest, None, fix_all=True).fixed == {"image_batch": 1, "other_batch": 1}
    assert plan_dims(manifest, {"other_batch": 20}, fix_all=True).fixed == {"image_batch": 1, "other_batch": 20}


def test_bench_scores_a_similarity_matrix_over_all_its_samples(bundle: Path, tmp_path: Path, monkeypatch) -> None:
    """One sample at a time, each variant's output is a 1x1 matrix: any variant "agrees". As one batch,
    each image's top-1 ranks all the samples' texts."""
    from mmedge.bench import bench

    tests = Path(__file__).resolve().parents[1]
    monkeypatch.setenv("PYTHONPATH", str(tests))
    torch.save(_model().state_dict(), tmp_path / "ckpt.pt")
    report = bench(
        bundle,
        torch_model="tinymodels:Similarity",
        checkpoint=tmp_path / "ckpt.pt",
        iterations=2,
        warmup=1,
        threads=1,
        profile=False,
        agreement_samples=12,
    )
    (split,) = [v for v in report.variants if v.name == "split FP32"]
    (a,) = split.agreement
    assert (a.output, a.metric, a.value, a.samples) == ("logits", "top1", 1.0, 12)
