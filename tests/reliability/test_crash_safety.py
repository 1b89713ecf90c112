"""kill -9 during ``export_model`` or ``quantize_bundle`` never leaves a partial bundle at the destination.

A child process (``_crash_child.py``) writes a bundle and is killed with SIGKILL: as soon as its
staging directory appears, once the staged bundle is complete but not yet renamed into place,
and after random delays. The destination then holds exactly the previous complete bundle (or
nothing, if there was none), and a re-run succeeds and removes what the dead processes left.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from tinybundle import build_tiny_bundle

from mmedge.bundle import MANIFEST_NAME, load_bundle, staged_bundle

CHILD = Path(__file__).with_name("_crash_child.py")
TESTS = Path(__file__).parents[1]


def _start(args: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, str(CHILD), *args], stdout=out, stderr=subprocess.STDOUT, env=env)


def _staging(dest: Path) -> list[Path]:
    return sorted(dest.parent.glob(f".{dest.name}.partial-*"))


def _kill_when(proc: subprocess.Popen, ready: Callable[[], bool], log: Path, timeout: float = 300) -> None:
    """SIGKILL the child as soon as ``ready()`` (polled every 2 ms); fail if it ends first."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"the child ended (rc {proc.returncode}) before the kill point:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("the kill point was never reached")
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL


def _created(dest: Path) -> Callable[[], bool]:
    return lambda: bool(_staging(dest))


def _complete(dest: Path) -> Callable[[], bool]:
    return lambda: any((s / MANIFEST_NAME).is_file() for s in _staging(dest))


def _snapshot(dest: Path) -> dict[str, bytes] | None:
    """Every file of the bundle at ``dest`` (after checking it loads), or None if there is none."""
    if not dest.exists():
        return None
    load_bundle(dest)
    return {p.name: p.read_bytes() for p in sorted(dest.iterdir())}


def _rerun(args: list[str], dest: Path, log: Path) -> None:
    """A run after the crashes succeeds and leaves no work directories of the dead processes."""
    proc = _start(args, log)
    assert proc.wait(timeout=600) == 0, log.read_text()[-3000:]
    load_bundle(dest)
    assert sorted(p.name for p in dest.parent.iterdir() if p.name.startswith(f".{dest.name}.")) == []


@pytest.mark.slow
def test_export_killed_leaves_no_bundle_or_the_previous_one(tmp_path: Path) -> None:
    dest, log = tmp_path / "bundle", tmp_path / "child.log"
    args = ["export", str(dest)]

    _kill_when(_start(args, log), _created(dest), log)
    assert not dest.exists()
    assert len(_staging(dest)) == 1  # the dead child's half-written staging directory

    build_tiny_bundle(dest)  # a previous complete bundle (its own write clears the dead child's staging)
    assert _staging(dest) == []
    previous = _snapshot(dest)
    _kill_when(_start(args, log), _complete(dest), log)
    assert _snapshot(dest) == previous
    assert len(_staging(dest)) == 1

    _rerun(args, dest, log)
    assert load_bundle(dest).manifest.model.name == "TextImageNet"


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return build_tiny_bundle(tmp_path / "fp32")


def _quantized(dest: Path) -> bool:
    return any(c.precision == "int8" for c in load_bundle(dest).manifest.components)


@pytest.mark.slow
def test_quantize_killed_leaves_the_previous_bundle(tmp_path: Path, source: Path) -> None:
    dest, log = tmp_path / "int8", tmp_path / "child.log"
    args = ["quantize", str(source), str(dest)]
    before = _snapshot(build_tiny_bundle(dest, seed=1))  # the new-destination case is export's first kill

    for ready in (_created(dest), _complete(dest)):
        _kill_when(_start(args, log), ready, log)
        assert _snapshot(dest) == before
        assert len(_staging(dest)) == 1  # the dead child's; each new run clears the one before

    rng = random.Random(0)
    for _ in range(2):  # random kill points: before, during or after the write (then the new bundle is there)
        proc = _start(args, log)
        time.sleep(rng.uniform(0.3, 4.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        after = _snapshot(dest)  # loads, so it is complete
        assert after == before or _quantized(dest)

    _rerun(args, dest, log)
    assert _quantized(dest)


def test_stale_work_directories_of_dead_processes_are_removed(tmp_path: Path) -> None:
    dest = build_tiny_bundle(tmp_path / "b")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True)
    pid = int(dead.stdout)
    stale = [tmp_path / f".b.partial-{pid}-0000", tmp_path / f".b.old-{pid}-0001"]
    kept = [
        tmp_path / f".b.partial-{os.getpid()}-0002",  # a live process (this one) is still writing
        tmp_path / f".other.partial-{pid}-0003",  # another destination's
        tmp_path / ".b.partial-legacy",  # no process id: cannot tell, so left alone
    ]
    for d in stale + kept:
        d.mkdir()
    build_tiny_bundle(dest, seed=1)
    assert [d.exists() for d in stale] == [False, False]
    assert [d.exists() for d in kept] == [True, True, True]


def test_replacing_without_an_atomic_exchange_still_publishes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where renameat2 is missing (macOS, some file systems) three renames replace the bundle."""
    from mmedge.bundle import _publish

    dest = build_tiny_bundle(tmp_path / "b")
    monkeypatch.setattr(_publish, "_exchange", lambda _a, _b: False)
    build_tiny_bundle(dest, seed=1)
    assert (
        load_bundle(dest).manifest.components[0].sha256
        != load_bundle(build_tiny_bundle(tmp_path / "c")).manifest.components[0].sha256
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "c"]


def test_a_failed_block_keeps_the_previous_bundle_and_cleans_up(tmp_path: Path) -> None:
    dest = build_tiny_bundle(tmp_path / "b")
    before = _snapshot(dest)
    with pytest.raises(OSError, match="disk full"), staged_bundle(dest) as stage:
        (stage / "x.onnx").write_bytes(b"half")
        raise OSError("disk full")
    assert _snapshot(dest) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]
