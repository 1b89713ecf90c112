"""``mmedge bench --torch pkg:Class --config export.toml``: the PyTorch baseline built with the
constructor arguments of the config's ``[model]`` table, read by export's loader."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mmedge.bench import bench
from mmedge.cli import main
from mmedge.errors import ExportError, InputError

MODEL = '''
from dataclasses import dataclass

import torch
from torch import nn


class _Pool(nn.Module):
    def __init__(self, conv):
        super().__init__()
        self.conv = conv

    def forward(self, x):
        return torch.relu(self.conv(x)).flatten(2).mean(2)


class Sized(nn.Module):
    """The tiny bundle's twin that cannot be built without arguments."""

    def __init__(self, width: int, classes: int = 3):
        super().__init__()
        self.text_encoder = nn.EmbeddingBag(8, width)
        self.image_encoder = _Pool(nn.Conv2d(3, width, 3, padding=1))
        self.audio_encoder = _Pool(nn.Conv1d(1, width, 5, stride=2))
        self.head = nn.Linear(3 * width, classes)

    def forward(self, text, image, audio):
        features = (self.text_encoder(text), self.image_encoder(image), self.audio_encoder(audio.unsqueeze(1)))
        return self.head(torch.cat(features, dim=1))


@dataclass
class SizedConfig:
    width: int = 4


class FromDataclass(Sized):
    def __init__(self, config: SizedConfig):
        super().__init__(config.width)
'''


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user module on the workers' PYTHONPATH and an export.toml with constructor arguments."""
    (tmp_path / "sized_model.py").write_text(MODEL, encoding="utf-8")
    (tmp_path / "export.toml").write_text("[model]\nwidth = 4\n", encoding="utf-8")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    return tmp_path


def _bench(bundle: Path, **kwargs: object):
    return bench(bundle, iterations=2, warmup=0, threads=1, profile=False, monolithic=False, **kwargs)


@pytest.mark.parametrize("model", ["sized_model:Sized", "sized_model:FromDataclass"])
def test_torch_baseline_is_built_from_the_config(tiny_bundle: Path, project: Path, model: str) -> None:
    report = _bench(tiny_bundle, torch_model=model, config=project / "export.toml")
    assert report.variant("PyTorch eager FP32").at(1) is not None


def test_without_config_the_error_points_to_it(tiny_bundle: Path, project: Path) -> None:
    with pytest.raises(InputError, match=r"constructible without arguments .*--config export.toml"):
        _bench(tiny_bundle, torch_model="sized_model:Sized")


def test_config_errors_come_before_any_process(tiny_bundle: Path, project: Path) -> None:
    with pytest.raises(InputError, match="a config was given without a PyTorch model"):
        _bench(tiny_bundle, config=project / "export.toml")
    (project / "bad.toml").write_text("[modle]\nwidth = 4\n", encoding="utf-8")
    with pytest.raises(ExportError, match=r"unknown top-level section \['modle'\]"):
        _bench(tiny_bundle, torch_model="sized_model:Sized", config=project / "bad.toml")


def test_cli_config_flag(tiny_bundle: Path, project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["bench", str(tiny_bundle), "--torch", "sized_model:Sized", "--config", str(project / "export.toml")]
    assert main([*args, "--iterations", "2", "--warmup", "0", "--threads", "1", "--no-profile", "--json"]) == 0
    assert "PyTorch eager FP32" in capsys.readouterr().out
