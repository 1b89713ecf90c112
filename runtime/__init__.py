"""The torch-free runtime: run an mmedge bundle with onnxruntime on any device.

``Pipeline`` loads a bundle (one ORT session per component), preprocesses raw inputs (image
files, PIL images, waveforms, strings) as the manifest says, runs the encoders concurrently and
the fusion head, and reports which execution providers ran what; ``Pipeline.generate`` captions
images with a bundle that has a decoder. Nothing here imports torch. Latency profiling is
:mod:`mmedge.bench`, mobile packaging :mod:`mmedge.mobile`.
"""

from mmedge.providers import ProviderPlan, resolve_providers
from mmedge.runtime.generate import Generation
from mmedge.runtime.limits import InputLimits
from mmedge.runtime.pipeline import Pipeline
from mmedge.runtime.prepare import SAMPLES_SUFFIX, input_preparer, read_samples
from mmedge.runtime.preprocess import Audio
from mmedge.sessions import ComponentPlacement

__all__ = [
    "SAMPLES_SUFFIX",
    "Audio",
    "ComponentPlacement",
    "Generation",
    "InputLimits",
    "Pipeline",
    "ProviderPlan",
    "input_preparer",
    "read_samples",
    "resolve_providers",
]
