"""The install contract: a torch-free base, the documented extras, and a CLI that loads lazily."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from mmedge.cli import COMMANDS, main

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
TORCH_PACKAGES = ("torch", "torchvision", "torchaudio")


def _names(requirements: list[str]) -> set[str]:
    return {r.split(";")[0].split("[")[0].split("=")[0].split(">")[0].split("<")[0].strip() for r in requirements}


def test_base_install_does_not_pull_torch() -> None:
    assert not _names(PYPROJECT["project"]["dependencies"]) & set(TORCH_PACKAGES)


def test_documented_extras_exist() -> None:
    assert {"export", "hf", "gpu", "serve", "test"} <= set(PYPROJECT["project"]["optional-dependencies"])


def test_stages_map_to_their_folders() -> None:
    assert PYPROJECT["tool"]["setuptools"]["package-dir"] == {
        "mmedge": "mmedge",
        "mmedge.export": "export",
        "mmedge.runtime": "runtime",
        "mmedge.quantize": "quantize",
    }


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci in (ROOT / "README.md").read_text()


@pytest.mark.parametrize("command", ["inspect", "run", "quantize", "bench", "mobile"])
def test_torch_free_commands_do_not_import_torch(command: str) -> None:
    code = (
        "import sys; from mmedge.cli import main\n"
        f"try:\n    main([{command!r}, '--help'])\nexcept SystemExit:\n    pass\n"
        "sys.exit(3 if 'torch' in sys.modules else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr or "torch was imported"


def test_unknown_command_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_every_command_has_a_module() -> None:
    for module, _, _ in COMMANDS.values():
        path = module.replace("mmedge.export", "export").replace("mmedge.runtime", "runtime")
        path = path.replace("mmedge.quantize", "quantize").replace(".", "/")
        assert (ROOT / f"{path}.py").is_file(), f"{module} is registered but missing"
