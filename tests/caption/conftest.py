"""A CaptionNet trained once per session on the synthetic caption set, its bundles and held-out data.

Training is short (about 20 s of CPU) but long enough for the model to caption most held-out
images exactly, so its logits have clear winners: parity and INT8 agreement are measured on
meaningful captions, not on the near-ties of an untrained model.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from mmedge.data import CaptionDataset, make_captions
from mmedge.export import ExportResult, export_captioner
from mmedge.models import CaptionConfig, CaptionNet
from mmedge.quantize import QuantizationReport, quantize_bundle
from mmedge.train import train

IMAGE_SIZE = 32
# grid 8 keeps the 8x8 map after two blocks: where edges are is what tells a circle from a square
CONFIG = CaptionConfig(image_size=IMAGE_SIZE, channels=(16, 32), grid=8, feature_dim=64, embed_dim=32, hidden=64)


@dataclass(frozen=True)
class Trained:
    model: CaptionNet
    bundle: Path  # FP32, from export_captioner
    export: ExportResult
    held_out: CaptionDataset  # images the model never saw


@contextmanager
def one_thread() -> Iterator[None]:
    """Small batches gain nothing from a second thread, and on a busy machine its spin-waits cost
    several times the work itself."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(autouse=True, scope="module")
def _torch_on_one_thread() -> Iterator[None]:
    with one_thread():
        yield


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    torch.manual_seed(0)
    model = CaptionNet(CONFIG)
    example = make_captions(3, 99, image_size=IMAGE_SIZE)
    out = tmp_path_factory.mktemp("caption") / "fp32"
    with one_thread():
        train(model, make_captions(2048, 0, image_size=IMAGE_SIZE), epochs=14, batch_size=32, lr=1e-2)
        result = export_captioner(model, {"image": torch.from_numpy(example.inputs["image"])}, out=out)
    return Trained(model, out, result, make_captions(100, 1, image_size=IMAGE_SIZE))


@pytest.fixture(scope="session")
def int8(trained: Trained, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, QuantizationReport]:
    """The INT8 bundle (auto recipes) and its report: calibrated on one set, held out on another."""
    calib = make_captions(64, 2, image_size=IMAGE_SIZE)
    held = make_captions(64, 3, image_size=IMAGE_SIZE)
    out = tmp_path_factory.mktemp("caption") / "int8"
    report = quantize_bundle(  # an AccuracyWarning (below min_agreement) is an error under pytest
        trained.bundle,
        out,
        calibration=[{"image": calib.inputs["image"][i : i + 1]} for i in range(len(calib))],
        holdout=[{"image": held.inputs["image"][i : i + 8]} for i in range(0, len(held), 8)],
        min_agreement=0.95,
        speed_check=False,  # the decoder step's recipe, on any CPU (the speed check: tests/quantize/test_speed.py)
    )
    return out, report
