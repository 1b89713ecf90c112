"""Checkpoint loading: formats, wrappers, key/shape reports, and refusal of unsafe or damaged files."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from mmedge.bundle import sha256_file
from mmedge.errors import CheckpointError, CheckpointWarning, ExportError
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
        pytest.param(".pt", lambda sd: {f"_orig_mod.{k}": v for k, v in sd.items()}, id="torch-compile"),
        pytest.param(
            ".ckpt",
            lambda sd: {
                "state_dict": {**{f"model._orig_mod.{k}": v for k, v in sd.items()}, "loss.pos_weight": torch.ones(2)},
                "epoch": 7,
                "hyper_parameters": {"lr": 1e-3, "name": "run"},
            },
            id="lightning-module-with-a-loss",
        ),
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


def test_a_wrapper_s_key_prefix_is_found_and_said(tmp_path: Path) -> None:
    state = {f"model._orig_mod.{k}": v for k, v in _net().state_dict().items()}
    torch.save({"state_dict": {**state, "loss.pos_weight": torch.ones(2)}}, tmp_path / "last.ckpt")
    report = load_checkpoint(_net(hidden=4), tmp_path / "last.ckpt")
    assert report.notes[-1] == (
        "weights read under the key prefix 'model._orig_mod.' (4 tensors); 1 other entries ignored: loss.pos_weight"
    )
    half = {k: v for k, v in state.items() if k.startswith("model._orig_mod.0.")}  # 2 of the model's 4 keys
    torch.save({**half, "2.weight": torch.zeros(2, 4)}, tmp_path / "mixed.pt")
    with pytest.raises(CheckpointError, match=r"missing from the checkpoint: 2\.bias\n"):
        load_checkpoint(_net(), tmp_path / "mixed.pt")  # prefix taken (2 hits > 1), the rest reported


def test_training_metadata_beside_the_weights_is_skipped_never_built(tmp_path: Path) -> None:
    import argparse
    import pathlib

    import numpy as np

    trained = _net()
    hparams = {"args": argparse.Namespace(lr=1e-3), "data": pathlib.PurePosixPath("/data"), "best": np.float64(0.9),
               "ref_type": dict}  # fmt: skip
    torch.save({"state_dict": trained.state_dict(), "hyper_parameters": hparams}, tmp_path / "epoch=3.ckpt")
    with pytest.raises(pickle.UnpicklingError, match=r"GLOBAL argparse\.Namespace"):
        torch.load(tmp_path / "epoch=3.ckpt", weights_only=True)  # what the fallback is for
    fresh = _net(hidden=4)
    torch.manual_seed(5)
    torch.nn.init.normal_(fresh[0].weight)
    report = load_checkpoint(fresh, tmp_path / "epoch=3.ckpt")
    assert _same_weights(trained, fresh)
    assert report.notes[0].startswith(
        "5 kind(s) of non-tensor object read as placeholders, not loaded: argparse.Namespace, pathlib.PurePosixPath"
    )
    assert "builtins.dict" in report.notes[0]
    torch.save({"state_dict": trained.state_dict(), "hyper_parameters": {"hook": eval}}, tmp_path / "eval.ckpt")
    with pytest.raises(ExportError, match=r"refused to load .*eval\.ckpt: it references eval"):
        load_checkpoint(fresh, tmp_path / "eval.ckpt")  # a builtin that is code, not a type: refused


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


def _with(**changes: torch.Tensor) -> dict[str, torch.Tensor]:
    return {**_net().state_dict(), **changes}


@pytest.mark.parametrize(
    ("state", "match"),
    [
        pytest.param(
            lambda: _with(**{"0.weight": _net().state_dict()["0.weight"].to_sparse()}),
            r"holds sparse tensors, which cannot load into the model's dense parameters: 0\.weight \(sparse_coo\)\. "
            r"Densify them and re-save: torch\.save\(\{k: t\.to_dense\(\)",
            id="sparse",
        ),
        pytest.param(
            lambda: _with(**{"0.bias": torch.tensor([0.0, float("nan"), float("nan"), 1.0])}),
            r"has non-finite weights: 0\.bias \(2 NaN\)\. Training diverged",
            id="nan",
        ),
        pytest.param(
            lambda: _with(**{"0.weight": torch.full((4, 3), float("inf")), "2.bias": torch.tensor([float("-inf"), 0])}),
            r"non-finite weights: 0\.weight \(12 Inf\), 2\.bias \(1 Inf\)\. .*Load a checkpoint saved before",
            id="inf-listed-together",
        ),
    ],
)
def test_unloadable_values_are_refused_by_name(tmp_path: Path, state, match: str) -> None:
    path = tmp_path / "values.pt"
    torch.save(state(), path)
    model = _net(hidden=4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(model, path)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing half-loaded


def test_an_infinite_buffer_loads(tmp_path: Path) -> None:
    """A causal attention mask is a buffer of -inf: only parameters must be finite."""
    model = _net()
    model.register_buffer("mask", torch.triu(torch.full((3, 3), float("-inf")), diagonal=1))
    path = tmp_path / "masked.pt"
    torch.save(model.state_dict(), path)
    assert load_checkpoint(model, path).loaded == 5


def test_float64_weights_are_cast_with_a_warning(tmp_path: Path) -> None:
    trained = _net()
    path = tmp_path / "double.safetensors"
    save_file({k: v.double() for k, v in trained.state_dict().items()}, str(path))
    model = _net(hidden=4)
    torch.manual_seed(5)
    model[0].reset_parameters()
    with pytest.warns(CheckpointWarning, match=r"4 float64 tensor\(s\) cast float64 → float32 .*: 0\.bias, 0\.weight"):
        report = load_checkpoint(model, path)
    assert _same_weights(trained, model)
    assert all(v.dtype == torch.float32 for v in model.state_dict().values())
    assert report.notes == ("cast 4 float64 tensor(s) to the model's lower precision",)
    # a float64 model keeps them as they are, silently
    load_checkpoint(model.double(), path)


@pytest.mark.slow
def test_value_checks_at_resnet50_size(tmp_path: Path) -> None:
    """A ResNet-50 checkpoint (25M parameters): one NaN deep inside is found and named; a float64 copy
    warns once, listing the first tensors and how many more."""
    from torchvision.models import resnet50

    model = resnet50()
    state = model.state_dict()
    state["layer4.2.conv3.weight"] = state["layer4.2.conv3.weight"].clone()
    state["layer4.2.conv3.weight"][7, 11, 0, 0] = float("nan")
    path = tmp_path / "resnet50.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"non-finite weights: layer4\.2\.conv3\.weight \(1 NaN\)\."):
        load_checkpoint(model, path)
    doubled = tmp_path / "resnet50-double.pt"
    torch.save({k: v.double() if v.is_floating_point() else v for k, v in model.state_dict().items()}, doubled)
    with pytest.warns(
        CheckpointWarning, match=r"cast float64 → float32 .*conv1\.weight, bn1\.weight.*\(and \d+ more\)"
    ):
        report = load_checkpoint(model, doubled)
    assert report.loaded == len(model.state_dict())
