"""Which variants one benchmark compares, and what each worker process is told to load.

The subject bundle and every ``compare`` bundle run as split pipelines; a bundle that carries
its whole model as the ``monolithic`` asset adds that ONNX file as a variant (once, however many
bundles carry the same file). Only FP32 bundles from ``mmedge export --monolithic`` carry one;
deploy bundles (INT8, mobile) do not, so an INT8 bundle finds its baseline through the FP32 bundle
it is compared with. ``torch_model`` adds PyTorch eager. All get the same thread budget
and providers. Torch is never imported here: the spec is checked for form, the worker loads it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mmedge.bench._coord import VariantSpec
from mmedge.bundle import MONOLITHIC_ASSET, Bundle
from mmedge.errors import BundleError, InputError

__all__ = ["MONOLITHIC_ASSET", "TORCH_WORKER", "check_same_inputs", "variant_specs"]

RUNTIME_WORKER = "mmedge.bench._worker"
TORCH_WORKER = "mmedge.bench._torch_worker"
_QUANTIZED_OPS = {
    "QuantizeLinear",
    "DynamicQuantizeLinear",
    "MatMulInteger",
    "ConvInteger",
    "QLinearConv",
    "QLinearMatMul",
}
_TORCH_SPEC = re.compile(r"^[A-Za-z_]\w*$|^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def variant_specs(
    subject: Bundle,
    others: Sequence[Bundle],
    *,
    torch_model: str | None,
    checkpoint: Path | None,
    model_kwargs: Mapping[str, Any] | None = None,
    threads: int,
    providers: Any,
    monolithic: bool,
    subject_providers: Sequence[Mapping[str, Any]] = (),
    cache_dir: str | None = None,
    graph_shapes: int | None = None,
) -> list[VariantSpec]:
    """The variants in report order: subject first (then again under each of ``subject_providers``,
    per-component provider policies such as ``{"image": "openvino", "*": "cpu"}``), then compared
    bundles, monolithic ONNX, PyTorch. ``cache_dir``, ``graph_shapes``: the bundles'
    ``Pipeline(cache_dir=, max_graph_shapes=)``."""
    common = {"threads": threads, "providers": providers}
    variants = []
    names: set[str] = set()
    for b in (subject, *others):
        name = _unique(f"split {_label(c.precision for c in b.manifest.components)}", b, names)
        spec = {"kind": "split", "path": str(b.path), **common, **({"cache_dir": cache_dir} if cache_dir else {})}
        if graph_shapes is not None:
            spec["graph_shapes"] = graph_shapes
        variants.append(VariantSpec(name, "split", str(b.path), RUNTIME_WORKER, spec))
        if b is subject:
            for policy in subject_providers:
                label = ", ".join(f"{k}={v}" for k, v in policy.items())
                variants.append(
                    VariantSpec(
                        f"{name} [{label}]", "split", str(b.path), RUNTIME_WORKER, {**spec, "providers": dict(policy)}
                    )
                )
    if monolithic:
        seen: set[str] = set()
        for b in (subject, *others):
            asset = next((a for a in b.manifest.assets if a.name == MONOLITHIC_ASSET), None)
            if asset is None or asset.sha256 in seen:
                continue
            seen.add(asset.sha256)
            path = b.asset_path(MONOLITHIC_ASSET)
            precision = _onnx_precision(path)
            name = _unique(f"monolithic {_label([precision])}", b, names)
            spec = {"kind": "monolithic", "path": str(path), "bundle": str(b.path), "precision": precision, **common}
            variants.append(VariantSpec(name, "monolithic", str(path), RUNTIME_WORKER, spec))
    if torch_model is None and checkpoint is not None:
        raise InputError("a checkpoint was given without a PyTorch model; pass torch_model (--torch) too")
    if torch_model is not None:
        _check_torch_spec(torch_model, checkpoint)
        spec = {
            "kind": "torch",
            "model": torch_model,
            "checkpoint": str(checkpoint) if checkpoint else None,
            "model_kwargs": dict(model_kwargs) if model_kwargs is not None else None,
            "bundle": str(subject.path),
            "threads": threads,
        }
        variants.append(VariantSpec("PyTorch eager FP32", "torch", torch_model, TORCH_WORKER, spec))
    return variants


def check_same_inputs(subject: Bundle, others: Sequence[Bundle]) -> None:
    """Compared bundles must take the same inputs, or they cannot run on the same tensors."""
    want = [(i.name, i.dtype, len(i.shape)) for i in subject.manifest.inputs]
    problems = [
        f"{b.path} takes {[(i.name, i.dtype, len(i.shape)) for i in b.manifest.inputs]}"
        for b in others
        if [(i.name, i.dtype, len(i.shape)) for i in b.manifest.inputs] != want
    ]
    if problems:
        raise InputError(
            f"bundles to compare must take the same inputs as {subject.path} ({want} as name, dtype, rank): "
            + "; ".join(problems)
        )


def _label(precisions: Any) -> str:
    found = set(precisions)
    return "INT8" if "int8" in found else "FP16" if "fp16" in found else "FP32"


def _unique(name: str, bundle: Bundle, names: set[str]) -> str:
    if name in names:
        name = f"{name} ({bundle.path.name})"
    if name in names:
        raise BundleError(f"{bundle.path} is given twice; compare each bundle once")
    names.add(name)
    return name


def _onnx_precision(path: Path) -> str:
    """ "int8" if the graph has quantization ops, else "fp32" (assets carry no precision field)."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise BundleError(f"the monolithic model {path} is not a readable ONNX file ({e}); re-export the bundle") from e
    return "int8" if any(n.op_type in _QUANTIZED_OPS for n in model.graph.node) else "fp32"


def _check_torch_spec(spec: str, checkpoint: Path | None) -> None:
    if not _TORCH_SPEC.match(spec):
        raise InputError(
            f"torch model {spec!r} must be a reference model name (e.g. TriModalNet) or 'package.module:Class'"
        )
    if checkpoint is not None and not checkpoint.is_file():
        raise InputError(f"checkpoint {checkpoint} does not exist")
