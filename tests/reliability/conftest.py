"""Shared fixtures of the reliability tests: one tiny bundle and Pipeline per module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tinybundle import build_tiny_bundle

from mmedge.runtime import Pipeline


@pytest.fixture(scope="module")
def shared_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny tri-modal bundle, built once per module (tests must not modify it)."""
    return build_tiny_bundle(tmp_path_factory.mktemp("reliability") / "tiny")


@pytest.fixture(scope="module")
def shared_pipe(shared_bundle: Path) -> Iterator[Pipeline]:
    """A CPU Pipeline on the shared bundle with the default input limits."""
    with Pipeline(shared_bundle, "cpu", threads=1) as pipe:
        yield pipe
