"""The two PyTorch → ONNX exporters, tried in turn until one produces a graph that verifies.

Measured with torch 2.11: the dynamo exporter handles STFT (torchaudio's MelSpectrogram) but
silently fixes an LSTM's sequence length; the TorchScript exporter keeps LSTM axes dynamic but
cannot export STFT. So modules containing recurrent layers try TorchScript first and everything
else tries dynamo first; whichever is used is recorded, and a fallback is reported, never silent.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmedge.errors import ExportError
from mmedge.export._hygiene import GraphError, finalize

__all__ = ["EXPORTERS", "Attempt", "ExportJob", "Exported", "export_verified", "preferred_order"]

EXPORTERS = ("dynamo", "torchscript")
# Weights at or above this size cannot live inside one protobuf; only then use external data.
PROTOBUF_LIMIT = 2 * 1024**3


@dataclass(frozen=True)
class ExportJob:
    """One module to export: its example arguments, graph IO names and dynamic axes."""

    component: str
    module: Any
    args: tuple[Any, ...]
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    axes: Mapping[str, Mapping[int, str]]  # graph input/output name -> axis -> symbol
    opset: int
    # The second run's arguments (every dynamic size other than the example's): exported from
    # when the example has size 1 on a dynamic axis and an exporter fixed that axis to 1.
    second_args: tuple[Any, ...] = ()

    def size_one_axes(self) -> tuple[str, ...]:
        """Dynamic input axes of size 1 in the example (exporters specialise size-1 dims to constants)."""
        return tuple(
            f"{name!r} axis {axis} ({symbol!r})"
            for name, arg in zip(self.input_names, self.args, strict=False)
            for axis, symbol in self.axes.get(name, {}).items()
            if hasattr(arg, "shape") and len(arg.shape) > axis and int(arg.shape[axis]) == 1
        )


@dataclass(frozen=True)
class Attempt:
    """Why one exporter did not give a usable graph."""

    exporter: str
    reason: str
    op: str | None = None  # the unsupported operator, when that was the reason
    size_one: tuple[str, ...] = ()  # size-1 dynamic axes of the example it was run on (then retried)


@dataclass(frozen=True)
class Exported:
    """A component written and verified."""

    exporter: str
    optimizations: tuple[str, ...]
    external_data: bool
    rows: tuple[Any, ...]  # VerificationRow of every output
    failed: tuple[Attempt, ...]  # exporters tried before the one that worked
    from_second_input: bool = False  # traced on the second run's arguments (see export_verified)


def preferred_order(module: Any) -> tuple[str, ...]:
    """TorchScript first for recurrent modules (dynamo fixes their sequence length), else dynamo first."""
    from torch import nn

    recurrent = any(isinstance(m, nn.RNNBase) for m in module.modules())
    return ("torchscript", "dynamo") if recurrent else EXPORTERS


@contextlib.contextmanager
def _quiet() -> Iterator[io.StringIO]:
    """Swallow what the exporters print (the TorchScript one dumps whole graphs on stdout from C++)."""
    sys.stdout.flush()
    saved = os.dup(1)
    text = io.StringIO()
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 1)
        try:
            with contextlib.redirect_stdout(text), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                yield text
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)


def _weights_bytes(module: Any) -> int:
    return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))


def _run_dynamo(job: ExportJob, path: Path, external: bool) -> None:
    import torch
    from torch.export import Dim

    shapes = tuple(dict.fromkeys(job.axes.get(n, {}), Dim.DYNAMIC) or None for n in job.input_names)
    torch.onnx.export(
        job.module,
        job.args,
        str(path),
        dynamo=True,
        external_data=external,
        dynamic_shapes=(shapes,),  # the wrappers take *args: one tuple for the one varargs parameter
        input_names=list(job.input_names),
        output_names=list(job.output_names),
        opset_version=job.opset,
        optimize=True,
        verbose=False,
    )


def _run_torchscript(job: ExportJob, path: Path, _external: bool) -> None:
    import torch

    torch.onnx.export(
        job.module,
        job.args,
        str(path),
        dynamo=False,
        input_names=list(job.input_names),
        output_names=list(job.output_names),
        dynamic_axes={n: dict(a) for n, a in job.axes.items() if a},
        opset_version=job.opset,
        do_constant_folding=True,
    )


_RUNNERS: dict[str, Callable[[ExportJob, Path, bool], None]] = {"dynamo": _run_dynamo, "torchscript": _run_torchscript}
_OP_PATTERNS = (
    re.compile(r"operator '(\w+::\w+)'"),  # TorchScript: Exporting the operator 'aten::cummax' ...
    re.compile(r"OpOverload\(op='(\w+)\.(\w+)'"),  # dynamo: No ONNX function found for <OpOverload(op='aten.cummax'
    re.compile(r"target=torch\.ops\.(\w+)\.(\w+)\."),  # dynamo: Error when translating node ... target=torch.ops.aten.x
)


def unsupported_op(error: BaseException) -> str | None:
    """The operator an exporter could not convert, parsed from the error and its causes."""
    seen: BaseException | None = error
    while seen is not None:
        for pattern in _OP_PATTERNS:
            match = pattern.search(str(seen))
            if match:
                return "::".join(match.groups())
        seen = seen.__cause__ or seen.__context__
    return None


_SPECIALIZED = re.compile(r"static shape of (\d+) for dimension inputs\['\w+'\]\[(\d+)\]\.shape\[(\d+)\]")


def _reason(error: BaseException, job: ExportJob) -> str:
    """A one-line reason from the most specific exception in the chain."""
    deepest = error
    while deepest.__cause__ is not None:
        deepest = deepest.__cause__
    fixed = [
        f"{job.input_names[int(i)]!r} axis {a} ({job.axes[job.input_names[int(i)]].get(int(a))!r}) was fixed to {size} by the exporter"
        for size, i, a in _SPECIALIZED.findall(str(deepest))
        if int(i) < len(job.input_names)
    ]
    if fixed:
        return "dynamic dimension lost: " + "; ".join(fixed)
    for raw in str(deepest).splitlines():
        line = re.sub(r"\x1b\[[0-9;]*m", "", raw).strip()
        if line:
            return f"{type(deepest).__name__}: {line}"
    return type(deepest).__name__


def _attempt(job: ExportJob, exporter: str, path: Path) -> tuple[Attempt | None, tuple[str, ...], bool]:
    """Run one exporter and the graph hygiene; (failure or None, optimizations, external data)."""
    external = _weights_bytes(job.module) >= PROTOBUF_LIMIT
    # The wrappers are new modules, in training mode; the TorchScript exporter exports in eval mode
    # and then restores the wrapper's mode *recursively*, which put the user's encoder (dropout,
    # batch-norm updates) in training mode for every later export: the monolithic graph of a
    # Hugging Face model got training-mode Dropout nodes, which OpenVINO refuses to convert.
    job.module.eval()
    try:
        with _quiet():
            _RUNNERS[exporter](job, path, external)
    except Exception as e:  # noqa: BLE001 - any exporter failure means "try the other exporter"
        op = unsupported_op(e)
        reason = f"operator {op} is not supported ({_reason(e, job)})" if op else _reason(e, job)
        return Attempt(exporter, reason, op), (), external
    try:
        optimizations = finalize(path, job.input_names, job.output_names, job.axes, external)
    except GraphError as e:
        return Attempt(exporter, str(e)), (), external
    return None, optimizations, external


def export_verified(job: ExportJob, path: Path, verify: Callable[[Path], tuple[Any, ...]]) -> Exported:
    """Export ``job`` to ``path`` with the first exporter whose graph passes ``verify``.

    ``verify`` returns VerificationRow-like objects with ``passed`` and ``detail``. Raises one
    ExportError naming every exporter's failure, and the unsupported operator when there is one.

    When the example has size 1 on a dynamic axis (a batch-1 example) and no exporter's graph
    passes, each is tried once more on the second run's arguments, whose dynamic sizes are all
    at least 2: exporters turn size-1 dims into constants (``nn.TransformerEncoder``,
    attention reshapes), and asking users for batch-2 examples is what a tool should do for them.
    """
    failed: list[Attempt] = []
    size_one = job.size_one_axes() if job.second_args else ()
    retry = dataclasses.replace(job, args=job.second_args, second_args=())
    order = preferred_order(job.module)
    for attempt_job, exporter in [(job, e) for e in order] + ([(retry, e) for e in order] if size_one else []):
        exported, attempt = _try(attempt_job, exporter, path, verify, tuple(failed), second=attempt_job is retry)
        if exported is not None:
            return exported
        if attempt_job is retry:
            reason = f"{attempt.reason} (also when exported from the second input, whose sizes are ≥ 2)"
            attempt = dataclasses.replace(attempt, reason=reason)
        else:
            attempt = dataclasses.replace(attempt, size_one=size_one)
        failed.append(attempt)
    raise ExportError(_failure_message(job, failed))


def _try(
    job: ExportJob,
    exporter: str,
    path: Path,
    verify: Callable[[Path], tuple[Any, ...]],
    failed: tuple[Attempt, ...],
    *,
    second: bool,
) -> tuple[Exported | None, Attempt]:
    attempt, optimizations, external = _attempt(job, exporter, path)
    if attempt is not None:
        return None, attempt
    rows = verify(path)
    bad = [r for r in rows if not r.passed]
    if not bad:
        return Exported(exporter, optimizations, external, tuple(rows), failed, second), Attempt(exporter, "")
    return None, Attempt(exporter, "; ".join(f"output {r.output!r}: {r.detail}" for r in bad))


def _failure_message(job: ExportJob, failed: list[Attempt]) -> str:
    ops = sorted({a.op for a in failed if a.op})
    lines = "\n".join(f"  - {a.exporter}: {a.reason}" for a in failed)
    if ops:
        stft = (
            " (a torchaudio MelSpectrogram in an audio encoder is replaced by convolutions unless audio_frontend='keep')"
            if any("stft" in op for op in ops)
            else ""
        )
        return (
            f"component {job.component!r} uses {', '.join(ops)}, which no exporter could convert to ONNX opset "
            f"{job.opset}:\n{lines}\nMove that operation out of the model into preprocessing, or write it with "
            f"supported operations{stft}."
        )
    hint = ""
    if not job.second_args and any("was fixed to 1 by the exporter" in a.reason for a in failed):
        hint = (
            "\nThe example inputs have size 1 on a dynamic axis, and exporters specialise size-1 dims to the "
            "constant 1. Pass example inputs with batch (and sequence lengths) of at least 2."
        )
    return f"component {job.component!r} could not be exported with any exporter:\n{lines}{hint}"
