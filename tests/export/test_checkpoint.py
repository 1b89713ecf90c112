"""Checkpoint loading: formats, wrappers, key/shape reports, and refusal of unsafe or damaged files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from mmedge.bundle import sha256_file
from mmedge.errors import ExportError
from mmedge.export import load_checkpoint


def _net(hidden: int = 4) -> nn.Module:
    torch.manual_seed(hidden)
    return nn.Sequential(nn.Linear(3, hidden), nn.ReLU(), nn.Linear(hidden, 2))


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


@pytest.mark.parametrize(
    ("suffix", "wrap"),
    [
        pytest.param(".pt", lambda sd: sd, id="pt"),
        pytest.param(".pth", lambda sd: {"state_dict": sd, "epoch": 3}, id="lightning-style"),
        pytest.param(".bin", lambda sd: {"model": {f"module.{k}": v for k, v in sd.items()}}, id="dataparallel"),
        pytest.param(".safetensors", None, id="safetensors"),
    ],
)
def test_checkpoint_formats_load_into_the_model(tmp_path: Path, suffix: str, wrap) -> None:
    trained = _net()
    torch.manual_seed(99)
    fresh = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    path = tmp_path / f"ckpt{suffix}"
    if wrap is None:
        save_file(trained.state_dict(), str(path))
    else:
        torch.save(wrap(trained.state_dict()), path)
    assert not _same_weights(trained, fresh)
    report = load_checkpoint(fresh, path)
    assert _same_weights(trained, fresh)
    assert report.loaded == 4
    assert report.sha256 == sha256_file(path)
    assert report.format == ("safetensors" if suffix == ".safetensors" else "torch")
    assert (report.missing, report.unexpected, report.mismatched) == ((), (), ())


def test_missing_unexpected_and_mismatched_keys_are_listed_by_name(tmp_path: Path) -> None:
    state = _net().state_dict()
    state["0.weight"] = torch.zeros(5, 3)  # wrong shape
    del state["2.bias"]  # missing
    state["extra.scale"] = torch.ones(1)  # unexpected
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    with pytest.raises(ExportError) as err:
        load_checkpoint(_net(), path)
    message = str(err.value)
    assert "shape mismatches: 0.weight: checkpoint [5, 3] vs model [4, 3]" in message
    assert "missing from the checkpoint: 2.bias" in message
    assert "not in the model: extra.scale" in message


def test_non_strict_loading_reports_missing_and_unexpected_keys(tmp_path: Path) -> None:
    state = _net().state_dict()
    del state["2.bias"]
    state["extra.scale"] = torch.ones(1)
    path = tmp_path / "partial.pt"
    torch.save(state, path)
    model = _net(hidden=4)
    report = load_checkpoint(model, path, strict=False)
    assert report.missing == ("2.bias",)
    assert report.unexpected == ("extra.scale",)
    assert report.loaded == 3


class _Payload:
    """Unpickling this calls ``os.mkdir(marker)``: it creates a directory, proving that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_pickle_with_a_code_payload_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "payload-ran"
    path = tmp_path / "evil.pt"
    torch.save({"0.weight": torch.zeros(4, 3), "hook": _Payload(marker)}, path)
    with pytest.raises(ExportError, match=r"refused to load .*evil\.pt.*weights_only=True"):
        load_checkpoint(_net(), path)
    assert not marker.exists()
    # the payload is real: an unsafe load does run it (so the assertion above can fail)
    torch.load(path, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize(
    ("name", "damage", "match"),
    [
        pytest.param("cut.pt", lambda b: b[: len(b) // 2], "is not a readable PyTorch checkpoint", id="truncated-pt"),
        pytest.param(
            "noise.pt", lambda _b: b"not a checkpoint at all", "is not a readable PyTorch checkpoint", id="garbage-pt"
        ),
        pytest.param(
            "cut.safetensors", lambda b: b[:20], "is not a valid safetensors file", id="truncated-safetensors"
        ),
    ],
)
def test_damaged_checkpoints_are_refused(tmp_path: Path, name: str, damage, match: str) -> None:
    good = tmp_path / ("good.safetensors" if name.endswith(".safetensors") else "good.pt")
    if good.suffix == ".safetensors":
        save_file(_net().state_dict(), str(good))
    else:
        torch.save(_net().state_dict(), good)
    (tmp_path / name).write_bytes(damage(good.read_bytes()))
    with pytest.raises(ExportError, match=match):
        load_checkpoint(_net(), tmp_path / name)


@pytest.mark.parametrize(
    ("setup", "match"),
    [
        pytest.param(lambda p: None, "does not exist", id="missing-file"),
        pytest.param(lambda p: p.write_bytes(b"x"), "has suffix '.onnx'", id="wrong-suffix"),
    ],
)
def test_checkpoint_path_problems(tmp_path: Path, setup, match: str) -> None:
    path = tmp_path / "weights.onnx"
    setup(path)
    with pytest.raises(ExportError, match=match):
        load_checkpoint(_net(), path)


def test_a_whole_pickled_model_is_refused_with_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save(_net(), path)
    with pytest.raises(ExportError, match=r"torch\.save\(model\.state_dict\(\)"):
        load_checkpoint(_net(), path)
