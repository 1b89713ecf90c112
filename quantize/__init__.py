"""INT8 (or FP16) bundles from FP32 bundles, with an accuracy report and accuracy-aware fallback.

``quantize_bundle(bundle, out, calibration=...)`` picks a recipe per component from its ops
(static QDQ INT8 for conv/linear, dynamic INT8 for recurrent/attention text encoders, FP32 for
spectral front-ends), calibrates each component on its quantized upstream's outputs, measures
the result against FP32 on held-out samples, keeps the most damaging tensors FP32 until the
agreement target is met, and writes a normal bundle. A component whose pre-processing,
calibration or quantization fails is retried without that step, or kept FP32, and the report
says why (``strict=True``: an error instead). Needs onnx, onnxruntime and numpy only.
"""

from mmedge.quantize.api import AccuracyWarning, quantize_bundle
from mmedge.quantize.calibration import SampleReader, collect_samples, synthetic_calibration
from mmedge.quantize.recipes import MODES, Recipe, choose_recipe
from mmedge.quantize.report import (
    ComponentReport,
    ExcludedNode,
    FallbackRound,
    OutputReport,
    QuantizationReport,
    SpeedCheck,
    StepFailure,
    TensorComparison,
)
from mmedge.quantize.speed import SpeedPolicy

__all__ = [
    "MODES",
    "AccuracyWarning",
    "ComponentReport",
    "ExcludedNode",
    "FallbackRound",
    "OutputReport",
    "QuantizationReport",
    "Recipe",
    "SampleReader",
    "SpeedCheck",
    "SpeedPolicy",
    "StepFailure",
    "TensorComparison",
    "choose_recipe",
    "collect_samples",
    "quantize_bundle",
    "synthetic_calibration",
]
