"""Manifest (de)serialisation: JSON-ready dicts to typed dataclasses and back, every problem collected."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from typing import Any

from mmedge.bundle._schema import type_problems
from mmedge.bundle._types import (
    _PREPROCESS_BY_MODALITY,
    FORMAT_VERSION,
    Asset,
    Component,
    Dim,
    Edge,
    GenerationSpec,
    InputSpec,
    Manifest,
    ModelInfo,
    OutputSpec,
    TensorSpec,
    Verification,
)
from mmedge.bundle._validate import consistency_problems
from mmedge.errors import BundleError

__all__ = ["manifest_from_dict", "manifest_to_dict"]


def manifest_to_dict(manifest: Manifest) -> dict[str, Any]:
    """The JSON-ready form of a manifest; the inverse of :func:`manifest_from_dict`."""
    d = dataclasses.asdict(manifest)
    for spec_dict, spec in zip(d["inputs"], manifest.inputs, strict=True):
        if spec.preprocess is not None:
            spec_dict["preprocess"] = {"kind": spec.modality, **spec_dict["preprocess"]}
    for optional in ("generation", "whole_graph"):
        if d[optional] is None:
            del d[optional]  # manifests without them stay as they were
    return d


def manifest_from_dict(data: Mapping[str, Any]) -> Manifest:
    """Build a Manifest from parsed JSON, collecting every problem before raising one BundleError."""
    if not isinstance(data, Mapping):
        raise BundleError(f"manifest must be a JSON object, found {type(data).__name__}")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(
            f"unsupported bundle format_version {version!r}; this mmedge reads version "
            f"{FORMAT_VERSION}. Re-export the model with this mmedge version, or install the "
            "mmedge version that wrote it."
        )
    try:
        manifest = Manifest(
            model=ModelInfo(**data["model"]),
            inputs=tuple(_input_from_dict(i) for i in data["inputs"]),
            components=tuple(_component_from_dict(c) for c in data["components"]),
            wiring=tuple(Edge(**e) for e in data["wiring"]),
            outputs=tuple(OutputSpec(**{**o, "labels": tuple(o.get("labels", ()))}) for o in data["outputs"]),
            assets=tuple(Asset(**a) for a in data.get("assets", ())),
            created_by=dict(data.get("created_by", {})),
            format_version=version,
            generation=_generation_from_dict(data["generation"]) if data.get("generation") is not None else None,
            whole_graph=data.get("whole_graph"),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise BundleError(
            f"manifest.json is malformed ({type(e).__name__}: {e}); it was edited by hand or "
            "written by an incompatible tool. Re-export the bundle."
        ) from e
    problems = type_problems(manifest, "manifest")
    if problems:
        raise BundleError(
            "manifest.json is malformed (edited by hand or written by an incompatible tool; re-export the "
            "bundle):\n  - " + "\n  - ".join(problems[:20])
        )
    problems = consistency_problems(manifest)
    if problems:
        raise BundleError("manifest.json is inconsistent:\n  - " + "\n  - ".join(problems))
    return manifest


def _shape(raw: Sequence[Any]) -> tuple[Dim, ...]:
    dims = tuple(raw)
    for d in dims:
        if not isinstance(d, int | str) or isinstance(d, bool):
            raise ValueError(f"shape dims must be ints or names, found {d!r}")
    return dims


def _tensor_from_dict(d: Mapping[str, Any]) -> TensorSpec:
    return TensorSpec(name=d["name"], dtype=d["dtype"], shape=_shape(d["shape"]))


def _input_from_dict(d: Mapping[str, Any]) -> InputSpec:
    pre = d.get("preprocess")
    preprocess = None
    if pre is not None:
        pre = dict(pre)
        kind = pre.pop("kind", d["modality"])
        cls = _PREPROCESS_BY_MODALITY.get(kind)
        if cls is None:
            raise ValueError(f"input {d['name']!r}: no preprocessing is defined for {kind!r}")
        tuples = _tuple_fields(cls)
        preprocess = cls(**{k: tuple(v) if k in tuples and isinstance(v, list) else v for k, v in pre.items()})
    return InputSpec(
        name=d["name"],
        modality=d["modality"],
        dtype=d["dtype"],
        shape=_shape(d["shape"]),
        example_shape=tuple(d.get("example_shape", ())),
        preprocess=preprocess,
        default=d.get("default"),
    )


@functools.cache
def _tuple_fields(cls: type) -> frozenset[str]:
    return frozenset(f.name for f in dataclasses.fields(cls) if "tuple" in str(f.type))


def _verification_from_dict(d: Mapping[str, Any]) -> Verification:
    shapes = tuple(tuple(tuple(s) for s in run) for run in d.get("shapes", ()))
    return Verification(**{**d, "shapes": shapes})


def _component_from_dict(d: Mapping[str, Any]) -> Component:
    return Component(
        **{
            **d,
            "inputs": tuple(_tensor_from_dict(t) for t in d["inputs"]),
            "outputs": tuple(_tensor_from_dict(t) for t in d["outputs"]),
            "optimizations": tuple(d.get("optimizations", ())),
            "folded": tuple(d.get("folded", ())),
            "verification": tuple(_verification_from_dict(v) for v in d.get("verification", ())),
        }
    )


def _generation_from_dict(d: Mapping[str, Any]) -> GenerationSpec:
    pairs = tuple(tuple(p) for p in d.get("state", ()))
    if any(len(p) != 2 or not all(isinstance(n, str) for n in p) for p in pairs):
        raise ValueError(f"generation.state must be [input, output] name pairs, found {d.get('state')!r}")
    return GenerationSpec(**{**d, "state": pairs})
