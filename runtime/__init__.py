"""The torch-free runtime: run an mmedge bundle with onnxruntime on any device.

``Pipeline`` loads a bundle (one ORT session per component), preprocesses raw inputs (image
files, PIL images, waveforms, strings) as the manifest says, runs the encoders concurrently and
the fusion head, and reports which execution providers ran what. Nothing here imports torch.
"""

from mmedge.runtime._session import ComponentPlacement
from mmedge.runtime.pipeline import Pipeline
from mmedge.runtime.preprocess import Audio
from mmedge.runtime.providers import ProviderPlan, resolve_providers

__all__ = ["Audio", "ComponentPlacement", "Pipeline", "ProviderPlan", "resolve_providers"]
