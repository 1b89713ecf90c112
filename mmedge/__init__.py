"""mmedge: take a trained multimodal PyTorch model to fast on-device inference.

Layers (DESIGN.md; each top-level folder is ``mmedge.<folder>``): the contract in this folder
(``mmedge.bundle``, ``graph``, ``sessions``, ``verify``, ``errors``, ...); the stages
``mmedge.export`` (needs torch), ``mmedge.quantize`` and ``mmedge.mobile``; the torch-free
``mmedge.runtime``; the apps ``mmedge.bench``, ``mmedge.serve``, ``mmedge.integrations`` and the CLI.
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
