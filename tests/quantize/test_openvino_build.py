"""OpenVINO builds of dynamic-INT8 components: made and timed for OpenVINO, carried by the bundle
where the component is kept on OpenVINO or the one graph is chosen, and run wherever the component
runs on OpenVINO.

A small ResNetBertNet (transformer text encoder: dynamic INT8) is the model. Timing never decides
these tests: onnxruntime-vs-OpenVINO and build-vs-own-file rounds are scripted, the one-graph
check's processes too, and the INT8-vs-FP32 speed check is left out (it keeps every component INT8).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from tinymodels import quantize_on_synthetic, tiny_model

from mmedge.bundle import load_bundle, openvino_build_asset
from mmedge.cli import main
from mmedge.errors import BundleError
from mmedge.quantize import SpeedPolicy, synthetic_calibration
from mmedge.quantize import api as api_module
from mmedge.quantize import backend as backend_module
from mmedge.quantize import whole_graph as whole_module
from mmedge.quantize.openvino_build import OPENVINO_RECIPE
from mmedge.runtime import Pipeline

pytest.importorskip("openvino")
torch = pytest.importorskip("torch")

pytestmark = pytest.mark.slow
QUICK = SpeedPolicy(max_seconds=60.0)
COMPONENTS = ("text_encoder", "image_encoder", "fusion_head")
BUILD = openvino_build_asset("text_encoder")


@pytest.fixture(scope="module")
def resnet_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mmedge.export import export_model

    torch.manual_seed(0)
    model = tiny_model("ResNetBertNet").eval()
    out = tmp_path_factory.mktemp("resnet_bert") / "fp32"
    export_model(model, model.example_inputs(batch=1), out=out)
    return out


@pytest.fixture
def timed(monkeypatch: pytest.MonkeyPatch) -> Callable[[float, float], list[Mapping[str, Any]]]:
    """``timed(build, whole, backend, others, faster)``: the build of each component in ``faster``
    takes ``build`` of its own file's 1 ms on OpenVINO (the others' builds as long as their files),
    the one graph ``whole`` of the split plan's 1 ms (both regimes), OpenVINO running a build
    ``backend`` of onnxruntime running the own file, and ``others`` of it running the same file;
    returns the one-graph check's plan configs once timed."""

    def install(
        build: float,
        whole: float,
        backend: float = 1.0,
        others: float = 1.0,
        faster: tuple[str, ...] = ("text_encoder",),
    ) -> list[Mapping[str, Any]]:
        seen: list[Mapping[str, Any]] = []

        def rounds(paths: Mapping[str, Path], feeds: object, **kwargs: Any) -> Iterator[dict[str, float]]:
            same_file = paths.get("openvino") == paths.get("onnxruntime")
            if "build" in paths:
                ratio = build if Path(paths["build"]).name.split(".")[0] in faster else 1.0
            else:
                ratio = others if same_file else backend
            base, candidate = paths
            for jitter in itertools.cycle([1.0, 1.02, 0.98]):
                yield {base: 1.0 * jitter, candidate: ratio * jitter}

        def start(module: str, configs: Mapping[str, Mapping[str, Any]], feeds: object, scratch: Path) -> dict:
            seen.append(configs)
            return dict.fromkeys(configs)

        def plans(workers: Mapping[str, None], **kwargs: Any) -> Iterator[dict[str, float]]:
            for jitter in itertools.cycle([1.0, 1.02, 0.98]):
                yield {whole_module.SPLIT: 1.0 * jitter, whole_module.WHOLE: whole * jitter}

        monkeypatch.setattr(backend_module, "interleaved_rounds", rounds)
        monkeypatch.setattr(api_module, "check_speed", lambda *args, **kwargs: {})
        monkeypatch.setattr(whole_module, "start_contenders", start)
        monkeypatch.setattr(whole_module, "process_rounds", plans)
        monkeypatch.setattr(whole_module, "close_all", lambda workers: None)
        monkeypatch.setattr(whole_module, "MIN_SPLIT_MS", 0.0)
        return seen

    return install


def _quantize(bundle: Path, out: Path) -> Any:
    # untrained logits are near-ties: agreement is not what is tested here
    return quantize_on_synthetic(bundle, out, calibration=16, holdout=24, min_agreement=0.0, speed_check=QUICK)


def _inputs(bundle: Path, n: int = 4) -> dict[str, np.ndarray]:
    samples = synthetic_calibration(load_bundle(bundle).manifest, n, seed=3).samples
    return {k: np.concatenate([s[k] for s in samples]) for k in samples[0]}


def test_a_faster_build_goes_into_the_chosen_one_graph_and_the_bundle(
    resnet_bert: Path,
    tmp_path: Path,
    timed: Callable,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    configs = timed(0.25, 0.8)
    report = _quantize(resnet_bert, tmp_path / "int8")
    assert {c.name: c.recipe["mode"] for c in report.components}["text_encoder"] == "dynamic"
    builds = _builds_of_the_chosen_graph(report)
    assert {"text_encoder", "image_encoder"} <= set(builds)  # every INT8 component, dynamic or static
    build = builds["text_encoder"]
    assert build.chosen
    assert not builds["image_encoder"].chosen  # as fast as its own file here: OpenVINO runs that
    assert build.timing.speedup == pytest.approx(4.0)
    assert "faster than its dynamic INT8 file" in build.why
    assert tuple(build.recipe["op_types"]) == ("MatMul", "Gemm", "Conv", "Gather")
    plans = configs[-1]  # one per pair of processes, all alike
    split, whole = plans[whole_module.SPLIT]["files"], plans[whole_module.WHOLE]["files"]
    assert whole["text_encoder"] != split["text_encoder"]  # the one graph was timed with the build
    assert {c: whole[c] for c in COMPONENTS[1:]} == {c: split[c] for c in COMPONENTS[1:]}

    bundle = load_bundle(tmp_path / "int8")
    path = bundle.openvino_path("text_encoder")
    assert path == tmp_path / "int8" / "text_encoder.openvino.onnx"
    assert bundle.openvino_path("image_encoder") == bundle.component_path("image_encoder")
    assert report.bundle_size_after == sum(f.stat().st_size for f in (tmp_path / "int8").iterdir())
    _check_openvino_layout(onnx.load(str(path)))
    assert "OpenVINO build of **text_encoder**" in (tmp_path / "int8" / "quantization_report.md").read_text("utf-8")
    assert main(["inspect", str(tmp_path / "int8")]) == 0
    assert "OpenVINO runs text_encoder.openvino.onnx" in " ".join(capsys.readouterr().err.split())

    x = _inputs(resnet_bert)
    with Pipeline(resnet_bert, "cpu") as fp32, Pipeline(tmp_path / "int8") as auto:
        assert auto.whole_graph == COMPONENTS
        reference, produced = fp32.run(x)["logits"], auto.run(x)["logits"]
    assert _min_cosine(reference, produced) > 0.98

    opened = _spy_openvino_sessions(monkeypatch)
    policy = {"text_encoder": "openvino", "image_encoder": "cpu", "fusion_head": "cpu"}
    with Pipeline(tmp_path / "int8", policy) as placed:
        assert placed.whole_graph == ()
        placed.run(x)
    assert set(opened) == {path}  # wherever the text encoder runs on OpenVINO, it runs its build

    path.write_bytes(path.read_bytes()[:-1] + b"\0")
    with pytest.raises(BundleError, match=r"text_encoder\.openvino\.onnx"):
        load_bundle(tmp_path / "int8")


def test_a_static_int8_component_gets_a_build_too(resnet_bert: Path, tmp_path: Path, timed: Callable) -> None:
    """onnxruntime's static QDQ (U8 activations on every quantizable op) can be slow on OpenVINO: a
    ViT's file ran 7.7 ms there, its build (convolutions and matrix products, S8) 3.8."""
    configs = timed(0.25, 0.8, faster=("image_encoder",))
    report = _quantize(resnet_bert, tmp_path / "int8")
    assert {c.name: c.recipe["mode"] for c in report.components}["image_encoder"] == "static"
    builds = _builds_of_the_chosen_graph(report)
    assert builds["image_encoder"].chosen
    assert not builds["text_encoder"].chosen
    assert "faster than its static INT8 file" in builds["image_encoder"].why
    plans = configs[-1]
    whole, split = plans[whole_module.WHOLE]["files"], plans[whole_module.SPLIT]["files"]
    assert whole["image_encoder"] != split["image_encoder"]
    assert whole["text_encoder"] == split["text_encoder"]
    path = load_bundle(tmp_path / "int8").openvino_path("image_encoder")
    assert path == tmp_path / "int8" / "image_encoder.openvino.onnx"
    model = onnx.load(str(path))
    _check_openvino_layout(model)
    assert "Conv" in {n.op_type for n in model.graph.node}


@pytest.mark.parametrize(("build", "whole"), [(0.25, 1.0), (1.0, 0.8)], ids=["split-plan-kept", "build-not-faster"])
def test_a_build_is_carried_only_when_it_and_the_one_graph_are_both_chosen(
    resnet_bert: Path, tmp_path: Path, timed: Callable, build: float, whole: float
) -> None:
    configs = timed(build, whole)
    report = _quantize(resnet_bert, tmp_path / "int8")
    check = report.whole_graph
    assert check is not None
    assert check.chosen is (whole < 1.0)
    assert {b.component: b for b in check.builds}["text_encoder"].chosen is (build < 1.0)
    plans = configs[-1]  # one per pair of processes, all alike
    same = plans[whole_module.WHOLE]["files"]["text_encoder"] == plans[whole_module.SPLIT]["files"]["text_encoder"]
    assert same is (build >= 1.0)
    bundle = load_bundle(tmp_path / "int8")
    assert BUILD not in {a.name for a in bundle.manifest.assets}
    assert not (tmp_path / "int8" / "text_encoder.openvino.onnx").exists()
    assert bundle.openvino_path("text_encoder") == bundle.component_path("text_encoder")


def test_a_build_faster_than_onnxruntime_keeps_its_component_on_openvino_without_the_one_graph(
    resnet_bert: Path, tmp_path: Path, timed: Callable, monkeypatch: pytest.MonkeyPatch
) -> None:
    configs = timed(0.25, 1.0, backend=0.5)
    report = _quantize(resnet_bert, tmp_path / "int8")
    text = {c.name: c for c in report.components}["text_encoder"].backend
    assert text is not None
    assert text.backend == "openvino"
    assert text.timing.speedup == pytest.approx(2.0)  # onnxruntime's own file against OpenVINO's build
    assert "OpenVINO runs its OpenVINO build" in text.why
    check = report.whole_graph
    assert check is not None
    assert not check.chosen
    plans = configs[-1]
    split, whole = plans[whole_module.SPLIT], plans[whole_module.WHOLE]
    assert split["openvino"] == ["text_encoder"]
    assert split["files"]["text_encoder"] == whole["files"]["text_encoder"]  # the split plan ran the build too

    bundle = load_bundle(tmp_path / "int8")
    path = bundle.openvino_path("text_encoder")
    assert path == tmp_path / "int8" / "text_encoder.openvino.onnx"
    _check_openvino_layout(onnx.load(str(path)))
    opened = _spy_openvino_sessions(monkeypatch)
    x = _inputs(resnet_bert)
    with Pipeline(resnet_bert, "cpu") as fp32, Pipeline(tmp_path / "int8") as auto:
        assert auto.whole_graph == ()
        reference, produced = fp32.run(x)["logits"], auto.run(x)["logits"]
    assert set(opened) == {path}  # "auto" runs the text encoder's build on OpenVINO, the rest on onnxruntime
    assert _min_cosine(reference, produced) > 0.98


@pytest.mark.parametrize("others", [0.5, 1.0], ids=["split-on-openvino", "split-on-onnxruntime"])
def test_a_level_one_graph_is_chosen_only_where_the_split_plan_runs_on_openvino_too(
    resnet_bert: Path, tmp_path: Path, timed: Callable, others: float
) -> None:
    timed(0.25, 0.99, backend=0.5, others=others)  # the one graph 1.01 times faster: short of the 1.02 margin
    report = _quantize(resnet_bert, tmp_path / "int8")
    on_openvino = {c.name for c in report.components if c.backend is not None and c.backend.backend == "openvino"}
    check = report.whole_graph
    assert check is not None
    assert check.timing.speedup == pytest.approx(1 / 0.99)
    if others < 1.0:
        assert on_openvino == set(COMPONENTS)
        assert check.chosen
        assert "the one graph runs the same kernels in one request" in check.why
    else:
        assert on_openvino == {"text_encoder"}
        assert not check.chosen
        assert "not measurably 1.02× faster" in check.why


def _builds_of_the_chosen_graph(report: Any) -> dict[str, Any]:
    """The OpenVINO builds tried, by component, after checking the one graph was chosen."""
    check = report.whole_graph
    assert check is not None
    assert check.chosen
    return {b.component: b for b in check.builds}


def _spy_openvino_sessions(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The files the runtime opens on OpenVINO from now on, in order."""
    from mmedge import openvino_backend

    opened: list[Path] = []
    session = openvino_backend.OpenVINOSession

    def spy(path: Path, threads: int, cache_dir: Path | None = None) -> Any:
        opened.append(Path(path))
        return session(path, threads, cache_dir)

    monkeypatch.setattr(openvino_backend, "OpenVINOSession", spy)
    return opened


def _min_cosine(reference: np.ndarray, produced: np.ndarray) -> float:
    norms = np.linalg.norm(reference, axis=-1) * np.linalg.norm(produced, axis=-1)
    return float(((reference * produced).sum(-1) / norms).min())


def _check_openvino_layout(model: onnx.ModelProto) -> None:
    """Static QDQ around MatMul/Gemm/Conv/Gather only, signed activations centred on zero (OpenVINO's INT8 layout)."""
    ops = {n.op_type for n in model.graph.node}
    assert "QuantizeLinear" in ops
    assert not ops & {"DynamicQuantizeLinear", "MatMulInteger"}
    constants = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    quantized = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    consumers: dict[str, set[str]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, set()).add(n.op_type)
    for q in quantized:
        zero = constants[q.input[2]]
        assert zero.dtype == np.int8
        assert not zero.any()  # symmetric: zero point 0
        dq = next(n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] == q.output[0])
        around = consumers[dq.output[0]] | {producers.get(q.input[0], "")}
        assert around & set(OPENVINO_RECIPE.op_types)  # the input or output of a matrix product
