"""The PyTorch eager variant of ``mmedge bench``, run as its own process (``python -m mmedge.bench._torch_worker``).

This module imports torch, so only the benchmark's PyTorch worker process ever loads it: the
runtime's processes stay torch-free. The model is a reference model name or
``package.module:Class`` built without arguments or from an export.toml's ``[model]`` table, with
optional checkpoint weights, run in
``inference_mode`` with the benchmark's thread count on the same tensors as the ONNX variants.
Encoder submodules named like the bundle's encoder components are timed with forward hooks;
the rest of ``forward`` is attributed to the head.
"""

from __future__ import annotations

import importlib
import io
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mmedge.bench._profile import hotspots
from mmedge.bench._stats import RunTiming
from mmedge.bench._types import MODEL_PART, Hotspots
from mmedge.bench._worker import serve
from mmedge.bundle import load_bundle
from mmedge.errors import InputError

__all__ = ["TorchRunner", "build_model", "flat_outputs"]


def _import_torch() -> None:
    import torch  # noqa: F401 - timed on its own: the framework's import cost


def build_model(spec: str, kwargs: Mapping[str, Any] | None = None) -> Any:
    """A reference model by name, or ``package.module:Class()``; raises InputError naming the fix.

    ``kwargs`` (an export.toml's ``[model]`` table) are its constructor arguments, or the fields of
    its config dataclass, built as ``mmedge export --config`` builds them.
    """
    if ":" in spec:
        module_name, _, attr = spec.partition(":")
        try:
            cls = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as e:
            raise InputError(f"cannot import torch model {spec!r} ({e}); check the module path and class name") from e
    else:
        from mmedge.models import REFERENCE_MODELS

        if spec not in REFERENCE_MODELS:
            raise InputError(
                f"unknown reference model {spec!r}; choose one of {', '.join(REFERENCE_MODELS)} or pass 'package.module:Class'"
            )
        cls = REFERENCE_MODELS[spec]
    if kwargs is not None:
        from mmedge.export import build_model as build_from_config

        return build_from_config(cls, kwargs)
    try:
        return cls()
    except TypeError as e:
        raise InputError(
            f"torch model {spec!r} must be constructible without arguments ({e}); "
            "give its constructor arguments in an export.toml [model] table: --config export.toml"
        ) from e


def flat_outputs(value: Any) -> list[np.ndarray]:
    """A model's tensors as arrays, in order: one tensor, or a (nested) tuple, list or dict of them."""
    if isinstance(value, Mapping):
        return [a for v in value.values() for a in flat_outputs(v)]
    if isinstance(value, tuple | list):
        return [a for v in value for a in flat_outputs(v)]
    return [value.detach().cpu().numpy()]


class TorchRunner:
    """A PyTorch model timed end to end and per encoder submodule."""

    def __init__(self, spec: Mapping[str, Any]) -> None:
        import torch

        torch.set_num_threads(int(spec["threads"]))
        self.model = build_model(spec["model"], spec.get("model_kwargs"))
        if spec.get("checkpoint"):
            from mmedge.train import load_checkpoint

            load_checkpoint(self.model, spec["checkpoint"])
            self.size_bytes = Path(spec["checkpoint"]).stat().st_size
        else:
            buffer = io.BytesIO()
            torch.save(self.model.state_dict(), buffer)
            self.size_bytes = buffer.getbuffer().nbytes
        self.model.eval()
        manifest = load_bundle(spec["bundle"], check_hashes=False).manifest
        heads = [c.name for c in manifest.components if c.role != "encoder"]
        self._rest = heads[0] if len(heads) == 1 else "rest of forward"
        self._marks: dict[str, list[int]] = {}
        hooked = [c.name for c in manifest.components if c.role == "encoder" and self._hook(c.name)]
        self.precision = "fp32"
        self.providers = ("torch-cpu",)
        self.notes = (f"{self._rest}: the rest of forward after the encoders ({', '.join(hooked) or 'none timed'})",)
        self._cache: tuple[int, dict[str, Any]] | None = None

    def _hook(self, name: str) -> bool:
        try:
            module = self.model.get_submodule(name)
        except AttributeError:
            return False
        module.register_forward_pre_hook(lambda *_: self._marks.setdefault(name, []).append(time.perf_counter_ns()))
        module.register_forward_hook(lambda *_: self._marks[name].append(time.perf_counter_ns()))
        return True

    def _tensors(self, feeds: Mapping[str, np.ndarray]) -> dict[str, Any]:
        """Tensors sharing the arrays' memory, made once per feed dict (outside the timed call)."""
        import torch

        from mmedge.export import forward_arguments

        if self._cache is None or self._cache[0] != id(feeds):
            tensors = {k: torch.from_numpy(np.asarray(v)) for k, v in feeds.items()}
            self._cache = (id(feeds), forward_arguments(self.model, tensors))  # forward(batch): its dict rebuilt
        return self._cache[1]

    def run(self, feeds: Mapping[str, np.ndarray]) -> RunTiming:
        import torch

        tensors = self._tensors(feeds)
        self._marks.clear()
        with torch.inference_mode():
            start = time.perf_counter_ns()
            self.model(**tensors)
            e2e = time.perf_counter_ns() - start
        busy = {name: marks[-1] - marks[0] for name, marks in self._marks.items() if len(marks) >= 2}
        rest = max(0, e2e - sum(busy.values()))
        parts = tuple((n, "component", ns) for n, ns in busy.items()) + ((self._rest, "component", rest),)
        return RunTiming(e2e, parts, {**busy, self._rest: rest})

    def outputs(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """``forward``'s tensors, flattened in order (a tuple, list or dict of them, or one)."""
        import torch

        with torch.inference_mode():
            return flat_outputs(self.model(**self._tensors(feeds)))

    def profile(self, feeds: Mapping[str, np.ndarray], runs: int) -> list[Hotspots]:
        """Self CPU time per aten op from torch.profiler, like ORT's per-op kernel time."""
        import torch
        from torch.profiler import ProfilerActivity, profile

        tensors = self._tensors(feeds)
        with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(runs):
                self.model(**tensors)
        totals = {
            e.key: (float(e.self_cpu_time_total), int(e.count))
            for e in prof.key_averages()
            if e.self_cpu_time_total > 0
        }
        return [hotspots(MODEL_PART, totals, runs)]


if __name__ == "__main__":
    sys.exit(serve(_import_torch, TorchRunner))
