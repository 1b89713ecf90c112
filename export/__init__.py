"""Export a trained multimodal PyTorch model to a verified, split ONNX bundle.

``export_model`` splits the model into one ONNX graph per encoder plus a fusion head, exports
each with the dynamo or TorchScript exporter (whichever verifies), checks every graph against
PyTorch on two input shapes, and writes the bundle atomically with its manifest.
``export_captioner`` does the same for an image captioner: image encoder, decoder init and a
one-token decoder step that the runtime loops (``Pipeline.generate``).
"""

from mmedge.export._checkpoint import CheckpointReport, load_checkpoint
from mmedge.export._types import DEFAULT_OPSET, EncoderSpec, ExportResult, Tolerance, VerificationRow
from mmedge.export.api import AUDIO_FRONTENDS, export_model
from mmedge.export.decoder import export_captioner
from mmedge.export.hf import FUSE_MODES, FusionResult, FusionTrial, optimize_transformers

__all__ = [
    "AUDIO_FRONTENDS",
    "DEFAULT_OPSET",
    "FUSE_MODES",
    "CheckpointReport",
    "EncoderSpec",
    "ExportResult",
    "FusionResult",
    "FusionTrial",
    "Tolerance",
    "VerificationRow",
    "export_captioner",
    "export_model",
    "load_checkpoint",
    "optimize_transformers",
]
