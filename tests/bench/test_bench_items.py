"""``mmedge bench --items``: a CLIP-style bundle (each modality counting its own items) timed at the
shape it is deployed at, one photo against many label texts, instead of one text per photo."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from tinymodels import Similarity

from mmedge.bench import bench
from mmedge.bench._inputs import bench_inputs, item_counts
from mmedge.bundle import load_bundle
from mmedge.cli import main
from mmedge.errors import InputError
from mmedge.export import export_model

EXAMPLE = {
    "text": torch.randint(0, 50, (2, 6), generator=torch.Generator().manual_seed(0)),
    "image": torch.zeros(2, 3, 16, 16),
}


@pytest.fixture(scope="module")
def clip_like(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("items") / "b"
    export_model(Similarity().eval(), EXAMPLE, modalities={"text": "other"}, out=out, monolithic=True)
    torch.save(Similarity().state_dict(), out.parent / "ckpt.pt")
    return out


def test_label_texts_take_their_own_count_at_every_batch_size(clip_like: Path) -> None:
    bundle = load_bundle(clip_like)
    counts = item_counts(bundle, {"other": 20})
    assert counts == {"other_batch": 20}
    tensors = bench_inputs(bundle, (1, 3), None, 0, counts)
    assert {b: {k: v.shape for k, v in t.items()} for b, t in tensors.items()} == {
        1: {"text": (20, 6), "image": (1, 3, 16, 16)},
        3: {"text": (20, 6), "image": (3, 3, 16, 16)},
    }
    given = bench_inputs(
        bundle, (2,), {"text": np.zeros((4, 6), np.int64), "image": np.ones((1, 3, 16, 16))}, 0, counts
    )
    assert given[2]["text"].shape == (20, 6)
    assert given[2]["image"].shape == (2, 3, 16, 16)


def test_every_variant_runs_the_deploy_shape(clip_like: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    here = str(Path(__file__).parents[1])  # tinymodels, for the PyTorch worker
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")])))
    out = tmp_path / "out"
    args = ["bench", str(clip_like), "--items", "text=12", "--torch", "tinymodels:Similarity"]
    args += ["--checkpoint", str(clip_like.parent / "ckpt.pt"), "--iterations", "2", "--warmup", "0"]
    assert main([*args, "--threads", "1", "--no-profile", "--out", str(out)]) == 0
    report = json.loads((out / "bench.json").read_text(encoding="utf-8"))
    assert report["settings"]["items"] == {"other_batch": 12}
    assert [v["name"] for v in report["variants"]] == ["split FP32", "monolithic FP32", "PyTorch eager FP32"]
    assert all(v["batches"][0]["latency"]["count"] == 2 for v in report["variants"])
    assert "(12 other items in every call)" in (out / "bench.md").read_text(encoding="utf-8")


def test_a_count_is_refused_where_every_input_shares_the_batch(mono_bundle: Path) -> None:
    with pytest.raises(InputError, match=r"items image: image \['batch', .*shares the batch"):
        bench(mono_bundle, items={"image": 4}, iterations=1, warmup=0, threads=1, profile=False)


@pytest.mark.parametrize(
    ("items", "match"),
    [
        ({"depth": 3}, r"items depth: no input or modality of that name; inputs: text \(other\)"),
        ({"text": 0}, "positive"),
    ],
)
def test_unknown_or_empty_counts_are_refused(clip_like: Path, items: dict[str, int], match: str) -> None:
    with pytest.raises(InputError, match=match):
        item_counts(load_bundle(clip_like), items)


def test_the_command_line_says_how_to_write_a_count(clip_like: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", str(clip_like), "--items", "text"]) == 1
    assert "--items takes MODALITY=N, e.g. text=20; found 'text'" in capsys.readouterr().err


@pytest.mark.slow
def test_executorch_lowers_its_program_at_the_counts(clip_like: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    python = os.environ.get("MMEDGE_PEER_PYTHON")
    if not python:
        pytest.skip("set MMEDGE_PEER_PYTHON to an interpreter with executorch and mmedge")
    here = str(Path(__file__).parents[1])  # tinymodels, for the PyTorch and ExecuTorch workers
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")])))
    report = bench(
        clip_like,
        items={"text": 7},
        torch_model="tinymodels:Similarity",
        checkpoint=clip_like.parent / "ckpt.pt",
        peers=["executorch-fp32"],
        peer_python=python,
        monolithic=False,
        iterations=2,
        warmup=0,
        threads=1,
        profile=False,
    )
    assert [v.name for v in report.variants] == ["split FP32", "PyTorch eager FP32", "executorch-fp32"]
    assert all(v.batches[0].latency.count == 2 for v in report.variants)
