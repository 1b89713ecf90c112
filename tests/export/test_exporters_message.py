"""The export failure message carries its fix."""

from __future__ import annotations

from types import SimpleNamespace

from mmedge.export._exporters import Attempt, _failure_message


def test_a_dim_fixed_to_1_says_to_export_from_batch_2() -> None:
    job = SimpleNamespace(component="text_encoder", opset=18, second_args=())
    failed = [
        Attempt("dynamo", "dynamic dimension lost: 'text_features' axis 0 ('batch') was fixed to 1 by the exporter")
    ]
    message = _failure_message(job, failed)
    assert "could not be exported with any exporter" in message
    assert "Pass example inputs with batch (and sequence lengths) of at least 2" in message


def test_other_failures_get_no_batch_hint() -> None:
    job = SimpleNamespace(component="text_encoder", opset=18, second_args=())
    message = _failure_message(job, [Attempt("torchscript", "onnxruntime failed on the second input")])
    assert "at least 2" not in message
