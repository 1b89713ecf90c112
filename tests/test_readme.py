"""README.md runs as written: its ``export.toml`` block and its ``my_pkg.model:MyNet`` command lines,
on a small model of that shape defined here (a package written to a temp dir on ``sys.path``).

Blocks are read from README.md itself, so an edit to the README that breaks them fails here.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch

from mmedge.bundle import load_bundle
from mmedge.cli import main
from mmedge.export import load_config
from mmedge.export._config import example_inputs

README = Path(__file__).resolve().parents[1] / "README.md"

MY_PKG_MODEL = '''
"""The user's model the README's commands name: forward(text, image), text through an nn.Embedding."""

import torch
from torch import nn


class TextEncoder(nn.Module):
    def __init__(self, vocab: int = 1000, dim: int = 16) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        return self.embed(text).mean(1)


class MyNet(nn.Module):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.text_encoder = TextEncoder()
        self.backbone = nn.Sequential(
            nn.Conv2d(3, 16, 7, stride=4),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(16 + 32, num_classes)

    def forward(self, text: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.text_encoder(text), self.backbone(image)], dim=1))
'''


def readme_block(language: str, after: str) -> str:
    """The first ```language block of README.md that follows the text ``after``."""
    text = README.read_text(encoding="utf-8")
    start = text.index(after)
    match = re.compile(rf"^```{language}\n(.*?)^```", re.MULTILINE | re.DOTALL).search(text, start)
    assert match, f"README.md has no ```{language} block after {after!r}"
    return match.group(1)


def readme_command(prefix: str) -> list[str]:
    """The arguments (after ``mmedge``) of the README command line that starts with ``prefix``."""
    for block in re.findall(r"^```bash\n(.*?)^```", README.read_text(encoding="utf-8"), re.MULTILINE | re.DOTALL):
        for line in block.splitlines():
            if line.startswith(prefix):
                return shlex.split(line, comments=True)[1:]
    raise AssertionError(f"README.md has no command line starting with {prefix!r}")


@pytest.fixture
def my_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory as the README assumes: my_pkg importable, my.pt and export.toml beside it."""
    package = tmp_path / "my_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("", encoding="utf-8")
    (package / "model.py").write_text(MY_PKG_MODEL, encoding="utf-8")
    (tmp_path / "export.toml").write_text(readme_block("toml", "`export.toml` describes"), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    # the benchmark's PyTorch worker is another process: it finds my_pkg through PYTHONPATH
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    from my_pkg.model import MyNet

    torch.manual_seed(0)
    torch.save(MyNet(**load_config(tmp_path / "export.toml").model).state_dict(), tmp_path / "my.pt")
    return tmp_path


def test_export_toml_block_gives_every_input(my_project: Path) -> None:
    from my_pkg.model import MyNet

    config = load_config(my_project / "export.toml")
    tensors = example_inputs(MyNet(**config.model), config, batch=1)
    assert set(tensors) == set(config.inputs) == {"text", "image"}
    # no `high` in the README: the bound is the vocabulary of the nn.Embedding that reads the text
    assert config.inputs["text"].high is None
    assert int(tensors["text"].max()) < 1000


def test_export_command_runs_as_written(my_project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = readme_command("mmedge export --model my_pkg.model:MyNet")
    assert main(argv) == 0, capsys.readouterr().err
    manifest = load_bundle(my_project / "bundle").manifest
    assert {i.name for i in manifest.inputs} == {"text", "image"}
    assert {c.name for c in manifest.components} == {"text_encoder", "image_encoder", "fusion_head"}
    assert "--monolithic" in argv
    assert any(a.name == "monolithic" for a in manifest.assets)


def _write_samples(folder: Path, n: int, seed: int) -> None:
    folder.mkdir()
    rng = np.random.default_rng(seed)
    for i in range(n):
        np.savez(
            folder / f"{i:03d}.npz",
            text=rng.integers(0, 1000, (1, 16)).astype(np.int64),
            image=rng.standard_normal((1, 3, 224, 224)).astype(np.float32),
        )


def test_quantize_and_bench_commands_run_as_written(my_project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(readme_command("mmedge export --model my_pkg.model:MyNet")) == 0
    _write_samples(my_project / "samples", 8, seed=0)
    _write_samples(my_project / "heldout", 4, seed=1)
    assert main(readme_command("mmedge quantize bundle/")) == 0, capsys.readouterr().err
    load_bundle(my_project / "bundle-int8")
    bench = readme_command("mmedge bench bundle-int8/")
    assert "--config" in bench  # MyNet needs num_classes: the PyTorch baseline is built from export.toml
    assert main([*bench, "--iterations", "3", "--warmup", "1", "--no-profile"]) == 0, capsys.readouterr().err
    assert (my_project / "bench" / "bench.json").is_file()
