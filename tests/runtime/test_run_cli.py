"""``mmedge run``: files and strings in, top-k labels (or embedding summaries) out."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
from PIL import Image
from tinybundle import LABELS

from mmedge.bundle import OutputSpec
from mmedge.cli import main
from mmedge.runtime import Pipeline
from mmedge.runtime.policy import parse_policy
from mmedge.runtime.run_cli import summarize


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "cat.png")
    soundfile.write(tmp_path / "x.wav", rng.standard_normal(441).astype(np.float32) * 0.1, 44100, subtype="FLOAT")
    np.save(tmp_path / "x.npy", rng.standard_normal(160).astype(np.float32))
    return {"image": str(tmp_path / "cat.png"), "wav": str(tmp_path / "x.wav"), "npy": str(tmp_path / "x.npy")}


def test_json_output_has_softmax_top_k_of_the_pipeline_logits(
    tiny_bundle: Path, files: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["-i", f"image={files['image']}", "-i", "text=a bright dog", "-i", f"audio={files['wav']}"]
    assert main(["run", str(tiny_bundle), *args, "--providers", "cpu", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    with Pipeline(tiny_bundle, "cpu") as p:
        logits = p.run({"image": files["image"], "text": "a bright dog", "audio": files["wav"]})["logits"][0]
    probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    top = result["outputs"]["logits"]["top_k"][0]
    assert [t["label"] for t in top] == [LABELS[i] for i in np.argsort(-probs)]
    np.testing.assert_allclose([t["probability"] for t in top], np.sort(probs)[::-1], rtol=1e-6)
    assert result["providers_used"]["fusion_head"]["registered"] == ["CPUExecutionProvider"]


def test_human_output_shows_a_table_per_logits_output(
    tiny_bundle: Path, files: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["-i", f"image={files['image']}", "-i", "text=dog", "-i", f"audio={files['npy']}", "--top-k", "2"]
    assert main(["run", str(tiny_bundle), *args]) == 0
    err = capsys.readouterr().err
    assert "logits" in err
    assert sum(f"│ {label} " in err for label in LABELS) == 2
    assert "fusion_head: CPU: 2" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["-i", "image"], "--input 'image' must look like NAME=VALUE", id="no-equals"),
        pytest.param(["-i", "audio=missing.npy"], "array file missing.npy does not exist", id="missing-npy"),
        pytest.param(
            ["-i", "text=dog", "-i", "text=cat", "-i", "text=cow"], "'text' is given more than once", id="thrice"
        ),
        pytest.param(
            ["-i", "text=dog", "-i", "text=cat"], "a text pair needs the bundle's Hugging Face tokenizer", id="pair"
        ),
        pytest.param(["-i", "image=a.png", "-i", "image=b.png"], "only a text input takes two values", id="twice"),
        pytest.param(["--top-k", "0"], "--top-k must be at least 1", id="top-k"),
        pytest.param(["-i", "text=dog"], "missing input 'image'", id="missing-input"),
        pytest.param(
            ["-i", "text=dog", "--providers", "cuda"], "CUDAExecutionProvider is not available", id="provider"
        ),
        pytest.param(
            ["-i", "text=dog", "--providers", "cpu,gpu"], "unknown execution provider 'gpu'", id="provider-list"
        ),
        pytest.param(["-i", "text=dog", "--providers", "image=cpu;vision=cpu"], "name no component", id="bad-key"),
        pytest.param(["-i", "text=dog", "--providers", "image=cpu;=cpu"], "is not KEY=NAMES", id="no-key"),
        pytest.param(["-i", "text=dog", "--providers", "image=cpu;image=cuda"], "names 'image' twice", id="twice-key"),
        pytest.param(
            ["-i", "text=dog", "--providers", "cuda", "--strict"],
            "CUDAExecutionProvider is not available",
            id="strict-unavailable",
        ),
    ],
)
def test_mistakes_are_one_error_line(
    tiny_bundle: Path, capsys: pytest.CaptureFixture[str], args: list, message: str
) -> None:
    assert main(["run", str(tiny_bundle), *args]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ERROR ")
    assert message in err
    assert "Traceback" not in err


def test_fallback_flag_runs_on_cpu(
    tiny_bundle: Path, files: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["-i", f"image={files['image']}", "-i", "text=dog", "-i", f"audio={files['wav']}"]
    assert main(["run", str(tiny_bundle), *args, "--providers", "cuda", "--fallback", "--json"]) == 0
    placement = json.loads(capsys.readouterr().out)["providers_used"]["image_encoder"]
    assert placement["fallbacks"][0].startswith("CUDAExecutionProvider is not available")


def test_providers_per_component_or_modality(
    tiny_bundle: Path, files: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["-i", f"image={files['image']}", "-i", "text=dog", "-i", f"audio={files['wav']}"]
    policy = "image=cuda,cpu;fusion_head=cpu;*=auto"
    assert main(["run", str(tiny_bundle), *args, "--providers", policy, "--fallback", "--strict", "--json"]) == 0
    placement = json.loads(capsys.readouterr().out)["providers_used"]
    assert placement["image_encoder"]["fallbacks"][0].startswith("CUDAExecutionProvider is not available")
    assert placement["text_encoder"]["fallbacks"] == []  # "auto" takes what this build has, silently
    assert {p["registered"][-1] for p in placement.values()} == {"CPUExecutionProvider"}


@pytest.mark.parametrize(
    ("text", "policy"),
    [
        pytest.param("cpu", "cpu", id="one"),
        pytest.param(" cuda , cpu ", ["cuda", "cpu"], id="list"),
        pytest.param("image=cuda,cpu; *=cpu;", {"image": ["cuda", "cpu"], "*": "cpu"}, id="per-key"),
    ],
)
def test_providers_flag_parses_to_a_pipeline_policy(text: str, policy: object) -> None:
    assert parse_policy(text) == policy


def test_non_logits_outputs_are_summarised_by_shape_and_leading_values() -> None:
    value = np.arange(24, dtype=np.float32).reshape(2, 12)
    summary = summarize(OutputSpec("emb", "head", "emb", kind="embedding"), value, top_k=5)
    assert summary == {
        "kind": "embedding",
        "dtype": "float32",
        "shape": [2, 12],
        "values": [list(range(8)), list(range(12, 20))],
    }


def test_every_component_on_openvino_is_reported_as_one_graph(
    tiny_bundle: Path, files: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("openvino")
    args = ["-i", f"image={files['image']}", "-i", "text=a bright dog", "-i", f"audio={files['wav']}"]
    assert main(["run", str(tiny_bundle), *args, "--providers", "openvino", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["whole_graph"] == ["text_encoder", "image_encoder", "audio_encoder", "fusion_head"]
    assert result["providers_used"]["text_encoder"]["registered"] == ["OpenVINO"]
    assert main(["run", str(tiny_bundle), *args, "--providers", "openvino"]) == 0
    assert "one OpenVINO graph, one request per call: text_encoder" in capsys.readouterr().err
    assert main(["run", str(tiny_bundle), *args, "--providers", "cpu", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["whole_graph"] == []


def test_cache_dir_keeps_the_openvino_graph_between_runs(
    tiny_bundle: Path, files: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("openvino")
    cache = tmp_path / "cache"
    args = ["-i", f"image={files['image']}", "-i", "text=a bright dog", "-i", f"audio={files['wav']}"]
    results = []
    for _ in range(2):
        assert (
            main(["run", str(tiny_bundle), *args, "--providers", "openvino", "--cache-dir", str(cache), "--json"]) == 0
        )
        results.append(json.loads(capsys.readouterr().out)["outputs"]["logits"]["top_k"])
    assert results[0] == results[1]
    assert list(cache.glob("mmedge-graph-*.xml"))
    assert list(cache.glob("*.blob"))
