"""``mmedge export --checkpoint evil.pt``: a pickle that would run code is refused, and its code never runs.

Each payload, when unpickled, writes a marker file (through ``exec``, ``os.system`` or
``os.mkdir``). The CLI must stop with an ExportError naming the file and the safe fix, exit 1
with one ``ERROR`` line, write no bundle, and leave no marker. Each test then loads the same
file unsafely (``weights_only=False``) to prove the payload is real, so the marker check can fail.
"""

from __future__ import annotations

import argparse
import builtins
import os
from pathlib import Path
from typing import Any

import pytest
import torch

from mmedge.cli import main
from mmedge.errors import ExportError
from mmedge.export import cli as export_cli


class _Exec:
    """Unpickles as ``exec(code)``: runs arbitrary Python."""

    def __init__(self, marker: Path) -> None:
        self.code = f"__import__('pathlib').Path({str(marker)!r}).write_text('payload ran')"

    def __reduce__(self) -> tuple[Any, ...]:
        return (builtins.exec, (self.code,))


class _System:
    """Unpickles as ``os.system(command)``: runs a shell command."""

    def __init__(self, marker: Path) -> None:
        self.command = f"touch {marker}"

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (self.command,))


class _Mkdir:
    """Unpickles as ``os.mkdir(marker)``."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (self.marker,))


PAYLOADS = [
    pytest.param(lambda m: {"fc.weight": torch.zeros(2, 2), "x": _Exec(m)}, "evil.pt", "exec", id="exec"),
    pytest.param(lambda m: {"state_dict": {"w": _System(m)}}, "evil.ckpt", "system", id="os-system-nested"),
    pytest.param(lambda m: [_Mkdir(m)], "evil.bin", "mkdir", id="os-mkdir-in-a-list"),
    pytest.param(_Exec, "evil.pth", "exec", id="bare-payload"),
]


def _export_args(checkpoint: Path, out: Path) -> list[str]:
    return ["--model", "TextImageNet", "--checkpoint", str(checkpoint), "--out", str(out)]


@pytest.mark.parametrize(("payload", "name", "global_name"), PAYLOADS)
def test_export_refuses_a_code_carrying_checkpoint_and_never_runs_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], payload: Any, name: str, global_name: str
) -> None:
    marker = tmp_path / "payload-ran"
    evil = tmp_path / name
    torch.save(payload(marker), evil)
    out = tmp_path / "bundle"

    parser = argparse.ArgumentParser()
    export_cli.configure(parser)
    args = parser.parse_args(_export_args(evil, out))
    args.json = False
    with pytest.raises(ExportError, match=rf"refused to load .*{name}: it references \S*{global_name}") as info:
        export_cli.run(args)
    assert "weights_only=True" in str(info.value)
    assert "torch.save(model.state_dict()" in str(info.value)  # the fix

    assert main(["export", *_export_args(evil, out)]) == 1
    stderr = capsys.readouterr().err
    assert stderr.startswith(f"ERROR refused to load {evil}")
    assert "Traceback" not in stderr

    assert not marker.exists()
    assert not out.exists()
    assert not list(tmp_path.glob(".bundle.partial-*"))
    # the payload is real: unsafe loading runs it, so the assertions above can fail
    torch.load(evil, weights_only=False)
    assert marker.exists()


def test_a_pickle_renamed_safetensors_is_refused_without_unpickling(tmp_path: Path) -> None:
    marker = tmp_path / "payload-ran"
    evil = tmp_path / "weights.safetensors"
    torch.save({"x": _Exec(marker)}, evil)
    assert main(["export", *_export_args(evil, tmp_path / "bundle")]) == 1
    assert not marker.exists()
