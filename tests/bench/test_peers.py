"""``bench(peers=...)``: peer toolchains built from the same model, timed beside mmedge, scored
against PyTorch FP32.

A tiny model with a log-power front-end (``tiny_peer_model.PeerNet``) is exported once with its
monolithic graph; the onnxruntime peer runs end to end, OpenVINO where it is installed, and the
ExecuTorch path through a fake ``--peer-python`` (a real one when ``MMEDGE_PEER_PYTHON`` names an
interpreter with executorch). Timing never decides an outcome here; agreement and structure do.
"""

from __future__ import annotations

import importlib.util
import os
import stat
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from mmedge.bench import bench
from mmedge.bench._agreement import agreement, score_output
from mmedge.bench._peers import INSTALL_HINT, PEER_GROUPS, select_peers
from mmedge.bundle import OutputSpec
from mmedge.errors import ConfigError, MMEdgeError

HERE = Path(__file__).parent
MODEL = "tiny_peer_model:PeerNet"
FAST = {"iterations": 2, "warmup": 1, "threads": 1, "profile": False, "agreement_samples": 12}


@pytest.fixture(scope="module")
def peer_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """PeerNet's FP32 bundle with model.onnx, and its checkpoint."""
    import torch

    sys.path.insert(0, str(HERE))
    try:
        from tiny_peer_model import PeerNet
    finally:
        sys.path.remove(str(HERE))
    from mmedge.export import export_model

    root = tmp_path_factory.mktemp("peers")
    torch.manual_seed(0)
    model = PeerNet().eval()
    torch.save(model.state_dict(), root / "model.pt")
    export_model(model, model.example_inputs(2), out=root / "fp32", monolithic=True)
    return root / "fp32", root / "model.pt"


@pytest.fixture
def on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Worker processes import ``tiny_peer_model`` from this folder (and ``tinymodels`` from ``tests/``)."""
    paths = [str(HERE), str(HERE.parent), os.environ.get("PYTHONPATH")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, paths)))


# --- agreement ----------------------------------------------------------------------------------


def test_top1_agreement_counts_samples_whose_argmax_matches() -> None:
    ref = np.array([[0.1, 0.9, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.3, 0.2, 0.1]])
    got = np.array([[0.0, 1.0, 0.5], [0.0, 1.0, 0.0], [0.1, 0.0, 0.9], [0.9, 0.1, 0.0]])
    a = score_output("logits", "logits", ref, got)
    assert (a.metric, a.samples) == ("top1", 4)
    assert a.value == pytest.approx(0.75)
    assert a.worst == a.value


def test_any_of_the_references_exactly_tied_classes_agrees() -> None:
    """The same photo twice in one batch gives two equal columns; either is the reference's top-1."""
    from mmedge.quantize._metrics import agreement as quantize_agreement

    ref = np.array([[0.5, 0.9, 0.9], [0.5, 0.9, 0.9], [1.0, 0.2, 0.2]])
    got = np.array([[0.4, 0.8, 0.81], [0.4, 0.82, 0.81], [0.2, 0.3, 0.2]])
    assert score_output("logits", "logits", ref, got).value == pytest.approx(2 / 3)
    assert score_output("logits_per_image", "scores", ref, got).metric == "top1"  # ranked as quantize ranks it
    assert quantize_agreement("logits", [ref], [got]) == pytest.approx(2 / 3)


def test_embeddings_are_scored_by_cosine_per_sample() -> None:
    ref = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    got = np.array([[2.0, 0.0], [0.0, -1.0], [1.0, 0.0]])
    a = score_output("embedding", "embedding", ref, got)
    assert a.metric == "cosine"
    assert a.worst == pytest.approx(-1.0)
    assert a.value == pytest.approx((1.0 - 1.0 + np.sqrt(0.5)) / 3)


def test_a_single_logit_is_scored_by_cosine_and_zero_vectors_agree() -> None:
    a = score_output("score", "logits", np.zeros((2, 1)), np.zeros((2, 1)))
    assert (a.metric, a.value, a.worst) == ("cosine", 1.0, 1.0)


def test_outputs_are_matched_by_position_and_shapes_must_match() -> None:
    specs = (OutputSpec("logits", "head", "logits"), OutputSpec("embedding", "head", "e", kind="embedding"))
    ref = {"0": np.eye(3), "1": np.ones((3, 4))}
    found = agreement(specs, ref, {"0": np.eye(3), "1": np.ones((3, 4))})
    assert [(a.output, a.metric, a.value) for a in found] == [("logits", "top1", 1.0), ("embedding", "cosine", 1.0)]
    with pytest.raises(MMEdgeError, match=r"shape \[3, 4\] but the variant \[3, 5\]"):
        agreement(specs, ref, {"0": np.eye(3), "1": np.ones((3, 5))})


# --- choosing peers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        pytest.param(["ort-int8"], ["ort-int8", "ort-int8-keepfe"], id="group"),
        pytest.param(["openvino-int8-keepfe"], ["openvino-int8-keepfe"], id="single"),
        pytest.param(["executorch", "ort-int8-keepfe"], ["ort-int8-keepfe", *PEER_GROUPS["executorch"]], id="mixed"),
    ],
)
def test_peer_names_expand_to_variants_in_catalogue_order(names: list[str], expected: list[str]) -> None:
    assert [p.name for p in select_peers(names)] == expected


def test_unknown_peer_names_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"unknown peer 'tflite'.*ort-int8, openvino, executorch"):
        select_peers(["tflite"])


def test_peers_need_the_pytorch_model(peer_bundle: tuple[Path, Path]) -> None:
    with pytest.raises(ConfigError, match="pass --torch"):
        bench(peer_bundle[0], peers=["ort-int8"], **FAST)


def test_a_missing_peer_package_names_the_extra(
    peer_bundle: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "nncf" else real(name, *a))
    with pytest.raises(ConfigError, match=r"need nncf, not installed here; pip install 'mmedge\[peers\]'") as e:
        bench(peer_bundle[0], torch_model=MODEL, checkpoint=peer_bundle[1], peers=["openvino"], **FAST)
    assert INSTALL_HINT in str(e.value)


def test_executorch_without_it_here_asks_for_peer_python(
    peer_bundle: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "executorch" else real(name, *a))
    with pytest.raises(ConfigError, match="--peer-python PATH"):
        bench(peer_bundle[0], torch_model=MODEL, checkpoint=peer_bundle[1], peers=["executorch"], **FAST)


def test_a_peer_python_that_cannot_import_executorch_is_refused(peer_bundle: tuple[Path, Path]) -> None:
    with pytest.raises(ConfigError, match="cannot `import executorch"):
        bench(
            peer_bundle[0],
            torch_model=MODEL,
            checkpoint=peer_bundle[1],
            peers=["executorch-fp32"],
            peer_python=sys.executable if importlib.util.find_spec("executorch") is None else "/bin/false",
            **FAST,
        )


def test_the_executorch_peer_feeds_a_forward_batch_model_its_dict() -> None:
    """ExecuTorch programs take positional tensors: a ``forward(batch, scale)`` model is wrapped to take the
    bundle's inputs in order (built for real under the peer interpreter; the wrapper needs only torch)."""
    import torch
    from torch import nn

    from mmedge.bench._peer_executorch import _by_inputs

    class BatchNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Linear(3, 2)

        def forward(self, batch: dict[str, torch.Tensor], scale: torch.Tensor) -> torch.Tensor:
            return self.proj(batch["image"].mean((2, 3)) + batch["text"].float().mean(1, keepdim=True)) * scale

    model = BatchNet().eval()
    image, text, scale = torch.randn(1, 3, 4, 4), torch.randint(0, 5, (1, 7)), torch.full((1, 1), 2.0)
    wrapped = _by_inputs(model, ["image", "text", "scale"])
    with torch.no_grad():
        torch.testing.assert_close(wrapped(image, text, scale), model({"image": image, "text": text}, scale))


def test_an_executorch_failure_is_one_line_naming_the_operators() -> None:
    from mmedge.bench._peer_executorch import _said

    class SpecViolationError(Exception):
        pass

    trace = "stack trace: File model.py, line 61, in forward\n    return self.mel(wav)\n"
    e = SpecViolationError(
        "These operators are taking Tensor inputs with mismatched dtypes:\n\n"
        f"Operator: <EdgeOpOverload: aten.view_copy.default>: schema = aten::view_copy(Tensor self)\n{trace}\n"
        f"Operator: <EdgeOpOverload: aten.abs.default>: schema = aten::abs(Tensor self)\n{trace}"
    )
    said = _said(e)
    assert "\n" not in said
    assert said == (
        "SpecViolationError: These operators are taking Tensor inputs with mismatched dtypes: "
        "(aten.abs.default, aten.view_copy.default)"
    )


def test_onnx_peers_need_a_bundle_with_the_monolithic_model(tiny_bundle: Path) -> None:
    with pytest.raises(ConfigError, match="mmedge export --monolithic"):
        bench(tiny_bundle, torch_model="tiny_torch_model:TinyTorch", peers=["ort-int8"], **FAST)


# --- the onnxruntime peer end to end -------------------------------------------------------------


def test_ort_int8_peer_quantizes_with_and_without_the_front_end(peer_bundle: tuple[Path, Path], tmp_path: Path) -> None:
    from mmedge.bench._peer_ort import build_ort_int8
    from mmedge.quantize.recipes import frontend_nodes

    source = peer_bundle[0] / "model.onnx"
    rng = np.random.default_rng(0)
    calibration = [
        {
            "text": rng.integers(0, 16, (1, 6)).astype(np.int64),
            "image": rng.standard_normal((1, 3, 12, 12)).astype(np.float32),
            "audio": rng.standard_normal((1, 400)).astype(np.float32),
        }
        for _ in range(4)
    ]
    plain = build_ort_int8(source, tmp_path / "q.onnx", calibration, keep_frontend=False)
    kept = build_ort_int8(source, tmp_path / "k.onnx", calibration, keep_frontend=True)
    q, k = onnx.load(plain["path"]), onnx.load(kept["path"])
    assert frontend_nodes(k), "the log-power front-end is found"
    assert _quantized_convs(q) == 3  # image conv, the audio DFT conv, the conv over the log-mel
    assert _quantized_convs(k) == 2  # the DFT conv stays FP32
    assert any("front-end kept FP32" in n and "0 nodes" not in n for n in kept["notes"])


def test_ort_int8_peer_end_to_end_beside_mmedge_with_agreement(peer_bundle: tuple[Path, Path], on_path: None) -> None:
    report = bench(peer_bundle[0], torch_model=MODEL, checkpoint=peer_bundle[1], peers=["ort-int8"], **FAST)
    names = [v.name for v in report.variants]
    assert names == ["split FP32", "monolithic FP32", "PyTorch eager FP32", "ort-int8", "ort-int8-keepfe"]
    by_name = {v.name: v for v in report.variants}
    for name in ("ort-int8", "ort-int8-keepfe"):
        v = by_name[name]
        assert (v.kind, v.precision) == ("peer", "int8")
        assert v.at(1) is not None
        assert v.at(1).latency.count == 2
        assert any(n.startswith("built in") for n in v.notes)
    for name in ("split FP32", "monolithic FP32"):  # the same model: every sample agrees
        (a,) = by_name[name].agreement
        assert (a.output, a.metric, a.value, a.samples) == ("logits", "top1", 1.0, 12)
    assert not by_name["PyTorch eager FP32"].agreement  # the reference itself
    assert 0.0 <= by_name["ort-int8"].agreement[0].value <= 1.0
    assert report.settings.agreement_samples == 12
    markdown = report.to_markdown()
    assert "Speed beside accuracy" in markdown
    assert "top-1 100.0%" in markdown


def _quantized_convs(model: onnx.ModelProto) -> int:
    """Convs whose weight comes through a DequantizeLinear (QDQ)."""
    dequantized = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return sum(1 for n in model.graph.node if n.op_type == "Conv" and n.input[1] in dequantized)


# --- OpenVINO ------------------------------------------------------------------------------------


def test_openvino_peers_end_to_end(peer_bundle: tuple[Path, Path], on_path: None) -> None:
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    report = bench(peer_bundle[0], torch_model=MODEL, checkpoint=peer_bundle[1], peers=["openvino"], **FAST)
    by_name = {v.name: v for v in report.variants}
    assert [n for n in by_name if n.startswith("openvino")] == list(PEER_GROUPS["openvino"])
    (fp32,) = by_name["openvino-fp32"].agreement
    assert fp32.value == 1.0
    assert by_name["openvino-int8"].precision == "int8"
    assert by_name["openvino-fp32"].providers == ("openvino-cpu",)
    assert any("IgnoredScope" in n and " 0 ops" not in n for n in by_name["openvino-int8-keepfe"].notes)


# --- ExecuTorch through --peer-python --------------------------------------------------------------

FAKE_PEER_PYTHON = '''#!{python}
"""A stand-in for an ExecuTorch interpreter: builds nothing, runs the monolithic ONNX instead."""
import json, os, sys

if sys.argv[1] == "-c":
    sys.exit(0)
assert sys.argv[1:3] == ["-m", "mmedge.bench._peer_worker"], sys.argv
if sys.argv[3] == "build":
    request = json.loads(sys.stdin.readline())
    with open(os.environ["FAKE_PEER_LOG"], "a") as log:
        log.write(json.dumps(request["peer"]) + "\\n")
    if request["peer"]["name"] == "executorch-int8":  # a peer whose build fails
        print(json.dumps({{"error": "lowering failed", "type": "ExportError"}}))
        sys.exit(1)
    paths = {{str(b): os.environ["FAKE_PEER_ONNX"] for b in request["batch_sizes"]}}
    print(json.dumps({{"paths": paths, "order": ["text", "image", "audio"], "batch_input": "text", "notes": ["fake"], "build_s": 0.0}}))
    sys.exit(0)
from mmedge.bench._variants import OnnxRunner
from mmedge.bench._worker import serve


def load(spec):
    runner = OnnxRunner({{**spec, "kind": "monolithic", "path": spec["paths"]["1"], "bundle": os.environ["FAKE_PEER_BUNDLE"], "providers": "cpu"}})
    runner.providers = ("fake-executorch",)
    return runner


sys.exit(serve(lambda: None, load))
'''


def test_executorch_peers_run_under_the_peer_python(
    peer_bundle: tuple[Path, Path], on_path: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "python"
    fake.write_text(FAKE_PEER_PYTHON.format(python=sys.executable), encoding="utf-8")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("FAKE_PEER_ONNX", str(peer_bundle[0] / "model.onnx"))
    monkeypatch.setenv("FAKE_PEER_BUNDLE", str(peer_bundle[0]))
    monkeypatch.setenv("FAKE_PEER_LOG", str(tmp_path / "builds.jsonl"))
    report = bench(
        peer_bundle[0],
        torch_model=MODEL,
        checkpoint=peer_bundle[1],
        peers=["executorch"],
        peer_python=str(fake),
        monolithic=False,
        **FAST,
    )
    peers = [v for v in report.variants if v.kind == "peer"]
    assert [v.name for v in peers] == ["executorch-fp32", "executorch-int8-keepfe"]  # the others still ran
    assert any("peer executorch-int8 not measured" in n and "lowering failed" in n for n in report.variants[0].notes)
    assert all(v.providers == ("fake-executorch",) for v in peers)
    assert all(v.agreement[0].value == 1.0 for v in peers)  # it ran the FP32 graph: full agreement
    built = (tmp_path / "builds.jsonl").read_text().splitlines()
    assert len(built) == 3
    assert '"keep_frontend": true' in built[2]


@pytest.mark.slow
def test_executorch_peers_for_real(peer_bundle: tuple[Path, Path], on_path: None) -> None:
    python = os.environ.get("MMEDGE_PEER_PYTHON")
    if not python:
        pytest.skip("set MMEDGE_PEER_PYTHON to an interpreter with executorch and mmedge")
    report = bench(
        peer_bundle[0],
        torch_model=MODEL,
        checkpoint=peer_bundle[1],
        peers=["executorch"],
        peer_python=python,
        monolithic=False,
        **FAST,
    )
    by_name = {v.name: v for v in report.variants}
    assert by_name["executorch-fp32"].agreement[0].value == 1.0
    assert by_name["executorch-int8"].precision == "int8"
    assert any("annotations removed" in n and ": 0 nodes" not in n for n in by_name["executorch-int8-keepfe"].notes)


def test_cli_passes_the_peer_options(tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mmedge.bench import cli as bench_cli
    from mmedge.cli import main

    seen: dict[str, object] = {}

    def stop(*_args: object, **kwargs: object) -> None:
        seen.update(kwargs)
        raise ConfigError("stopped")

    monkeypatch.setattr(bench_cli, "bench", stop)
    argv = ["bench", str(tiny_bundle), "--peers", "ort-int8, openvino", "--peer-python", "/x/python"]
    argv += ["--agreement-samples", "7", "--agreement-inputs", "a.npz", "--peer-calibration", "c.npz"]
    assert main(argv) != 0
    assert seen["peers"] == ["ort-int8", "openvino"]
    assert (seen["peer_python"], seen["agreement_samples"]) == ("/x/python", 7)
    assert (seen["agreement_inputs"], seen["peer_calibration"]) == ("a.npz", "c.npz")
