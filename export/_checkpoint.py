"""Load trained weights into a model safely and say exactly what did not fit.

``.pt/.pth/.bin/.ckpt`` files are read with ``torch.load(weights_only=True)``: a pickle that
carries code (anything but tensors and plain containers) is refused *before* it can run.
``.safetensors`` files cannot carry code at all. Missing, unexpected and mis-shaped keys are
listed by name, because a half-loaded model exports and verifies perfectly — against itself.
Values are checked too: sparse tensors (which ``load_state_dict`` cannot copy into dense
parameters) and NaN/Inf weights (a diverged run) are refused by name; float64 weights cast into
float32 parameters load with a :class:`~mmedge.errors.CheckpointWarning` and a note in the report.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmedge.bundle import sha256_file
from mmedge.errors import CheckpointError, CheckpointWarning

__all__ = ["CHECKPOINT_SUFFIXES", "CheckpointReport", "load_checkpoint"]

TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
CHECKPOINT_SUFFIXES = (*TORCH_SUFFIXES, ".safetensors")
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict")
_LISTED = 20  # keys listed per problem; the count says how many more


@dataclass(frozen=True)
class CheckpointReport:
    """What loading a checkpoint did."""

    path: Path
    sha256: str
    format: str  # "torch" or "safetensors"
    loaded: int  # tensors copied into the model
    missing: tuple[str, ...] = ()  # model keys the checkpoint lacks (left as initialised)
    unexpected: tuple[str, ...] = ()  # checkpoint keys the model lacks (ignored)
    mismatched: tuple[str, ...] = ()  # "key: checkpoint [..] vs model [..]"
    notes: tuple[str, ...] = ()  # unwrapping or casting done, e.g. a "module." prefix removed, float64 cast


# Modules whose objects training frameworks store beside the weights (Hydra/OmegaConf configs, argparse
# namespaces, paths, Lightning's hyper-parameter dicts, numpy scalars): ``torch.load(weights_only=True)``
# refuses them, and they are read as inert placeholders instead (:class:`_Skipped`), never constructed.
# Any other global (code, a pickled nn.Module) is still refused.
_METADATA_MODULES = (
    "omegaconf",
    "argparse",
    "pathlib",
    "lightning",
    "pytorch_lightning",
    "lightning_fabric",
    "numpy",
    "collections",
    "datetime",
    "typing",
)
# Built-in types such metadata refers to as values (OmegaConf records ``ref_type=dict``); torch names them
# without the ``builtins.`` its allowlist is keyed by. Other builtins (eval, getattr, ...) are refused.
_BUILTIN_TYPES = frozenset(("dict", "list", "tuple", "set", "frozenset", "int", "float", "str", "bool", "bytes"))
_MAX_SKIPPED = 64  # distinct placeholder names tried before giving up


class _Skipped:
    """What a non-tensor object of a checkpoint becomes: takes any arguments and state, keeps nothing."""

    def __new__(cls, *_args: Any, **_kwargs: Any) -> _Skipped:
        return super().__new__(cls)

    def __init__(self, *_args: Any, **_kwargs: Any) -> None:
        pass

    def __setstate__(self, _state: Any) -> None:
        pass


def _blocked_global(error: Exception) -> str | None:
    """The global ``torch.load(weights_only=True)`` refused, as its allowlist spells it."""
    found = re.search(r"GLOBAL ([\w.]+)", str(error))  # weights_only names the global it blocked
    if found is None:
        return None
    name = found.group(1)
    return f"builtins.{name}" if name in _BUILTIN_TYPES else name


def _is_metadata(name: str) -> bool:
    module = name.split(".", maxsplit=1)[0]
    return module in _METADATA_MODULES or (module == "builtins" and name.removeprefix("builtins.") in _BUILTIN_TYPES)


def _torch_load(path: Path) -> tuple[Any, list[str]]:
    """``torch.load(weights_only=True)``, with the metadata globals it refuses read as placeholders."""
    import torch

    skipped: list[str] = []
    while True:
        stubs = [(type(name, (_Skipped,), {}), name) for name in skipped]
        try:
            with torch.serialization.safe_globals(stubs):
                return torch.load(path, map_location="cpu", weights_only=True), skipped
        except pickle.UnpicklingError as e:
            name = _blocked_global(e)
            if name is None or not _is_metadata(name) or name in skipped or len(skipped) >= _MAX_SKIPPED:
                raise
            skipped.append(name)


def _read(path: Path) -> tuple[str, Any, list[str]]:
    import torch

    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return "safetensors", load_file(str(path)), []
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(
                f"{path} is not a valid safetensors file ({e}); re-save it with safetensors.torch.save_file"
            ) from e
    try:
        # a sparse tensor's indices are checked as it is built: a crafted one cannot reach memory out of bounds
        with torch.sparse.check_sparse_tensor_invariants(enable=True):
            data, skipped = _torch_load(path)
        return "torch", data, skipped
    except pickle.UnpicklingError as e:
        found = _blocked_global(e)
        if found is None:
            raise CheckpointError(
                f"{path} is not a readable PyTorch checkpoint; it is corrupted or not a torch.save file"
            ) from e
        raise CheckpointError(
            f"refused to load {path}: it references {found}, a pickled Python object other than tensors (possibly code), and "
            "mmedge only loads checkpoints with torch.load(weights_only=True), which never runs them. If you trust "
            "the file, re-save just the weights: torch.save(model.state_dict(), 'weights.pt'), or convert it to .safetensors."
        ) from e
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint ({first}); it is truncated, corrupted or not a torch.save file"
        ) from e


def _unwrap(data: Any, path: Path) -> tuple[dict[str, Any], list[str]]:
    """The state_dict inside ``data``: itself, or under a "state_dict"/"model"/"model_state_dict" key."""
    import torch

    notes = []
    if isinstance(data, Mapping):
        for key in _WRAPPER_KEYS:
            if isinstance(data.get(key), Mapping):
                data = data[key]
                notes.append(f"weights read from the checkpoint's {key!r} entry")
                break
    if not isinstance(data, Mapping):
        raise CheckpointError(f"{path} holds a {type(data).__name__}, not a state_dict; save model.state_dict()")
    bad = [str(k) for k, v in data.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: entries {bad[:_LISTED]} are not tensors; save model.state_dict() only")
    return dict(data), notes


def _fit_prefix(state: dict[str, Any], own: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The weights under the key prefix that makes them the model's, with a note; else ``state`` as it is.

    Wrappers add a prefix to every key: ``module.`` (DataParallel, DDP), ``_orig_mod.`` (``torch.compile``),
    ``model.`` (a Lightning module holding the network; its loss or metrics may hold tensors of their
    own beside it). The prefix that matches the most model keys, with at most three dotted parts, is
    taken when it matches more than the keys as they are and at least half the model's.
    """
    exact = sum(k in own for k in state)
    counts: dict[str, int] = {}
    for key in state:
        parts = key.split(".")
        for depth in range(1, min(4, len(parts))):
            if ".".join(parts[depth:]) in own:
                prefix = ".".join(parts[:depth]) + "."
                counts[prefix] = counts.get(prefix, 0) + 1
    if not counts:
        return state, []
    prefix, hits = max(counts.items(), key=lambda item: (item[1], -len(item[0])))
    if hits <= exact or 2 * hits < len(own):
        return state, []
    taken = {k: v for k, v in state.items() if k in own and not k.startswith(prefix)}
    taken.update((k.removeprefix(prefix), v) for k, v in state.items() if k.startswith(prefix))
    left = [k for k in state if not k.startswith(prefix) and k not in own]
    note = f"weights read under the key prefix {prefix!r} ({hits} tensors)"
    if left:
        note += f"; {len(left)} other entries ignored: {_listed(left)}"
    return taken, [note]


def _listed(items: list[str]) -> str:
    shown = ", ".join(items[:_LISTED])
    return shown + (f" (and {len(items) - _LISTED} more)" if len(items) > _LISTED else "")


def load_checkpoint(model: Any, path: str | os.PathLike[str], *, strict: bool = True) -> CheckpointReport:
    """Load ``path`` into ``model`` and report what fitted.

    Raises :class:`CheckpointError` (an ExportError) for an unreadable or unsafe file, for any shape mismatch, and
    (when ``strict``) for missing or unexpected keys, listing them by name.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.suffix not in CHECKPOINT_SUFFIXES:
        raise CheckpointError(
            f"checkpoint {path.name} has suffix {path.suffix!r}; use one of {', '.join(CHECKPOINT_SUFFIXES)}"
        )
    fmt, data, skipped = _read(path)
    state, notes = _unwrap(data, path)
    if skipped:
        notes.insert(
            0, f"{len(skipped)} kind(s) of non-tensor object read as placeholders, not loaded: {_listed(skipped)}"
        )
    own = model.state_dict()
    state, prefixed = _fit_prefix(state, own)
    notes += prefixed
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        f"{k}: checkpoint {list(state[k].shape)} vs model {list(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    problems = [f"shape mismatches: {_listed(mismatched)}"] if mismatched else []
    if strict and missing:
        problems.append(f"missing from the checkpoint: {_listed(missing)}")
    if strict and unexpected:
        problems.append(f"not in the model: {_listed(unexpected)}")
    if problems:
        raise CheckpointError(
            f"checkpoint {path.name} does not fit {type(model).__name__}:\n  - "
            + "\n  - ".join(problems)
            + "\nCheck that the "
            "model is built with the configuration it was trained with (--config), or load non-strictly to skip missing/unexpected keys."
        )
    loaded = {k: v for k, v in state.items() if k in own}
    _check_values(loaded, {name for name, _ in model.named_parameters()}, path)
    cast = _float64_cast(loaded, own, path)
    if cast:
        notes.append(f"cast {len(cast)} float64 tensor(s) to the model's lower precision")
    with torch.no_grad():
        model.load_state_dict(loaded, strict=False)
    return CheckpointReport(
        path=path,
        sha256=sha256_file(path),
        format=fmt,
        loaded=len(state) - len(unexpected),
        missing=tuple(missing),
        unexpected=tuple(unexpected),
        mismatched=tuple(mismatched),
        notes=tuple(notes),
    )


def _check_values(state: Mapping[str, Any], parameters: set[str], path: Path) -> None:
    """CheckpointError naming sparse tensors, or NaN/Inf in parameters (NaN in buffers): each kind listed whole."""
    import torch

    sparse = [f"{k} ({str(v.layout).removeprefix('torch.')})" for k, v in state.items() if v.layout != torch.strided]
    if sparse:
        raise CheckpointError(
            f"checkpoint {path.name} holds sparse tensors, which cannot load into the model's dense parameters: "
            f"{_listed(sparse)}. Densify them and re-save: torch.save({{k: t.to_dense() if t.layout != "
            "torch.strided else t for k, t in state.items()}, 'weights.pt')"
        )
    bad = []
    for k, v in state.items():
        if not (v.is_floating_point() or v.is_complex()):
            continue
        nan = int(torch.isnan(v).sum())
        inf = int(torch.isinf(v).sum()) if k in parameters else 0  # an attention mask buffer may hold -inf
        if nan or inf:
            bad.append(f"{k} ({', '.join(f'{n} {kind}' for n, kind in ((nan, 'NaN'), (inf, 'Inf')) if n)})")
    if bad:
        raise CheckpointError(
            f"checkpoint {path.name} has non-finite weights: {_listed(bad)}. Training diverged or the file is "
            "damaged; an exported model would output NaN. Load a checkpoint saved before the divergence."
        )


def _float64_cast(state: Mapping[str, Any], own: Mapping[str, Any], path: Path) -> list[str]:
    """Warn (CheckpointWarning) when float64 checkpoint tensors go into lower-precision model tensors."""
    import torch

    cast = [
        k
        for k, v in state.items()
        if v.dtype == torch.float64 and own[k].is_floating_point() and own[k].dtype != torch.float64
    ]
    if cast:
        into = "/".join(sorted({str(own[k].dtype).removeprefix("torch.") for k in cast}))
        warnings.warn(
            CheckpointWarning(
                f"checkpoint {path.name}: {len(cast)} float64 tensor(s) cast float64 → {into} as they load, losing "
                f"the precision beyond {into}: {_listed(cast)}. To keep it, build the model in float64 "
                "(model.double()); to silence this, save the weights as float32: "
                "torch.save({k: t.float() for k, t in state.items()}, 'weights.pt')"
            ),
            stacklevel=3,
        )
    return cast
