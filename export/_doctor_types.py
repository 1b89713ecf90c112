"""The pre-flight's results: one :class:`Finding` per pattern per component, in a :class:`DoctorReport`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

__all__ = ["SEVERITIES", "DoctorReport", "Finding"]

# error: mmedge export will fail; warning: export may fail, silently fix a dim or bake in a branch,
# or give a graph mobile EPs cannot run; info: handled by an option already given.
SEVERITIES = ("error", "warning", "info")


@dataclass(frozen=True)
class Finding:
    """One pattern found in one component, where it was seen, and how to fix it."""

    component: str  # a component the export would write ("text_encoder", "fusion_head"), or "model"
    pattern: str  # "stft", "complex", "packed-sequence", "data-dependent-control-flow", ...
    severity: str  # one of SEVERITIES
    where: tuple[str, ...]  # "module.path: op (detail)" of each place it was seen
    problem: str  # what breaks, and in which tool
    fix: str  # what to change
    count: int = 1  # calls seen in the traced forward pass

    def line(self) -> str:
        """One line for logs and ExportResult.warnings."""
        more = f" (+{len(self.where) - 1} more)" if len(self.where) > 1 else ""
        return (
            f"pre-flight {self.severity}: {self.component}: {self.pattern} at {self.where[0]}{more}: "
            f"{self.problem}. Fix: {self.fix}"
        )


@dataclass(frozen=True)
class DoctorReport:
    """Everything the pre-flight found in one traced forward pass of a model."""

    model: str  # the model's class name
    components: tuple[str, ...]  # the components of the split (or "model" when no split was found)
    findings: tuple[Finding, ...]
    split: tuple[str, ...] = ()  # the proposed split, one line per encoder: "audio_encoder = audio_encoder on 'audio'"
    reasons: tuple[str, ...] = ()  # how the split was decided (auto-split) and what is folded into encoders

    @property
    def errors(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity == "error")

    @property
    def warnings(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity == "warning")

    def for_component(self, name: str) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.component == name)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form ``mmedge doctor --json`` prints."""
        return {
            "model": self.model,
            "components": list(self.components),
            "split": list(self.split),
            "reasons": list(self.reasons),
            "clean": [c for c in self.components if not self.for_component(c)],
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "findings": [dataclasses.asdict(f) for f in self.findings],
        }
