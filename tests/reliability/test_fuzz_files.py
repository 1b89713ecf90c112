"""Fuzzing file inputs: random, truncated and corrupted image/sound files, under any suffix, as either modality.

Real files of every format Pillow and libsndfile read here are cut at random points, have
random bytes overwritten, or are replaced by random bytes, then passed by path (str or Path,
alone or in a batch) as the image or the audio input. Each call gives a valid result or an
MMEdgeError naming the input — never a Pillow/libsndfile/numpy exception.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from reliability._files import png_header, sample_files, wav_header
from reliability._strategies import FUZZ
from reliability.test_fuzz_pipeline import assert_valid, outcome
from tinybundle import tiny_inputs

from mmedge.runtime import Pipeline

SUFFIXES = [".png", ".jpg", ".bmp", ".gif", ".tiff", ".webp", ".wav", ".flac", ".ogg", ".aiff", ".txt", ""]


@pytest.fixture(scope="module")
def originals(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    """Real files of every format, plus headers that lie about their size."""
    files = sample_files(tmp_path_factory.mktemp("samples"))
    return [*files.values(), png_header(6000, 6000), png_header(50_000, 50_000), wav_header(10**9)]


@st.composite
def damaged(draw: st.DrawFn, originals: list[bytes]) -> bytes:
    """A real file cut short, with bytes overwritten, or both; or random bytes."""
    if draw(st.integers(0, 5)) == 0:
        return draw(st.binary(max_size=256))
    data = bytearray(draw(st.sampled_from(originals)))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    for _ in range(draw(st.integers(0, 4))):
        if data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


# Pillow warns (UserWarning) about corrupt TIFF/EXIF metadata and reads on; that is not a failure
# of mmedge, and the call still ends in a result or an InputError, which is what is checked.
@pytest.mark.filterwarnings("ignore::UserWarning:PIL.*")
@FUZZ
@given(data=st.data())
def test_damaged_files_are_refused_or_read(
    shared_pipe: Pipeline, originals: list[bytes], tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    directory = tmp_path_factory.getbasetemp() / "fuzz-files"
    directory.mkdir(exist_ok=True)
    key = data.draw(st.sampled_from(["image", "audio"]), label="key")
    paths = []
    for i in range(data.draw(st.integers(1, 2), label="files")):
        path = directory / f"input{i}{data.draw(st.sampled_from(SUFFIXES), label='suffix')}"
        path.write_bytes(data.draw(damaged(originals), label="content"))
        paths.append(path if data.draw(st.booleans(), label="as Path") else str(path))
    value: Any = paths if len(paths) > 1 or data.draw(st.booleans(), label="in a list") else paths[0]
    batch = len(paths)
    inputs = {**tiny_inputs(batch=batch), key: value}
    result = outcome(lambda: shared_pipe.run(inputs), key)
    if result is not None:
        assert_valid(result, {"logits"}, batch, 3)
