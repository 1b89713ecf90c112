"""Options of package_mobile / ``mmedge mobile``: bad values are typed errors naming the option."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmedge.cli import main
from mmedge.errors import BundleError, InputError
from mmedge.mobile.api import package_mobile, parse_fixed_shapes


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param({"fixed_shapes": {"sq": 3}}, "dim 'sq' is not a dim of this bundle", id="unknown-dim"),
        pytest.param({"fixed_shapes": {"seq": 0}}, "dim 'seq' must be a positive integer", id="zero"),
        pytest.param({"fixed_shapes": {"samples": -160}}, "dim 'samples' must be a positive integer", id="negative"),
        pytest.param({"fixed_shapes": {"seq": "8"}}, "dim 'seq' must be a positive integer", id="not-int"),
        pytest.param({"target": "windows"}, r"target \(--target\) must be one of android, ios, generic", id="target"),
        pytest.param({"optimization": "max"}, r"optimization \(--optimization\) must be one of", id="optimization"),
    ],
)
def test_bad_options_are_input_errors_naming_the_option(
    tiny_bundle: Path, tmp_path: Path, options: dict, message: str
) -> None:
    with pytest.raises(InputError, match=message) as caught:
        package_mobile(tiny_bundle, tmp_path / "out", **options)
    assert "--" in str(caught.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("seq", id="no-size"),
        pytest.param("seq=abc", id="not-a-number"),
        pytest.param("=3", id="no-name"),
        pytest.param("seq=3,seq=4", id="twice"),
    ],
)
def test_malformed_fixed_shapes_text(text: str) -> None:
    with pytest.raises(InputError, match=r"fixed_shapes \(--fixed-shapes\)"):
        parse_fixed_shapes(text)


def test_fixed_shapes_text_is_parsed() -> None:
    assert parse_fixed_shapes("batch=1, seq=16,samples=16000") == {"batch": 1, "seq": 16, "samples": 16000}


def test_an_ort_bundle_cannot_be_packaged_again(tiny_bundle: Path, tmp_path: Path) -> None:
    package_mobile(tiny_bundle, tmp_path / "m1", target="ios")
    with pytest.raises(BundleError, match="already in ORT format"):
        package_mobile(tmp_path / "m1", tmp_path / "m2")


def test_cli_writes_the_bundle_and_prints_json(
    tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "m"
    assert (
        main(["mobile", str(tiny_bundle), "--out", str(out), "--target", "ios", "--fixed-shapes", "seq=4", "--json"])
        == 0
    )
    data = json.loads(capsys.readouterr().out)
    assert data["target"] == "ios"
    assert data["fixed_dims"] == {"batch": 1, "samples": 160, "seq": 4}
    assert [e["ep"] for e in data["components"][0]["eps"]] == ["CoreML", "XNNPACK"]
    assert (out / "required_operators.config").is_file()


def test_cli_prints_a_table_and_the_fixes(
    tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["mobile", str(tiny_bundle), "--out", str(tmp_path / "m"), "--target", "android"]) == 0
    err = capsys.readouterr().err
    assert "audio_encoder" in err
    assert "Conv2d" in err  # the fix for the 1-D convolution NNAPI cannot take


def test_cli_reports_bad_options_as_errors(
    tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["mobile", str(tiny_bundle), "--out", str(tmp_path / "m"), "--fixed-shapes", "seq=0"]) == 1
    assert "ERROR fixed_shapes (--fixed-shapes): dim 'seq'" in capsys.readouterr().err
