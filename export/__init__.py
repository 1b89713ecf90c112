"""Export a trained multimodal PyTorch model to a verified, split ONNX bundle.

``export_model`` splits the model into one ONNX graph per encoder plus a fusion head, exports
each with the dynamo or TorchScript exporter (whichever verifies), checks every graph against
PyTorch on two input shapes, and writes the bundle atomically with its manifest.
``export_captioner`` does the same for an image captioner: image encoder, decoder init and a
one-token decoder step that the runtime loops (``Pipeline.generate``). ``diagnose`` (``mmedge
doctor``) lists the patterns that break export or mobile EPs, per component, with their fixes;
``export_model`` runs the same pre-flight first. ``load_config`` reads an ``export.toml`` and
``build_model`` builds a model class from its ``[model]`` table (``mmedge export``/``bench --config``).
"""

from mmedge.export._checkpoint import CheckpointReport, load_checkpoint
from mmedge.export._config import ExportConfig, build_model, load_config
from mmedge.export._dict_arguments import forward_arguments
from mmedge.export._types import DEFAULT_OPSET, EncoderSpec, ExportResult, VerificationRow
from mmedge.export.api import AUDIO_FRONTENDS, export_model
from mmedge.export.decoder import export_captioner
from mmedge.export.doctor import DoctorReport, Finding, diagnose
from mmedge.export.hf import FUSE_MODES, FusionResult, FusionTrial, ffn_down_projections, optimize_transformers
from mmedge.verify import Tolerance

__all__ = [
    "AUDIO_FRONTENDS",
    "DEFAULT_OPSET",
    "FUSE_MODES",
    "CheckpointReport",
    "DoctorReport",
    "EncoderSpec",
    "ExportConfig",
    "ExportResult",
    "Finding",
    "FusionResult",
    "FusionTrial",
    "Tolerance",
    "VerificationRow",
    "build_model",
    "diagnose",
    "export_captioner",
    "export_model",
    "ffn_down_projections",
    "forward_arguments",
    "load_checkpoint",
    "load_config",
    "optimize_transformers",
]
