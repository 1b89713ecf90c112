"""``mmedge quantize --calibration data.jsonl``: raw files and strings, preprocessed as the bundle will."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rawsamples import write_samples

from mmedge.bundle import load_bundle
from mmedge.cli import main
from mmedge.runtime import input_preparer


def test_raw_files_calibrate_the_bundle(tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    calibration, holdout = write_samples(tmp_path, 12, seed=0), write_samples(tmp_path, 6, seed=1)
    args = ["quantize", str(tiny_bundle), "--out", str(tmp_path / "out"), "--calibration", str(calibration)]
    assert main([*args, "--holdout", str(holdout), "--json", "--no-speed-check", "--samples", "10"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["calibration_samples"] == 10
    load_bundle(tmp_path / "out")
    first = json.loads(calibration.read_text().splitlines()[0])
    prepared = input_preparer(tiny_bundle)({**first, "image": str(tmp_path / first["image"]),
                                            "audio": str(tmp_path / first["audio"])})  # fmt: skip
    assert prepared["image"].shape == (1, 3, 8, 8)  # resized from 64 x 48
    assert prepared["audio"].shape == (1, 160)  # resampled from 44.1 kHz, cut to 0.01 s


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "line 2 is not JSON"),
        ('["text"]', "line 2 holds a list; write an object of input name → value"),
        ('{"text": "sea", "image": "media/none.png", "audio": "media/0-0.wav"}', "line 2: input 'image'"),
    ],
)
def test_a_bad_line_is_named(
    tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture, line: str, message: str
) -> None:
    data = write_samples(tmp_path, 1, seed=0)
    data.write_text(data.read_text().strip() + "\n" + line + "\n", encoding="utf-8")
    args = ["quantize", str(tiny_bundle), "--out", str(tmp_path / "out"), "--calibration", str(data)]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert f"ERROR calibration file {data}, " + message.split(" ", 2)[0] in err
    assert message in err
    assert not (tmp_path / "out").exists()
