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


def test_every_top_level_package_folder_maps_to_mmedge_name() -> None:
    """DESIGN.md: each top-level folder is ``mmedge.<folder>``; the core is ``mmedge/`` itself."""
    folders = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests", "benchmarks"}
    expected = {"mmedge": "mmedge"} | {f"mmedge.{f}": f for f in folders - {"mmedge"}}
    assert PYPROJECT["tool"]["setuptools"]["package-dir"] == expected


def test_every_listed_package_exists_and_every_package_is_listed() -> None:
    mapping = PYPROJECT["tool"]["setuptools"]["package-dir"]
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    found = set()
    for prefix, folder in mapping.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder).parts
            name = ".".join((prefix, *rel))
            if not any(
                name.startswith(f"{other}.") or name == other
                for other in mapping
                if other != prefix and len(other) > len(prefix)
            ):
                found.add(name)
    assert found == listed


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
    mapping = PYPROJECT["tool"]["setuptools"]["package-dir"]
    for module, _, _ in COMMANDS.values():
        package = max((p for p in mapping if module.startswith(f"{p}.")), key=len)
        path = ROOT / mapping[package] / (module.removeprefix(f"{package}.").replace(".", "/") + ".py")
        assert path.is_file(), f"{module} is registered but missing"
