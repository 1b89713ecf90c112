"""Pre-flight: each pattern is reported for its component with its fix; export runs it first."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from guarantees import _models

from mmedge.cli import main
from mmedge.errors import ExportError
from mmedge.export import export_model
from mmedge.export.doctor import diagnose


@pytest.mark.parametrize(
    ("model", "pattern", "severity", "where", "fix"),
    [
        pytest.param("StftNet", "stft", "warning", "audio_encoder: stft", "MelFrontend(impl='conv')", id="stft"),
        pytest.param(
            "ComplexNet", "complex", "warning", "audio_encoder: polar (complex64)", "view_as_real", id="complex"
        ),
        pytest.param(
            "PackedNet",
            "packed-sequence",
            "error",
            "text_encoder: _pack_padded_sequence",
            "lengths as a mask",
            id="packed",
        ),
        pytest.param(
            "BranchyNet", "data-dependent-control-flow", "warning", "Tensor.__bool__", "torch.where", id="branch"
        ),
        pytest.param(
            "InPlaceNet", "input-mutation", "warning", "audio_encoder: mul_ (audio)", "x.clone()", id="in-place"
        ),
        pytest.param(
            "DoubleNet", "unsupported-dtype", "warning", "audio_encoder: double (float64)", "float32", id="float64"
        ),
        pytest.param(
            "HalfBoundaryNet",
            "unsupported-dtype",
            "error",
            "audio_encoder output (bfloat16)",
            ".float()",
            id="boundary",
        ),
    ],
)
def test_each_pattern_is_reported_for_its_component_with_its_fix(
    model: str, pattern: str, severity: str, where: str, fix: str
) -> None:
    net = getattr(_models, model)()
    report = diagnose(net, net.example_inputs(2))
    assert report.components == ("text_encoder", "audio_encoder", "fusion_head")
    (found,) = [f for f in report.findings if f.severity == severity]
    assert (found.pattern, found.severity) == (pattern, severity)
    assert found.component == ("text_encoder" if model == "PackedNet" else "audio_encoder")
    assert any(where in w for w in found.where), found.where
    assert fix in found.fix
    assert report.for_component("fusion_head") == ()


def test_a_clean_model_has_no_findings() -> None:
    net = _models.CleanNet()
    assert diagnose(net, net.example_inputs(2)).findings == ()


@pytest.mark.parametrize("mode", ["auto", "conv", None], ids=["auto", "conv", "default"])
def test_a_mel_spectrogram_the_export_replaces_is_info(mode: str | None) -> None:
    net = _models.MelNet()
    (found,) = diagnose(net, net.example_inputs(2), **({} if mode is None else {"audio_frontend": mode})).findings
    assert (found.pattern, found.severity) == ("stft", "info")


def test_a_kept_mel_spectrogram_is_a_warning_with_the_swap_as_its_fix() -> None:
    net = _models.MelNet()
    (found,) = diagnose(net, net.example_inputs(2), audio_frontend="keep").findings
    assert (found.pattern, found.severity) == ("stft", "warning")
    assert "audio_encoder.mel.spectrogram: stft" in found.where[0]
    assert "--audio-frontend conv" in found.fix


def test_a_model_that_cannot_be_split_is_an_error_and_the_rest_is_still_reported() -> None:
    net = _models.InPlaceNet()
    report = diagnose(net, net.example_inputs(2), encoders={"text": "no_such_module"})
    assert report.components == ("model",)
    assert [(f.pattern, f.severity) for f in report.findings] == [("split", "error"), ("input-mutation", "warning")]
    assert "has no submodule 'no_such_module'" in report.findings[0].problem


def test_export_stops_on_an_error_finding_before_exporting(tmp_path: Path) -> None:
    net = _models.PackedNet()
    with pytest.raises(
        ExportError, match=r"(?s)pre-flight: PackedNet has patterns no exporter can export.*packed-sequence"
    ):
        export_model(net, net.example_inputs(2), out=tmp_path / "bundle")
    assert not (tmp_path / "bundle").exists()


def test_export_lists_warning_findings_in_its_warnings(tmp_path: Path) -> None:
    net = _models.DoubleNet()
    result = export_model(net, net.example_inputs(2), out=tmp_path / "bundle")
    (line,) = [w for w in result.warnings if w.startswith("pre-flight")]
    assert line.startswith("pre-flight warning: audio_encoder: unsupported-dtype at audio_encoder: double (float64)")


def test_a_value_check_dynamo_traced_past_is_a_note_not_a_warning(tmp_path: Path) -> None:
    """The pre-flight sees the branch eagerly; torch.export refuses such branches unless the code steps
    around them, so a dynamo export stands and its warning says so (BranchyNet's fails, see above)."""
    net = _models.CheckingNet()
    result = export_model(net, net.example_inputs(2), out=tmp_path / "bundle")
    assert result.exporters["audio_encoder"] == "dynamo"
    (line,) = [w for w in result.warnings if w.startswith("pre-flight")]
    assert line.startswith("pre-flight note: audio_encoder: data-dependent-control-flow at ")
    assert "dynamo exported it" in line


def test_doctor_cli_json_and_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--model", "guarantees._models:PackedNet", "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert (data["errors"], data["clean"]) == (1, ["audio_encoder", "fusion_head"])
    assert data["findings"][0]["pattern"] == "packed-sequence"


def test_doctor_cli_table_names_the_fix(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--model", "guarantees._models:BranchyNet"]) == 0
    err = capsys.readouterr().err
    assert "data-dependent-control-flow" in err
    assert "torch.where" in err
    assert "export should work: 0 error(s), 1 warning(s)" in err
