"""mmedge: take a trained multimodal PyTorch model to fast on-device inference.

The core package holds the bundle contract, errors and CLI; the stages live in
``mmedge.export`` (needs torch), ``mmedge.quantize`` and ``mmedge.runtime`` (torch-free).
"""

from mmedge.errors import BundleError, ExportError, InputError, MMEdgeError, ProviderError, QuantizationError

__all__ = [
    "BundleError",
    "ExportError",
    "InputError",
    "MMEdgeError",
    "ProviderError",
    "QuantizationError",
    "__version__",
]

__version__ = "0.1.0"
