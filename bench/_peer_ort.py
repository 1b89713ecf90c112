"""The onnxruntime INT8 peer: what a user gets by following onnxruntime's quantization docs.

The whole-model FP32 ONNX (the ``monolithic`` asset of an FP32 bundle) goes through
``quant_pre_process`` (shape inference and graph optimisation), then ``quantize_static`` in the
QDQ format with U8 activations and S8 per-channel weights (the docs' recommendation for x86 CPUs),
calibrated by MinMax on the benchmark's calibration samples. Everything the tool quantizes by
default is quantized, the spectral front-end included; ``keep_frontend`` excludes the front-end's
nodes (``nodes_to_exclude``, found as mmedge's own INT8 recipe finds them) for an equal-accuracy
comparison. The result is timed like the monolithic variant, by the onnxruntime worker.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmedge.errors import QuantizationError

__all__ = ["build_ort_int8"]


def build_ort_int8(
    source: Path, out: Path, calibration: Sequence[Mapping[str, np.ndarray]], *, keep_frontend: bool
) -> dict[str, Any]:
    """Quantize ``source`` to ``out`` (QDQ, U8S8 per channel); returns notes for the report."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from mmedge.quantize.calibration import SampleReader
    from mmedge.quantize.recipes import frontend_nodes

    notes = []
    prepared = out.with_name(out.stem + "-pre.onnx")
    try:
        quant_pre_process(str(source), str(prepared))
    except Exception as e:  # noqa: BLE001 - symbolic shape inference fails on some graphs; the docs' fallback
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        notes.append(f"quant_pre_process without symbolic shape inference ({type(e).__name__})")
    model = onnx.load(str(prepared))
    excluded = frontend_nodes(model) if keep_frontend else []
    if keep_frontend:
        notes.append(f"spectral front-end kept FP32: {len(excluded)} nodes excluded (nodes_to_exclude)")
    names = [i.name for i in model.graph.input]
    reader = SampleReader([{n: s[n] for n in names} for s in calibration])
    try:
        quantize_static(
            str(prepared),
            str(out),
            reader,
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=excluded or None,
        )
    except Exception as e:
        raise QuantizationError(f"onnxruntime quantize_static failed on {source.name}: {type(e).__name__}: {e}") from e
    finally:
        prepared.unlink(missing_ok=True)
    notes.append(f"QDQ U8S8 per-channel, MinMax calibration on {len(calibration)} samples")
    return {"path": str(out), "notes": notes}
