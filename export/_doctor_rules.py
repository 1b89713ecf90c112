"""Turn a recorded forward pass into findings: each pattern's severity, what breaks, and the fix.

Severities follow what was measured with torch 2.11 and onnxruntime 1.32: a packed sequence fails
with both exporters (dynamo on data-dependent sizes, TorchScript in its LSTM symbolic) and a
tensor of a dtype the bundle cannot declare fails when the manifest is written, so those are
errors; an STFT exports with dynamo but not with TorchScript nor on any mobile EP, and a Python
branch on a tensor value is silently baked in by TorchScript, so those are warnings.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mmedge.bundle import DTYPES
from mmedge.errors import ExportError
from mmedge.export._components import HEAD
from mmedge.export._doctor_trace import Event, Recording
from mmedge.export._doctor_types import Finding
from mmedge.export._frontend import SWAPPED
from mmedge.export._split import Split
from mmedge.export._tree import tensors

__all__ = ["HEAD", "MODEL", "findings"]

MODEL = "model"  # the component of everything when no split was found


@dataclass(frozen=True)
class _Rule:
    pattern: str
    severity: str
    problem: str
    fix: str


_MEL_FIX = (
    "export with --audio-frontend conv, or auto (the default): mmedge replaces torchaudio's MelSpectrogram or "
    "Spectrogram in an audio encoder by MelFrontend, the same spectrogram computed by convolutions over windowed "
    "DFT kernels"
)
_RULES = {
    "stft": _Rule(
        "stft",
        "warning",
        "STFT/FFT: the TorchScript exporter cannot export it, NNAPI/CoreML/XNNPACK cannot run the ONNX STFT/DFT op, "
        "and it is slow in onnxruntime",
        "compute the spectrogram with convolutions over windowed DFT kernels: mmedge.export.mel.MelFrontend(impl='conv'), "
        "or MelFrontend.from_torchaudio(mel) for a torchaudio MelSpectrogram",
    ),
    "complex": _Rule(
        "complex",
        "warning",
        "complex tensors: ONNX has no complex type and the exporters fail on most complex operations",
        "keep real and imaginary parts as separate real tensors (torch.view_as_real), e.g. power = re² + im² as "
        "MelFrontend computes it",
    ),
    "packed-sequence": _Rule(
        "packed-sequence",
        "error",
        "PackedSequence: neither exporter exports pack_padded_sequence for other batch sizes and lengths (dynamo "
        "fails on its data-dependent sizes, TorchScript in its LSTM symbolic)",
        "run the LSTM on the padded [batch, seq, features] tensor and apply the lengths as a mask: take the output "
        "at lengths - 1 with torch.gather, or zero padded steps before pooling",
    ),
    "scalar-read": _Rule(
        "data-dependent-control-flow",
        "warning",
        "forward reads a tensor's value in Python (.item(), bool(t), .tolist(), `if t ...`): the TorchScript "
        "exporter bakes in the branch or size taken on the example input, and dynamo fails unless the code skips "
        "the check while tracing",
        "compute both branches and select with torch.where or a mask; move value checks (asserts, validation) "
        "out of forward",
    ),
    "input-mutation": _Rule(
        "input-mutation",
        "warning",
        "in-place write into a raw model input: an exported graph cannot change its inputs, so PyTorch and ONNX "
        "differ wherever the caller reuses the input",
        "clone first (x = x.clone()) or use the out-of-place op (x = x.mul(2) instead of x.mul_(2))",
    ),
    "float64": _Rule(
        "unsupported-dtype",
        "warning",
        "float64 tensors: INT8 quantization, NNAPI/CoreML/XNNPACK and onnxruntime's fast kernels take float32",
        "cast to float32 where float64 is created (.float(), dtype=torch.float32), or model.float()",
    ),
    "bfloat16": _Rule(
        "unsupported-dtype",
        "warning",
        "bfloat16 tensors: onnxruntime's CPU EP has almost no bfloat16 kernels and mobile EPs none",
        "export in float32 (model.float()); quantize the bundle to make it small",
    ),
}


def _component_of(path: str, split: Split | None) -> str:
    if split is None:
        return MODEL
    for e in split.encoders:
        if path == e.path or path.startswith(e.path + "."):
            return e.name
    return HEAD


def _in_mel(path: str, types: Mapping[str, type]) -> bool:
    """Whether ``path`` is (inside) a torchaudio MelSpectrogram or Spectrogram, which audio_frontend='auto'/'conv'
    replaces."""
    parts = path.split(".")
    owners = (types.get(".".join(parts[:i])) for i in range(1, len(parts) + 1))
    return any(t is not None and t.__name__ in SWAPPED and t.__module__.startswith("torchaudio") for t in owners)


def _rule(event: Event, rec: Recording, modality: str, audio_frontend: str) -> _Rule:
    if event.kind == "dtype":
        return _RULES[event.detail]
    if event.kind != "stft" or not _in_mel(event.path, rec.module_types):
        return _RULES[event.kind]
    if audio_frontend != "keep" and modality == "audio":
        return _Rule(
            "stft",
            "info",
            "torchaudio MelSpectrogram or Spectrogram (STFT)",
            f"replaced by the convolution front-end where it verifies (audio_frontend={audio_frontend!r})",
        )
    return _Rule("stft", "warning", _RULES["stft"].problem, _MEL_FIX)


def _where(event: Event, count: int) -> str:
    detail = f" ({event.detail})" if event.detail else ""
    times = f" ×{count}" if count > 1 else ""
    return f"{event.path or '<forward>'}: {event.op}{detail}{times}"


def _boundary(split: Split | None, inputs: Mapping[str, Any]) -> Iterable[tuple[str, str, str]]:
    """(component, where, dtype) of every tensor crossing a component boundary with a dtype the bundle lacks."""
    import torch

    def odd(t: Any) -> str | None:
        name = str(t.dtype).removeprefix("torch.")
        return name if isinstance(t, torch.Tensor) and name not in DTYPES else None

    consumers = {n: e.name for e in (split.encoders if split else ()) for n in e.inputs}
    for name, t in inputs.items():
        if odd(t):
            yield consumers.get(name, HEAD if split else MODEL), f"raw input {name!r}", odd(t)
    if split is None:
        return
    for e in split.encoders:
        try:
            outs = tensors(split.calls[e.path].output)
        except ExportError:
            outs = []
        yield from ((e.name, f"{e.path} output", odd(t)) for t in outs if odd(t))
    try:
        yield from ((HEAD, "model output", odd(t)) for t in tensors(split.output) if odd(t))
    except ExportError:
        return


def findings(
    rec: Recording, split: Split | None, inputs: Mapping[str, Any], audio_frontend: str
) -> tuple[Finding, ...]:
    """Every finding of the recorded pass, grouped by (component, pattern, fix), in order of first sight."""
    modality = {e.name: e.modality for e in split.encoders} if split else {}
    groups: dict[tuple[str, _Rule], list[tuple[str, int]]] = {}
    spectral = {e.path for e in rec.events if e.kind == "stft"}  # their complex results are the STFT's finding
    for event, count in rec.events.items():
        if event.kind == "complex" and event.path in spectral:
            continue
        component = _component_of(event.path, split)
        rule = _rule(event, rec, modality.get(component, ""), audio_frontend)
        groups.setdefault((component, rule), []).append((_where(event, count), count))
    out = [
        Finding(
            component,
            rule.pattern,
            rule.severity,
            tuple(w for w, _ in seen),
            rule.problem,
            rule.fix,
            sum(n for _, n in seen),
        )
        for (component, rule), seen in groups.items()
    ]
    out += [
        Finding(
            component,
            "unsupported-dtype",
            "error",
            (f"{where} ({dtype})",),
            f"a {dtype} tensor at a component boundary: the bundle declares only {', '.join(DTYPES)}",
            f"cast it inside the module that produces it (e.g. .float(), .long()) so the boundary is {', '.join(DTYPES[:2])} "
            "or an integer type",
        )
        for component, where, dtype in _boundary(split, inputs)
    ]
    return tuple(out)
