"""State shared by the steps of one export: the two reference runs, options, the staging folder."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmedge.bundle import Asset, Component, Verification
from mmedge.errors import ExportError
from mmedge.export._axes import Axes, observed_axes
from mmedge.export._capture import Call
from mmedge.export._tree import flatten
from mmedge.export._types import VerificationRow
from mmedge.export._verify import numpy_of
from mmedge.verify import Tolerance

__all__ = ["Ctx", "ExportedPart", "Progress", "Runs", "model_prefix", "raise_failed"]

Progress = Callable[[str, str], None]  # (step or component name, status)


@dataclass(frozen=True)
class Runs:
    """The two PyTorch runs every check compares against: example inputs, then resized inputs."""

    inputs: tuple[dict[str, Any], dict[str, Any]]
    calls: tuple[Mapping[str, Call], Mapping[str, Call]]  # encoder path -> its call
    outputs: tuple[Any, Any]  # model outputs
    sizes: tuple[dict[str, int], dict[str, int]]  # symbol -> size

    def numpy(self, run: int, names: Sequence[str]) -> dict[str, Any]:
        return {n: numpy_of(self.inputs[run][n]) for n in names}

    def model_outputs(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """Each run's model outputs by the names the bundle gives them."""
        first, second = (dict(flatten(o, model_prefix(o), "model.forward")[0]) for o in self.outputs)
        return first, second

    def output_axes(self, first: Mapping[str, Any], second: Mapping[str, Any]) -> Axes:
        """Axes of tensors seen in both runs: those whose size moved with a symbol."""
        return {n: observed_axes(n, (tuple(first[n].shape), tuple(second[n].shape)), self.sizes) for n in first}


@dataclass(frozen=True)
class Ctx:
    """One export in progress."""

    work: Any  # the model's eval-mode working copy (the user's model is never touched)
    runs: Runs
    axes: Axes  # raw input axes
    tol: Tolerance
    opset: int
    stage: Path  # the staging directory of the bundle
    audio_frontend: str
    report: Progress
    warnings: list[str] = field(default_factory=list)

    def output_axes(self, first: Mapping[str, Any], second: Mapping[str, Any]) -> Axes:
        """Axes of tensors seen in both runs: those whose size moved with a symbol."""
        return self.runs.output_axes(first, second)

    def note_fallbacks(self, name: str, exported: Any) -> None:
        for failed in exported.failed:
            if failed.size_one and exported.from_second_input:
                self.warnings.append(
                    f"{name}: exported from the second input: on the example, {', '.join(failed.size_one)} has size 1 "
                    f"and the {failed.exporter} exporter's graph failed ({failed.reason}); used {exported.exporter}"
                )
                continue
            self.warnings.append(
                f"{name}: the {failed.exporter} exporter failed ({failed.reason}); used {exported.exporter}"
            )


@dataclass(frozen=True)
class ExportedPart:
    """One exported component and what later steps need from it."""

    component: Component
    rows: tuple[VerificationRow, ...]
    features: tuple[dict[str, Any], dict[str, Any]] = ({}, {})  # output name -> tensor, per run
    template: Any = None  # the encoder output as captured (its containers are rebuilt in the head)
    axes: Axes = field(default_factory=dict)  # output name -> axes
    assets: tuple[Asset, ...] = ()  # external weight files, only for components over 2 GB
    # the head's: model outputs that are an encoder's output as it is (CLIPOutput's vision_model_output),
    # by name -> (encoder component, its tensor); the manifest wires them from the encoder
    passthrough: Mapping[str, tuple[str, str]] = field(default_factory=dict)

    def with_record(self, verification: Verification) -> ExportedPart:
        component = dataclasses.replace(self.component, verification=(*self.component.verification, verification))
        return dataclasses.replace(self, component=component)


def model_prefix(output: Any) -> str:
    """How model outputs are named: a tensor is "logits", tuple items "output_<i>", dict items their keys."""
    if isinstance(output, Mapping):
        return ""
    return "output" if isinstance(output, tuple | list) else "logits"


def raise_failed(rows: Sequence[VerificationRow], what: str) -> None:
    """One ExportError with a line per failing row, if any failed."""
    bad = [r for r in rows if not r.passed]
    if bad:
        raise ExportError(f"{what}:\n" + "\n".join(f"  - {r.component}.{r.output}: {r.detail}" for r in bad))
