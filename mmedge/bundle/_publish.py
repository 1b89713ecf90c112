"""Writing a bundle: the manifest (hashes filled in), staged in a sibling directory and published in one step.

A crash never leaves a half-written bundle where a complete one is expected, ``--out`` never
replaces a folder that is not an mmedge bundle (unless forced), and work directories that killed
runs left behind (siblings of the output, scratch folders in the temp dir) are removed by the
next run once their owner process is gone.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from mmedge.bundle import _load
from mmedge.bundle._hashing import sha256_file
from mmedge.bundle._integrity import file_problems, files
from mmedge.bundle._parse import manifest_from_dict, manifest_to_dict
from mmedge.bundle._types import MANIFEST_NAME, Manifest
from mmedge.bundle._validate import consistency_problems
from mmedge.errors import BundleError

__all__ = ["scratch_directory", "staged_bundle", "write_manifest"]

_SHOWN = 10  # unlisted files named in the refusal


def write_manifest(directory: str | os.PathLike[str], manifest: Manifest) -> Manifest:
    """Write ``manifest.json`` into ``directory``, filling in sha256 and size of every file.

    Returns the completed manifest. The files it names must already be in ``directory``.
    """
    root = Path(directory)
    problems = [p for name, rel, _ in files(manifest) for p in file_problems(root, name, rel, None)]
    if problems:
        raise BundleError("cannot write the manifest:\n  - " + "\n  - ".join(problems))
    components = tuple(
        dataclasses.replace(c, sha256=sha256_file(root / c.file), size_bytes=(root / c.file).stat().st_size)
        for c in manifest.components
    )
    assets = tuple(
        dataclasses.replace(a, sha256=sha256_file(root / a.file), size_bytes=(root / a.file).stat().st_size)
        for a in manifest.assets
    )
    done = dataclasses.replace(manifest, components=components, assets=assets)
    problems = consistency_problems(done)
    if problems:
        raise BundleError("refusing to write an inconsistent manifest:\n  - " + "\n  - ".join(problems))
    text = json.dumps(manifest_to_dict(done), indent=2, sort_keys=False) + "\n"
    tmp = root / f".{MANIFEST_NAME}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, root / MANIFEST_NAME)
    return done


@contextmanager
def staged_bundle(out: str | os.PathLike[str], *, force: bool = False) -> Iterator[Path]:
    """Yield an empty staging directory beside ``out``; on success it replaces ``out`` atomically.

    The block writes the component files and calls :func:`write_manifest` on the staging
    directory. On any exception (or a crash) ``out`` is untouched: it keeps the previous complete
    bundle, or stays absent. An existing ``out`` is replaced only if it is empty or an mmedge
    bundle holding no file its manifest does not list, so a typo cannot delete unrelated data;
    ``force=True`` (``--force``) replaces any directory. Where the OS can swap two directories in
    one step (Linux), ``out`` is never absent, not even for an instant. Work directories that
    killed processes left beside ``out`` are removed first.
    """
    dest = Path(out)
    check_replaceable(dest, force=force)
    dest.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(dest)
    stage = _work_dir(dest, "partial")
    stage.mkdir()
    try:
        yield stage
        published = _load.load_bundle(stage)  # never publish something that would not load
        stray = _unlisted(stage, _listed(published.manifest))
        if stray:  # a stage's bug: the next run could not replace this bundle without --force
            raise BundleError(
                f"refusing to publish {dest}: the staged bundle holds files its manifest does not list "
                f"({', '.join(stray[:_SHOWN])}); list them as assets or write them elsewhere"
            )
        _fsync_dir(stage)
        check_replaceable(dest, force=force)  # again: files may have been put there while the block ran
        if dest.exists():
            _swap(stage, dest)  # the stage now holds the previous bundle, removed below
        else:
            os.replace(stage, dest)
        _fsync_dir(dest.parent)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)


def check_replaceable(dest: str | os.PathLike[str], *, force: bool = False) -> None:
    """Refuse, with a BundleError that says what to do, to replace ``dest`` unless it is safe to delete.

    Safe: an empty directory, or an mmedge bundle (a valid manifest that mmedge wrote) in which
    every file is listed by the manifest. ``force`` accepts any directory. A path that is not a
    directory (a file, a symlink) is never replaced; a path that does not exist is fine. Stages
    call this first, so a run that could not publish fails before its work, not after.
    """
    dest = Path(dest)
    if not dest.exists() and not dest.is_symlink():
        return
    if dest.is_symlink() or not dest.is_dir():
        raise BundleError(f"output {dest} exists and is not a directory; choose another --out")
    if force or not any(dest.iterdir()):
        return
    fix = "Pass --force (force=True) to replace it and everything in it, or choose another --out."
    try:
        manifest = manifest_from_dict(_load.read_manifest_data(dest))
    except BundleError as e:
        reason = "has no manifest" if not (dest / MANIFEST_NAME).exists() else f"has an unreadable manifest ({e})"
        raise BundleError(
            f"output {dest} is a non-empty directory that is not an mmedge bundle; refusing to replace it "
            f"(it {reason}). {fix}"
        ) from None
    if not any(tool == "mmedge" or tool.startswith("mmedge.") for tool in manifest.created_by):
        raise BundleError(
            f"output {dest} holds a bundle that mmedge did not write (created_by: {dict(manifest.created_by)}); "
            f"refusing to replace it. {fix}"
        )
    unlisted = _unlisted(dest, _listed(manifest))
    if unlisted:
        shown = ", ".join(unlisted[:_SHOWN]) + (", ..." if len(unlisted) > _SHOWN else "")
        raise BundleError(
            f"output {dest} is an mmedge bundle but also holds files its manifest does not list ({shown}); "
            f"refusing to replace it, which would delete them. Move them out first. {fix}"
        )


def _listed(manifest: Manifest) -> set[str]:
    """Every file a bundle may hold: its manifest, components and assets."""
    return {MANIFEST_NAME, *(PurePosixPath(rel).as_posix() for _, rel, _ in files(manifest))}


def _unlisted(root: Path, listed: set[str]) -> list[str]:
    """Files and links under ``root`` (relative, '/'-separated) not in ``listed``; stops after a few."""
    found: list[str] = []
    for folder, dirs, names in os.walk(root):
        base = Path(folder).relative_to(root)
        links = [d for d in dirs if (Path(folder) / d).is_symlink()]  # never followed: listed as entries
        for name in [*names, *links]:
            rel = (base / name).as_posix()
            if rel not in listed:
                found.append(rel)
        if len(found) > _SHOWN:
            break
    return sorted(found)


@contextmanager
def scratch_directory(kind: str) -> Iterator[Path]:
    """A private temporary directory for one run's intermediate files, removed when the block ends.

    Its name records the process that owns it (``mmedge-<kind>-<pid>-…`` in the temp dir), so a
    run removes first the scratch directories of ``kind`` whose process was killed (SIGKILL and
    power loss skip every cleanup). ``kind`` names the stage: "quantize", "mobile", ...
    """
    base = Path(tempfile.gettempdir())
    prefix = f"mmedge-{kind}-"
    for path in base.glob(f"{glob.escape(prefix)}*-*"):
        pid = path.name[len(prefix) :].partition("-")[0]
        if pid.isdigit() and not _alive(int(pid)) and _owned(path):
            shutil.rmtree(path, ignore_errors=True)
    path = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _owned(path: Path) -> bool:
    """Whether this user owns ``path`` (another user's work is theirs to clean, even in a shared /tmp)."""
    try:
        return path.lstat().st_uid == os.getuid()
    except (OSError, AttributeError):  # AttributeError: no getuid on Windows
        return not path.is_symlink()


def _work_dir(dest: Path, kind: str) -> Path:
    """A hidden sibling of ``dest`` whose name records the process that owns it."""
    return dest.parent / f".{dest.name}.{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _remove_stale(dest: Path) -> None:
    """Remove ``dest``'s work directories whose process is gone (killed while writing)."""
    for path in dest.parent.glob(f".{glob.escape(dest.name)}.*-*-*"):
        kind, _, rest = path.name[len(dest.name) + 2 :].partition("-")
        pid = rest.partition("-")[0]
        if kind in ("partial", "old") and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _swap(stage: Path, dest: Path) -> None:
    """Exchange ``stage`` and ``dest``: in one step where supported, else by three renames."""
    if _exchange(stage, dest):
        return
    old = _work_dir(dest, "old")
    os.replace(dest, old)  # a crash here leaves dest absent and the previous bundle in old
    os.replace(stage, dest)
    os.replace(old, stage)


def _exchange(a: Path, b: Path) -> bool:
    """Linux ``renameat2(RENAME_EXCHANGE)``; False where the C library or file system lacks it."""
    import ctypes

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError, TypeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
