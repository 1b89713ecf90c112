"""Bundles for the quantize tests: the tiny onnx.helper bundle, variants of it, and a small
torch-built bundle (conv image encoder, LSTM text encoder, MLP head) written with the same
``staged_bundle`` + ``write_manifest`` calls that export uses."""

from __future__ import annotations

import dataclasses
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from tinybundle import tiny_inputs

from mmedge.bundle import (
    RAW_INPUTS,
    Component,
    Edge,
    ImagePreprocess,
    InputSpec,
    Manifest,
    ModelInfo,
    OutputSpec,
    TensorSpec,
    TextPreprocess,
    load_bundle,
    staged_bundle,
    write_manifest,
)

PLANTED = "planted_outlier"  # the node the fallback test must find
OPSET = 17


def _replace_component(bundle: Path, name: str, model: onnx.ModelProto, out: Path) -> Path:
    """A copy of ``bundle`` at ``out`` with component ``name``'s graph replaced by ``model``."""
    src = load_bundle(bundle)
    with staged_bundle(out) as stage:
        for f in [c.file for c in src.manifest.components] + [a.file for a in src.manifest.assets]:
            shutil.copyfile(src.path / f, stage / f)
        onnx.save(model, str(stage / src.manifest.component(name).file))
        write_manifest(stage, src.manifest)
    return out


def _planted_head(seed: int = 2) -> onnx.ModelProto:
    """The tiny bundle's head with a hidden layer and a planted sensitive node.

    ``planted_outlier`` multiplies hidden unit 0 (biased to be always on) by 1e5. The next layer
    ignores unit 0 (zero weights), so FP32 logits do not depend on it — but its range sets the
    INT8 scale of the whole tensor (and of the Mul's constant), and the units that carry the
    information round to zero: INT8 logits are all zero, so argmax says class 0 — which this
    head (seed 2) never predicts on the test samples. Only keeping the tensor FP32 (the Mul and
    the classifier reading it) repairs it.
    """
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((12, 16)).astype(np.float32)
    w2 = rng.standard_normal((16, 3)).astype(np.float32)
    w2[0] = 0.0
    scale = np.ones(16, np.float32)
    scale[0] = 1e5
    inits = [
        numpy_helper.from_array(w1, "w1"),
        numpy_helper.from_array(np.eye(1, 16, dtype=np.float32)[0] * 20.0, "b1"),  # unit 0 always on
        numpy_helper.from_array(scale, "scale"),
        numpy_helper.from_array(w2, "w2"),
        numpy_helper.from_array(np.zeros(3, np.float32), "b2"),
    ]
    nodes = [
        helper.make_node(
            "Concat", ["text_features", "image_features", "audio_features"], ["cat"], axis=1, name="concat"
        ),
        helper.make_node("Gemm", ["cat", "w1", "b1"], ["h"], name="hidden"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("Mul", ["r", "scale"], ["m"], name=PLANTED),
        helper.make_node("Gemm", ["m", "w2", "b2"], ["logits"], name="classifier"),
    ]
    feats = [
        helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", 4])
        for n in ("text_features", "image_features", "audio_features")
    ]
    out = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])]
    model = helper.make_model(
        helper.make_graph(nodes, "fusion_head", feats, out, inits), opset_imports=[helper.make_opsetid("", OPSET)]
    )
    model.ir_version = 9
    return model


@pytest.fixture
def planted_bundle(tiny_bundle: Path, tmp_path: Path) -> Path:
    return _replace_component(tiny_bundle, "fusion_head", _planted_head(), tmp_path / "planted")


@pytest.fixture
def tiny_samples() -> Callable[[int], list[dict[str, np.ndarray]]]:
    """``n`` valid samples of 2 examples each for the tiny bundle."""
    return lambda n, seed=0: [tiny_inputs(batch=2, seed=seed * 1000 + i) for i in range(n)]


# ---------------------------------------------------------------------------------------------
# a torch-built bundle


VOCAB_SIZE, SEQ, IMAGE, CLASSES = 40, 12, 16, 5


def _torch_modules():
    import torch
    from torch import nn

    class Text(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embedding = nn.Embedding(VOCAB_SIZE, 32)
            self.lstm = nn.LSTM(32, 64, batch_first=True)

        def forward(self, text):
            _, (h, _) = self.lstm(self.embedding(text))
            return h[-1]

    class Image(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(
                nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
                nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 64),
            )  # fmt: skip

        def forward(self, image):
            return self.net(image)

    class Head(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(
                nn.Linear(128, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, CLASSES)
            )

        def forward(self, text_features, image_features):
            return self.net(torch.cat([text_features, image_features], dim=1))

    torch.manual_seed(0)
    return Text().eval(), Image().eval(), Head().eval()


def _export(module, args: tuple, path: Path, *, inputs: list[str], outputs: list[str], dynamic: dict) -> None:
    import torch

    # The TorchScript exporter on purpose: it keeps the LSTM's sequence axis dynamic (dynamo fixes it).
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "You are using the legacy TorchScript-based ONNX export", DeprecationWarning)
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=dynamic,
            opset_version=OPSET,
            dynamo=False,
        )


def _build_torch_bundle(out: Path) -> Path:
    """Write the torch-built conv + LSTM + MLP bundle to ``out``."""
    import torch

    text, image, head = _torch_modules()
    batch = {0: "batch"}
    feats = (
        TensorSpec("text_features", "float32", ("batch", 64)),
        TensorSpec("image_features", "float32", ("batch", 64)),
    )
    with staged_bundle(out) as stage:
        text_io = {"text": {0: "batch", 1: "seq"}, "text_features": batch}
        _export(
            text,
            (torch.zeros(1, SEQ, dtype=torch.long),),
            stage / "text.onnx",
            inputs=["text"],
            outputs=["text_features"],
            dynamic=text_io,
        )
        image_io = {"image": batch, "image_features": batch}
        _export(
            image,
            (torch.zeros(1, 3, IMAGE, IMAGE),),
            stage / "image.onnx",
            inputs=["image"],
            outputs=["image_features"],
            dynamic=image_io,
        )
        head_in = ["text_features", "image_features"]
        head_io = dict.fromkeys([*head_in, "logits"], batch)
        _export(
            head,
            (torch.zeros(1, 64), torch.zeros(1, 64)),
            stage / "head.onnx",
            inputs=head_in,
            outputs=["logits"],
            dynamic=head_io,
        )
        manifest = Manifest(
            model=ModelInfo("TorchConvLSTM", "tests.quantize"),
            inputs=(
                InputSpec("text", "text", "int64", ("batch", "seq"), (1, SEQ), TextPreprocess(max_length=SEQ)),
                InputSpec(
                    "image",
                    "image",
                    "float32",
                    ("batch", 3, IMAGE, IMAGE),
                    (1, 3, IMAGE, IMAGE),
                    ImagePreprocess(size=(IMAGE, IMAGE)),
                ),
            ),
            components=(
                Component(
                    "text_encoder",
                    "text.onnx",
                    "encoder",
                    (TensorSpec("text", "int64", ("batch", "seq")),),
                    feats[:1],
                    "text",
                    exporter="torchscript",
                    opset=OPSET,
                ),
                Component(
                    "image_encoder",
                    "image.onnx",
                    "encoder",
                    (TensorSpec("image", "float32", ("batch", 3, IMAGE, IMAGE)),),
                    feats[1:],
                    "image",
                    exporter="torchscript",
                    opset=OPSET,
                ),
                Component(
                    "fusion_head",
                    "head.onnx",
                    "head",
                    feats,
                    (TensorSpec("logits", "float32", ("batch", CLASSES)),),
                    exporter="torchscript",
                    opset=OPSET,
                ),
            ),
            wiring=(
                Edge(RAW_INPUTS, "text", "text_encoder", "text"),
                Edge(RAW_INPUTS, "image", "image_encoder", "image"),
                Edge("text_encoder", "text_features", "fusion_head", "text_features"),
                Edge("image_encoder", "image_features", "fusion_head", "image_features"),
            ),
            outputs=(OutputSpec("logits", "fusion_head", "logits", "logits", tuple(f"c{i}" for i in range(CLASSES))),),
        )
        write_manifest(stage, manifest)
    return out


def _torch_samples(n: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [
        {
            "text": rng.integers(1, VOCAB_SIZE, (1, int(rng.integers(4, SEQ + 1)))).astype(np.int64),
            "image": rng.standard_normal((1, 3, IMAGE, IMAGE)).astype(np.float32),
        }
        for _ in range(n)
    ]


@pytest.fixture(scope="session")
def torch_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    return _build_torch_bundle(tmp_path_factory.mktemp("torch") / "bundle")


@pytest.fixture(scope="session")
def torch_samples() -> Callable[[int, int], list[dict[str, np.ndarray]]]:
    """``torch_samples(n, seed)``: one-example samples for the torch bundle, sequence lengths vary."""
    return _torch_samples


@pytest.fixture
def marked_bundle(tiny_bundle: Path, tmp_path: Path) -> Callable[[str], Path]:
    """``marked_bundle(precision)``: a copy of the tiny bundle whose manifest marks every component so."""
    return lambda precision: _with_precision(tiny_bundle, precision, tmp_path / f"marked-{precision}")


def _with_precision(bundle: Path, precision: str, out: Path) -> Path:
    src = load_bundle(bundle)
    with staged_bundle(out) as stage:
        for f in [c.file for c in src.manifest.components] + [a.file for a in src.manifest.assets]:
            shutil.copyfile(src.path / f, stage / f)
        comps = tuple(dataclasses.replace(c, precision=precision) for c in src.manifest.components)
        write_manifest(stage, dataclasses.replace(src.manifest, components=comps))
    return out
