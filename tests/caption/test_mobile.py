"""A captioner packaged for phones still generates: its batch axis stays dynamic for the search."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmedge.errors import InputError
from mmedge.mobile import package_mobile
from mmedge.runtime import Pipeline


@pytest.fixture(scope="module")
def android(trained, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("caption") / "android"
    package_mobile(trained.bundle, out, target="android")
    return out


@pytest.mark.parametrize("options", [{}, {"strategy": "beam", "beam_size": 3}], ids=["greedy", "beam"])
def test_the_mobile_bundle_gives_the_source_bundles_captions(trained, android: Path, options: dict) -> None:
    images = trained.held_out.inputs["image"][:5]
    with Pipeline(trained.bundle, "cpu", threads=1) as source, Pipeline(android, "cpu", threads=1) as mobile:
        assert mobile.generate(images, **options).token_ids == source.generate(images, **options).token_ids


def test_fixing_the_batch_of_a_captioner_is_refused(trained, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="'batch' must stay dynamic in a bundle with a decoder"):
        package_mobile(trained.bundle, tmp_path / "out", target="android", fixed_shapes={"batch": 1})
    assert not (tmp_path / "out").exists()
