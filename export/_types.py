"""The public value types of ``mmedge.export``: options in, results out."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from mmedge.bundle import Bundle, Manifest

__all__ = ["DEFAULT_OPSET", "EncoderSpec", "ExportResult", "VerificationRow"]

# Both exporters handle opset 18 well in torch 2.11 (the TorchScript exporter stops at 20), it has
# the STFT op, and ONNX Runtime's mobile and quantization tooling support it.
DEFAULT_OPSET = 18


@dataclass(frozen=True)
class EncoderSpec:
    """One encoder of the split: which submodule becomes which component, fed by which raw inputs."""

    name: str  # component name, e.g. "text_encoder"
    path: str  # dotted submodule path inside the model, e.g. "backbone.text"
    modality: str  # "text", "image", "audio" or "other"
    inputs: tuple[str, ...]  # raw model inputs it consumes, in call order
    dynamic_axes: Mapping[str, Mapping[int, str]] = field(default_factory=dict)  # input -> axis -> symbol
    # ops forward runs on the raw inputs before calling the encoder, exported inside its component
    folded: tuple[str, ...] = ()


@dataclass(frozen=True)
class VerificationRow:
    """One output of one component (or of the whole chain) compared with PyTorch on every check run."""

    component: str  # a component name, "chain" (encoders → head vs the model) or "monolithic"
    output: str
    max_abs_error: float
    max_rel_error: float  # max of |onnx - torch| / (|torch| + atol)
    passed: bool
    shapes: tuple[tuple[int, ...], ...] = ()  # the PyTorch output shape of each run
    dynamic_dims_ok: bool = True  # False when a run was rejected or gave another shape: a dimension got fixed
    detail: str = ""  # why it failed: shape mismatch, a run onnxruntime rejected, ...


@dataclass(frozen=True)
class ExportResult:
    """What :func:`mmedge.export.export_model` wrote and how it checked it."""

    path: Path
    bundle: Bundle  # the written bundle, loaded and validated
    encoders: tuple[EncoderSpec, ...]  # the split used
    auto_split: bool  # True when the split was detected rather than given
    exporters: Mapping[str, str]  # component (and "monolithic") -> "dynamo" | "torchscript"
    verification: tuple[VerificationRow, ...]
    warnings: tuple[str, ...] = ()  # fallbacks and assumptions made, for the user to review

    @property
    def manifest(self) -> Manifest:
        return self.bundle.manifest
