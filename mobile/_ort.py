"""onnxruntime's side of mobile packaging: its tool modules, ORT-format conversion, operator configs.

The conversion is what ``python -m onnxruntime.tools.convert_onnx_models_to_ort`` does for one
model, minus its printing: a CPU session at the chosen optimisation level saves the optimised
graph in ORT format. The same session settings also save the optimised graph as ONNX, which is
what the EP usability checks and the op lists read, so they describe exactly the graph the
``.ort`` file holds (ORT does not re-optimise an ``.ort`` file when it loads it).
"""

from __future__ import annotations

import importlib
import sys
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from mmedge.errors import BundleError, translated
from mmedge.sessions import create_session, plain_options

__all__ = [
    "LEVELS",
    "convert",
    "ort_tool",
    "required_operators",
    "run_model",
    "write_operator_config",
]

LEVELS = ("basic", "extended", "all")
# NCHWc is an x86-only layout transform: baked into a file it makes the model device specific,
# so ORT's own converter leaves it out for anything but amd64; phones are ARM.
_DISABLED_AT_ALL = ("NchwcTransformer",)


def ort_tool(name: str) -> ModuleType:
    """Import ``onnxruntime.tools.<name>`` without importing torch.

    ``onnxruntime/tools/__init__.py`` imports torch whenever it is installed (for a helper mmedge
    does not use), and the runtime must stay torch-free. ``importlib.util.find_spec`` reports a
    module whose ``sys.modules`` entry is None as absent, so the package is imported once with
    that entry in place; a torch the process had already imported is left alone.
    """
    if "onnxruntime.tools" not in sys.modules and "torch" not in sys.modules:
        sys.modules["torch"] = None  # type: ignore[assignment]
        try:
            importlib.import_module("onnxruntime.tools")
        finally:
            del sys.modules["torch"]
    return importlib.import_module(f"onnxruntime.tools.{name}")


def _session_options(level: str, target_arm: bool) -> tuple[Any, list[str] | None]:
    """Session options of a conversion at ``level``, and the optimizers to leave out."""
    so = plain_options(optimization=level, log_severity=3)  # errors only: conversion warnings are not the user's
    # What the converter sets for --target_platform arm: QDQ fusions may keep int8 (ARM has fast int8 dot products).
    so.add_session_config_entry("session.qdqisint8allowed", "1" if target_arm else "0")
    return so, list(_DISABLED_AT_ALL) if level == "all" else None


def convert(source: Path, ort_path: Path, optimized_onnx: Path, *, level: str, target_arm: bool) -> None:
    """Write ``source`` (ONNX) optimised at ``level`` to ``ort_path`` (ORT format) and ``optimized_onnx``."""
    for path, fmt in ((ort_path, "ORT"), (optimized_onnx, "ONNX")):
        so, disabled = _session_options(level, target_arm)
        so.optimized_model_filepath = str(path)
        so.add_session_config_entry("session.save_model_format", fmt)
        create_session(
            source,
            so,
            disabled_optimizers=disabled,
            error=BundleError,
            what=f"onnxruntime could not convert {source.name} to ORT format ({level})",
        )


def run_model(
    path: Path, feeds: Mapping[str, Any], what: str, *, level: str | None = None, target_arm: bool = False
) -> dict[str, Any]:
    """Run an ONNX or ORT-format file once on the CPU EP; outputs by name.

    ``level`` runs it with the conversion's session settings (the verification reference); None
    uses onnxruntime's defaults.
    """
    if level is None:
        so, disabled = plain_options(log_severity=3), None
    else:
        so, disabled = _session_options(level, target_arm)
    with translated(BundleError, f"onnxruntime failed to run {what} ({path.name})"):
        session = create_session(path, so, disabled_optimizers=disabled)
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, dict(feeds)), strict=True))


def required_operators(ort_files: Iterable[Path]) -> dict[str, dict[int, set[str]]]:
    """``{domain: {opset: {op, ...}}}`` of every kernel the ORT-format files need (ORT's own reader)."""
    processor = ort_tool("ort_format_model").OrtFormatModelProcessor
    required: dict[str, dict[int, set[str]]] = {}
    for path in ort_files:
        with translated(BundleError, f"cannot read the operators of {path.name}"), warnings.catch_warnings():
            # ORT's reader leaves its file handle to the garbage collector (open(path).read()).
            warnings.simplefilter("ignore", ResourceWarning)
            processor(str(path), required, None).process()
    return required


def write_operator_config(
    path: Path, required: Mapping[str, Mapping[int, set[str]]], models: Iterable[str]
) -> tuple[str, ...]:
    """Write a reduced-build operator config (``--include_ops_by_config``) in ORT's format.

    One ``domain;opset;Op1,Op2`` line per domain and opset, as ``create_config_from_models``
    writes it, with the model names relative to the bundle instead of absolute staging paths.
    Returns those lines.
    """
    lines = [
        "# Operators needed by this mmedge mobile bundle, for a reduced-size onnxruntime build:",
        "#   build.sh --include_ops_by_config required_operators.config --minimal_build extended",
        "# (extended: NNAPI/CoreML need it; plain --minimal_build suffices for the CPU EP alone)",
        "# Generated from:",
    ]
    lines += [f"# - {name}" for name in sorted(models)]
    entries = tuple(
        f"{domain};{opset};{','.join(sorted(ops))}"
        for domain in sorted(required)
        for opset, ops in sorted(required[domain].items())
        if ops
    )
    path.write_text("\n".join([*lines, *entries]) + "\n", encoding="utf-8")
    return entries
