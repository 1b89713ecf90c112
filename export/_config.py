"""``export.toml``: how to build the user's model and its example inputs without writing Python.

```toml
[model]                       # keyword arguments of the model's config dataclass or constructor
image_size = 32

[inputs.text]                 # optional when the model has example_inputs(batch)
shape = [2, 16]
dtype = "int64"
high = 500                    # integer inputs are drawn from [low, high); default: len(model.vocab), else
                              # num_embeddings of the nn.Embedding(Bag) that reads the input
modality = "text"             # optional: decides the dynamic axes
[inputs.text.preprocess]      # optional: fields of mmedge.bundle.TextPreprocess / ImagePreprocess / AudioPreprocess
max_length = 16

[encoders]                    # optional: modality = "dotted.submodule.path"; omitted = detect
text = "text_encoder"

[export]                      # optional defaults for the command-line flags
opset = 18
monolithic = true
tokenizer = "hf-model/"       # a tokenizer.json or save_pretrained folder, relative to this file
processor = "hf-model/"       # a preprocessor_config.json (image processor, feature extractor) or its folder; a list for several
```
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmedge.bundle import AudioPreprocess, ImagePreprocess, TextPreprocess
from mmedge.errors import ExportError
from mmedge.export._dict_arguments import grouped

__all__ = ["ExportConfig", "build_model", "encoders_option", "example_inputs", "load_config", "resolve_class"]

_SECTIONS = {"model", "inputs", "encoders", "export"}
_EXPORT_KEYS = {"opset", "monolithic", "dynamic", "atol", "rtol", "audio_frontend", "batch", "tokenizer", "processor"}
_INPUT_KEYS = {"shape", "dtype", "low", "high", "modality", "preprocess"}
# Integer inputs that are pixels, bytes or PCM samples when no embedding reads them: examples span the dtype.
SAMPLE_DTYPES = ("uint8", "int8", "int16")
_PREPROCESS = {"text": TextPreprocess, "image": ImagePreprocess, "audio": AudioPreprocess}
# Where a bare ``--model`` name (``TriModalNet``) is found: its ``REFERENCE_MODELS`` mapping.
REFERENCE_PACKAGE = "mmedge.models"


@dataclass(frozen=True)
class InputConfig:
    """One ``[inputs.<name>]`` table."""

    shape: tuple[int, ...]
    dtype: str = "float32"
    low: int | None = None  # ids start at 0; pixels, bytes and PCM (SAMPLE_DTYPES) at their dtype's minimum
    high: int | None = None
    modality: str | None = None
    preprocess: Any = None


@dataclass(frozen=True)
class ExportConfig:
    """A parsed ``export.toml``."""

    model: Mapping[str, Any] = field(default_factory=dict)
    inputs: Mapping[str, InputConfig] = field(default_factory=dict)  # by the bundle's input names
    encoders: Mapping[str, str] | None = None
    # forward's dict arguments ([inputs.<argument>.<entry>] tables): argument -> its entries' input names
    arguments: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    export: Mapping[str, Any] = field(default_factory=dict)


def load_config(path: str | Path | None) -> ExportConfig:
    """Parse and check an export TOML file; ``None`` gives the empty config."""
    if path is None:
        return ExportConfig()
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ExportError(f"cannot read config {path}: {e.strerror}") from e
    except tomllib.TOMLDecodeError as e:
        raise ExportError(f"config {path} is not valid TOML: {e}") from e
    _unknown(path, "top-level section", set(data) - _SECTIONS, _SECTIONS)
    _unknown(path, "[export] key", set(data.get("export", {})) - _EXPORT_KEYS, _EXPORT_KEYS)
    encoders = data.get("encoders")
    if encoders is not None and not all(isinstance(v, str) for v in encoders.values()):
        raise ExportError(f'{path}: [encoders] values must be submodule paths (strings), e.g. text = "text_encoder"')
    inputs: dict[str, InputConfig] = {}
    arguments: dict[str, tuple[str, ...]] = {}
    for name, spec in _merged_entries(data.get("inputs", {})).items():
        entries = spec if _is_dict_argument(spec) else {name: spec}
        for key, entry in entries.items():
            if key in inputs:
                raise ExportError(f"{path}: input {key!r} is described twice under [inputs]")
            inputs[key] = _input(path, key if entries is not spec else f"{name}.{key}", entry)
        if entries is spec:
            arguments[name] = tuple(spec)
    return ExportConfig(
        model=data.get("model", {}),
        inputs=inputs,
        encoders=encoders,
        export=data.get("export", {}),
        arguments=arguments,
    )


def _merged_entries(tables: Mapping[str, Any]) -> dict[str, Any]:
    """``[inputs.image.preprocess]`` beside ``[inputs.batch.image]`` goes into the latter: the export names
    the bundle's inputs (the dict's entries) in its hints, so that table is written as it says."""
    entries = {key: name for name, spec in tables.items() if _is_dict_argument(spec) for key in spec}
    merged = {name: dict(spec) if isinstance(spec, dict) else spec for name, spec in tables.items()}
    for name, spec in tables.items():
        if name in entries and isinstance(spec, dict) and "shape" not in spec and set(spec) <= _INPUT_KEYS:
            argument = merged[entries[name]]
            argument[name] = {**argument[name], **merged.pop(name)}
    return merged


def _is_dict_argument(spec: Any) -> bool:
    """``[inputs.batch.image]``, ``[inputs.batch.text]``: a table of input tables, for ``forward(batch)``."""
    return (
        isinstance(spec, dict)
        and bool(spec)
        and not set(spec) <= _INPUT_KEYS  # an input's own table ([inputs.image.preprocess] alone)
        and all(isinstance(v, dict) for v in spec.values())
    )


def _unknown(path: Path, what: str, found: set[str], allowed: set[str]) -> None:
    if found:
        raise ExportError(f"{path}: unknown {what} {sorted(found)}; allowed: {sorted(allowed)}")


def _input(path: Path, name: str, spec: Mapping[str, Any]) -> InputConfig:
    _unknown(path, f"key in [inputs.{name}]", set(spec) - _INPUT_KEYS, _INPUT_KEYS)
    if "shape" not in spec:
        raise ExportError(f"{path}: [inputs.{name}] needs a shape, e.g. shape = [2, 16]")
    modality = spec.get("modality")
    pre = spec.get("preprocess")
    if pre is not None:
        modality = modality if modality is not None else _recipe_modality(pre)
        if modality not in _PREPROCESS:
            raise ExportError(
                f'{path}: [inputs.{name}.preprocess] needs modality = "text", "image" or "audio" in [inputs.{name}]'
            )
        pre = _dataclass_from(_PREPROCESS[modality], pre, f"[inputs.{name}.preprocess]")
    return InputConfig(
        shape=tuple(spec["shape"]),
        dtype=spec.get("dtype", "float32"),
        low=spec.get("low"),
        high=spec.get("high"),
        modality=modality,
        preprocess=pre,
    )


def _recipe_modality(table: Mapping[str, Any]) -> str | None:
    """The one modality whose recipe has every key of ``table`` (their fields are disjoint), else None."""
    fits = [m for m, cls in _PREPROCESS.items() if set(table) <= {f.name for f in dataclasses.fields(cls)}]
    return fits[0] if table and len(fits) == 1 else None


def _dataclass_from(cls: type, values: Mapping[str, Any], where: str) -> Any:
    """Build dataclass ``cls`` from TOML values, turning lists into the tuples its fields expect."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ExportError(f"{where}: {cls.__name__} has no field(s) {unknown}; it has {sorted(fields)}")
    converted = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    try:
        return cls(**converted)
    except (TypeError, ValueError) as e:
        raise ExportError(f"{where}: cannot build {cls.__name__}: {e}") from e


def resolve_class(spec: str) -> type:
    """``package.module:ClassName``, or the name of a reference model such as ``TriModalNet``.

    The reference models (:data:`REFERENCE_PACKAGE`) are an application built on this stage, so a
    bare name is looked up in that package at run time, as any user's ``package.module`` is.
    """
    if ":" not in spec:
        known = getattr(_import(REFERENCE_PACKAGE, spec), "REFERENCE_MODELS", {})
        if spec in known:
            return known[spec]
        raise ExportError(f"--model {spec!r}: give package.module:ClassName, or one of {', '.join(known)}")
    module_name, _, attr = spec.partition(":")
    module = _import(module_name, spec)
    cls = getattr(module, attr, None)
    if not isinstance(cls, type):
        raise ExportError(f"--model {spec!r}: {module_name} has no class {attr!r}")
    return cls


def _import(module_name: str, spec: str) -> types.ModuleType:
    try:
        return importlib.import_module(module_name)
    except ImportError as e:
        raise ExportError(
            f"--model {spec!r}: cannot import {module_name!r} ({e}); is it installed or on PYTHONPATH?"
        ) from e


def _config_class(cls: type) -> type | None:
    """The dataclass type of the constructor's single ``config`` argument, if it has one."""
    try:
        hints = typing.get_type_hints(cls.__init__)
    except (NameError, TypeError):
        return None
    params = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    if len(params) != 1 or params[0] not in hints:
        return None
    hint = hints[params[0]]
    options = (
        typing.get_args(hint)
        if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union
        else (hint,)
    )
    return next((t for t in options if dataclasses.is_dataclass(t)), None)


def build_model(cls: type, kwargs: Mapping[str, Any]) -> Any:
    """``cls(config_dataclass(**kwargs))`` when the constructor takes one config dataclass, else ``cls(**kwargs)``."""
    config_cls = _config_class(cls)
    try:
        if config_cls is not None:
            return cls(_dataclass_from(config_cls, kwargs, "[model]"))
        return cls(**kwargs)
    except ExportError:
        raise
    except Exception as e:
        raise ExportError(f"cannot build {cls.__name__} from [model] {dict(kwargs)}: {type(e).__name__}: {e}") from e


def example_inputs(model: Any, config: ExportConfig, batch: int) -> dict[str, Any]:
    """Example tensors from ``[inputs]``, else from ``model.example_inputs(batch)``."""
    import torch

    if not config.inputs:
        if not callable(getattr(model, "example_inputs", None)):
            raise ExportError(
                f"{type(model).__name__} has no example_inputs(batch) method; describe its inputs in the config, "
                'e.g. [inputs.text] shape = [2, 16], dtype = "int64"'
            )
        return dict(model.example_inputs(batch))
    gen = torch.Generator().manual_seed(0)
    out = {}
    unknown = {}  # integer inputs without high: bounded by the embedding that reads them
    for name, spec in config.inputs.items():
        dtype = getattr(torch, spec.dtype, None)
        if not isinstance(dtype, torch.dtype):
            raise ExportError(f'[inputs.{name}] dtype {spec.dtype!r} is not a torch dtype such as "float32" or "int64"')
        if dtype.is_floating_point:
            out[name] = torch.randn(spec.shape, generator=gen, dtype=dtype)
            continue
        low = spec.low if spec.low is not None else 0
        high = spec.high if spec.high is not None else len(getattr(model, "vocab", ()) or ())
        if high > low:
            out[name] = torch.randint(low, high, spec.shape, generator=gen, dtype=dtype)
        else:
            out[name] = torch.full(spec.shape, low, dtype=dtype)  # a valid id for any embedding
            unknown[name] = spec, dtype
    if unknown:
        bounds, why = _embedding_bounds(model, out, list(unknown), config.arguments)
        for name, (spec, dtype) in unknown.items():
            low, high = spec.low if spec.low is not None else 0, bounds.get(name, 0)
            if high <= low and spec.dtype in SAMPLE_DTYPES:  # read by no embedding: the dtype's whole range
                low = torch.iinfo(dtype).min if spec.low is None else spec.low
                high = torch.iinfo(dtype).max + 1
            if high <= low:
                raise ExportError(
                    f"[inputs.{name}] needs high = <exclusive upper bound> for its {spec.dtype} values (e.g. the "
                    f"vocabulary size): no nn.Embedding or nn.EmbeddingBag of {type(model).__name__} reads it "
                    f"directly{why}, so mmedge cannot tell its bound"
                )
            out[name] = torch.randint(low, high, spec.shape, generator=gen, dtype=dtype)
    return grouped(out, config.arguments)


def _embedding_bounds(
    model: Any, inputs: Mapping[str, Any], names: list[str], arguments: Mapping[str, tuple[str, ...]]
) -> tuple[dict[str, int], str]:
    """The ``num_embeddings`` of the ``nn.Embedding`` / ``nn.EmbeddingBag`` that reads each of
    ``names`` as it is (the tensor or a view of it), found by running ``model`` once on ``inputs``
    in eval mode with forward pre-hooks; the smallest where several read it. Also a note on why
    the run failed ("" if it ran): placeholder ids the model cannot run on leave those inputs out.
    """
    import torch
    from torch import nn

    if not isinstance(model, nn.Module):
        return {}, ""
    embeddings = [m for m in model.modules() if isinstance(m, nn.Embedding | nn.EmbeddingBag)]
    if not embeddings:
        return {}, ""
    storages = {inputs[name].untyped_storage().data_ptr(): name for name in names}
    found: dict[str, int] = {}

    def reads(module: nn.Module, args: tuple[Any, ...]) -> None:
        ids = args[0] if args else None
        name = storages.get(ids.untyped_storage().data_ptr()) if isinstance(ids, torch.Tensor) else None
        if name is not None:
            found[name] = min(found.get(name, module.num_embeddings), module.num_embeddings)

    handles = [m.register_forward_pre_hook(reads) for m in embeddings]
    training = model.training
    why = ""
    try:
        model.eval()  # no BatchNorm statistics updated by this look
        with torch.no_grad():
            model(**grouped(inputs, arguments))
    except Exception as e:  # noqa: BLE001 - reported in the "needs high" error instead
        first = (str(e).strip().splitlines() or [""])[0]
        why = f" (running it on placeholder ids to look failed: {type(e).__name__}: {first})"
    finally:
        for handle in handles:
            handle.remove()
        model.train(training)
    return found, why


def encoders_option(given: list[str] | None, configured: dict[str, str] | None) -> dict[str, str] | None:
    """``--encoder MODALITY=PATH`` flags (they replace export.toml's [encoders]) as a dict."""
    if not given:
        return configured
    pairs = [e.partition("=") for e in given]
    bad = [e for e, (_, sep, path) in zip(given, pairs, strict=True) if not sep or not path]
    if bad:
        raise ExportError(f"--encoder {bad[0]!r}: write MODALITY=PATH, e.g. --encoder text=text_encoder")
    return {key: path for key, _, path in pairs}
