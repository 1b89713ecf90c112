"""The tiny bundle served on a real loopback server (see tests/serving.py), and HTTP clients for it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import pytest
from serving import serving
from tinybundle import build_tiny_bundle

from mmedge.runtime import Pipeline
from mmedge.serve import ServeOptions, app_for_bundle


@pytest.fixture(scope="session")
def serve_app() -> Callable[[object], AbstractContextManager[str]]:
    """``with serve_app(app) as url``: the app on a real loopback server for the block."""
    return serving


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_bundle(tmp_path_factory.mktemp("serve") / "tiny")


@pytest.fixture(scope="module")
def pipeline(tiny_dir: Path) -> Iterator[Pipeline]:
    with Pipeline(tiny_dir, "cpu", threads=1) as pipe:
        yield pipe


@pytest.fixture(scope="module")
def base_url(tiny_dir: Path, serve_app: Callable) -> Iterator[str]:
    """The tiny bundle served by its own traced Pipeline, as `mmedge serve` does."""
    with serve_app(app_for_bundle(tiny_dir, ServeOptions(), providers="cpu", threads=1)) as url:
        yield url


@pytest.fixture
def client(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=30) as c:
        yield c
