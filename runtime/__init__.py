"""The torch-free runtime: run an mmedge bundle with onnxruntime on any device.

``Pipeline`` loads a bundle (one ORT session per component), preprocesses raw inputs (image
files, PIL images, waveforms, strings) as the manifest says, runs the encoders concurrently and
the fusion head, and reports which execution providers ran what; ``Pipeline.generate`` captions
images with a bundle that has a decoder. ``bench`` measures latency per
component and end to end against other variants. Nothing here imports torch.
"""

from mmedge.runtime._bench_generate import GenerationStats
from mmedge.runtime._bench_types import (
    Attribution,
    BatchResult,
    BenchProgress,
    BenchReport,
    BenchSettings,
    Comparison,
    ComponentLatency,
    Hotspots,
    LatencyStats,
    MachineInfo,
    OpTime,
    Part,
    Startup,
    VariantResult,
)
from mmedge.runtime._session import ComponentPlacement
from mmedge.runtime.bench import bench
from mmedge.runtime.generate import Generation
from mmedge.runtime.limits import InputLimits
from mmedge.runtime.mobile import MobileReport, package_mobile
from mmedge.runtime.pipeline import Pipeline
from mmedge.runtime.preprocess import Audio
from mmedge.runtime.providers import ProviderPlan, resolve_providers

__all__ = [
    "Attribution",
    "Audio",
    "BatchResult",
    "BenchProgress",
    "BenchReport",
    "BenchSettings",
    "Comparison",
    "ComponentLatency",
    "ComponentPlacement",
    "Generation",
    "GenerationStats",
    "Hotspots",
    "InputLimits",
    "LatencyStats",
    "MachineInfo",
    "MobileReport",
    "OpTime",
    "Part",
    "Pipeline",
    "ProviderPlan",
    "Startup",
    "VariantResult",
    "bench",
    "package_mobile",
    "resolve_providers",
]
