"""Each stage runs the shared verifier: a stage that breaks a dynamic dim fails, naming stage and component."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from guarantees._rewrites import keep_rows
from tinybundle import tiny_inputs

from mmedge.bundle import load_bundle
from mmedge.errors import BundleError, ExportError, QuantizationError


def test_export_rewrite_before_the_manifest_is_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A graph pass between export and write_manifest (hashes stay consistent) that fixes the batch."""
    from guarantees._models import CleanNet

    from mmedge.export import _components, export_model

    check_chain = _components.check_chain

    def chain_then_rewrite(ctx, parts, head):
        rows = check_chain(ctx, parts, head)
        path = ctx.stage / "text_encoder.onnx"
        onnx.save(keep_rows(onnx.load(str(path)), "text", rows=2), str(path))
        return rows

    monkeypatch.setattr(_components, "check_chain", chain_then_rewrite)
    net = CleanNet()
    with pytest.raises(
        ExportError, match=r"(?s)stage 'export' broke 1 component.*'text_encoder' \(a dynamic dim was lost\)"
    ):
        export_model(net, net.example_inputs(2), out=tmp_path / "bundle")
    assert not (tmp_path / "bundle").exists()


def test_export_records_the_shared_check(tmp_path: Path) -> None:
    from guarantees._models import CleanNet

    from mmedge.export import export_model

    net = CleanNet()
    m = export_model(net, net.example_inputs(2), out=tmp_path / "bundle").manifest
    text = m.component("text_encoder")
    assert [(v.stage, v.reference, v.passed) for v in text.verification] == [("export", "pytorch", True)]
    assert text.verification[0].shapes == (((2, 6),), ((3, 5),))
    head = m.component("fusion_head")
    assert [v.reference for v in head.verification] == ["pytorch", "pytorch-chain"]


def test_quantize_that_fixes_a_batch_is_caught_and_nothing_is_written(
    tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mmedge.quantize import quantize_bundle
    from mmedge.quantize._chain import Chain

    rebuild = Chain.rebuild

    def broken_rebuild(self: Chain, start: str | None = None) -> None:
        """A quantizer bug: the text encoder's batch baked in (by the full build; later partial ones leave it)."""
        rebuild(self, start)
        if start is not None:
            return
        path = self.work / "text_encoder.broken.onnx"
        onnx.save(keep_rows(onnx.load(str(self.versions["text_encoder"])), "text"), str(path))
        self.versions["text_encoder"] = path

    monkeypatch.setattr(Chain, "rebuild", broken_rebuild)
    samples = [tiny_inputs(batch=2, seed=i) for i in range(10)]
    with pytest.raises(
        QuantizationError, match=r"(?s)stage 'quantize' broke 1 component.*'text_encoder' \(a dynamic dim was lost\)"
    ):
        quantize_bundle(tiny_bundle, tmp_path / "int8", calibration=samples, speed_check=False)
    assert not (tmp_path / "int8").exists()


def test_quantize_records_the_shared_check_per_component(tiny_bundle: Path, tmp_path: Path) -> None:
    from mmedge.quantize import quantize_bundle

    samples = [tiny_inputs(batch=2, seed=i) for i in range(10)]
    quantize_bundle(tiny_bundle, tmp_path / "int8", calibration=samples, speed_check=False)
    text = load_bundle(tmp_path / "int8").manifest.component("text_encoder")
    (v,) = text.verification
    assert (v.stage, v.reference, v.dynamic_dims_ok) == ("quantize", "fp32-bundle", True)
    assert v.shapes == (((2, 6),), ((3, 5),))
    assert "dynamic dims batch 2/3, seq 6/5" in v.detail


def test_mobile_conversion_that_fixes_a_batch_is_caught(
    tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mmedge.mobile import api as mobile
    from mmedge.mobile import package_mobile

    fixed_model = mobile._fixed_model

    def broken(source, c, *args):  # a conversion bug: the audio encoder keeps one row (the probe batch)
        model = fixed_model(source, c, *args)
        return keep_rows(model, "audio", rows=1) if c.name == "audio_encoder" else model

    monkeypatch.setattr(mobile, "_fixed_model", broken)
    with pytest.raises(
        BundleError, match=r"(?s)stage 'mobile' broke 1 component.*'audio_encoder' \(a dynamic dim was lost\)"
    ):
        package_mobile(tiny_bundle, tmp_path / "mobile", target="generic")
    assert not (tmp_path / "mobile").exists()


@pytest.mark.parametrize(
    ("target", "runs"), [pytest.param("generic", 2, id="generic"), pytest.param("android", 1, id="android")]
)
def test_mobile_checks_a_second_shape_only_where_the_manifest_keeps_dims_dynamic(
    tiny_bundle: Path, tmp_path: Path, target: str, runs: int
) -> None:
    from mmedge.mobile import package_mobile

    package_mobile(tiny_bundle, tmp_path / "mobile", target=target)
    text = load_bundle(tmp_path / "mobile").manifest.component("text_encoder")
    v = text.verification[-1]
    assert (v.stage, v.passed, len(v.shapes)) == ("mobile", True, runs)
