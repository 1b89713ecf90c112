"""The modules that are actually exported: one encoder, the head, or the whole model.

Each wrapper takes flat positional tensors (one per ONNX graph input) and returns a flat tuple
(one per ONNX graph output), so both exporters see the same simple signature.

The head is "``forward`` with the encoders replaced by stubs that return given tensors": the
user's own ``forward`` runs unchanged, so whatever it does between and after the encoders (a
mask, a fusion, a decoder) is exported as written.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from torch import nn

from mmedge.errors import ExportError
from mmedge.export._capture import Call, Raw
from mmedge.export._tree import rebuild, tensors

__all__ = ["EncoderModule", "FoldedEncoderModule", "HeadModule", "MonolithicModule", "stubbed"]


class EncoderModule(nn.Module):
    """``forward(*raw inputs)`` = the encoder called exactly as ``forward`` called it, flattened."""

    def __init__(self, encoder: Any, call: Call, input_names: Sequence[str]) -> None:
        super().__init__()
        self.encoder = encoder
        self.call = call
        self.input_names = tuple(input_names)

    def forward(self, *xs: Any) -> tuple[Any, ...]:
        given = dict(zip(self.input_names, xs, strict=True))
        args = [given[a.name] if isinstance(a, Raw) else a for a in self.call.args]
        kwargs = {k: given[v.name] if isinstance(v, Raw) else v for k, v in self.call.kwargs.items()}
        return tuple(tensors(self.encoder(*args, **kwargs)))


class _Reached(BaseException):
    """Raised at the encoder's call to stop ``forward`` there, carrying the arguments it was given.

    A BaseException, so that an ``except Exception`` in the user's forward lets it through.
    """

    def __init__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        super().__init__()
        self.call = (args, kwargs)


class FoldedEncoderModule(nn.Module):
    """``forward(*raw inputs)`` = ``forward``'s own code up to the encoder's call, then the encoder.

    The computation ``forward`` does on the raw inputs before calling the encoder (an unsqueeze, a
    ``/ 255``, a normalisation with buffers) is the user's code run as written, so the exporter
    traces it with symbolic shapes. ``forward`` is stopped where it calls the encoder; other raw
    inputs it needs on the way get their example values from ``constants`` (the split has shown
    that none of them feeds this encoder). The call is intercepted by a plain function put in the
    encoder's place for the duration of the pass (so no submodule scope is left open, which
    torch.export needs), or, for an encoder reached another way, by a pre-hook (then only the
    TorchScript exporter copes).
    """

    def __init__(self, model: Any, path: str, input_names: Sequence[str], constants: Mapping[str, Any]) -> None:
        super().__init__()
        self.model = model
        self.path = path
        self.input_names = tuple(input_names)
        self.constants = dict(constants)

    @property
    def encoder(self) -> Any:
        return self.model.get_submodule(self.path)

    def forward(self, *xs: Any) -> tuple[Any, ...]:
        values = {**self.constants, **dict(zip(self.input_names, xs, strict=True))}
        encoder = self.encoder

        def pre_hook(_module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            raise _Reached(args, kwargs)

        handle = encoder.register_forward_pre_hook(pre_hook, with_kwargs=True)
        try:
            with _intercepted(self.model, self.path):
                self.model.forward(**values)
        except _Reached as reached:
            args, kwargs = reached.call
        else:
            raise ExportError(f"internal: forward returned without calling {self.path!r}")
        finally:
            handle.remove()
        return tuple(tensors(encoder(*args, **kwargs)))


@contextmanager
def _intercepted(model: Any, path: str) -> Iterator[None]:
    """Put plain functions in place of the encoder at ``path`` and of the modules containing it.

    The encoder's stand-in raises :class:`_Reached`; each container's runs its ``forward``
    directly. Being no modules, they open no submodule scope that the raise would leave open
    (torch.export checks them), and ``self.<name>`` as well as ``self.<dict>["<name>"]`` find them.
    """
    names = path.split(".")
    swapped: list[tuple[Any, str, Any]] = []
    try:
        parent = model
        for depth, leaf in enumerate(names):
            module = parent._modules[leaf]
            swapped.append((parent, leaf, module))
            parent._modules[leaf] = _raise_reached if depth == len(names) - 1 else _ForwardOnly(module)
            parent = module
        yield
    finally:
        for parent, leaf, module in reversed(swapped):
            parent._modules[leaf] = module


def _raise_reached(*args: Any, **kwargs: Any) -> Any:
    raise _Reached(args, kwargs)


class _ForwardOnly:
    """A container module as seen by ``forward``: calling it runs its ``forward`` without ``__call__``."""

    def __init__(self, module: Any) -> None:
        self._module = module

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._module.forward(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)

    def __getitem__(self, key: Any) -> Any:
        return self._module[key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._module)

    def __len__(self) -> int:
        return len(self._module)


class _Stub(nn.Module):
    """Stands in for an encoder inside the head: returns whatever it was last given."""

    def __init__(self, replaced: str) -> None:
        super().__init__()
        self.replaced = replaced
        self.value: Any = None

    def forward(self, *_args: Any, **_kwargs: Any) -> Any:
        return self.value


@contextmanager
def stubbed(model: Any, paths: Sequence[str]) -> Iterator[dict[str, _Stub]]:
    """Replace the submodules at ``paths`` by stubs for the duration of the block."""
    originals: list[tuple[Any, str, Any]] = []
    stubs: dict[str, _Stub] = {}
    try:
        for path in paths:
            parent_path, _, leaf = path.rpartition(".")
            parent = model.get_submodule(parent_path) if parent_path else model
            originals.append((parent, leaf, getattr(parent, leaf)))
            stubs[path] = _Stub(path)
            setattr(parent, leaf, stubs[path])
        yield stubs
    finally:
        for parent, leaf, module in reversed(originals):
            setattr(parent, leaf, module)


class HeadModule(nn.Module):
    """``forward(*head inputs)`` = the model's ``forward`` with every encoder stubbed out.

    ``inputs`` names the graph inputs (encoder output names and raw input names); every other
    value ``forward`` needs comes from ``constants`` (the example tensors), which is safe because
    usage detection has shown that the head never touches them.
    """

    def __init__(
        self,
        model: Any,
        *,
        stubs: Mapping[str, _Stub],
        templates: Mapping[str, tuple[Any, tuple[str, ...]]],
        raw_names: Sequence[str],
        inputs: Sequence[str],
        constants: Mapping[str, Any],
        skip: Sequence[int] = (),
    ) -> None:
        super().__init__()
        self.model = model
        self.stubs = dict(stubs)
        self.templates = dict(templates)  # encoder path -> (output as captured, its flat tensor names)
        self.raw_names = tuple(raw_names)
        self.inputs = tuple(inputs)
        self.constants = dict(constants)
        self.skip = frozenset(skip)  # positions of flat outputs left out: encoder outputs returned as they are

    def forward(self, *xs: Any) -> tuple[Any, ...]:
        values = {**self.constants, **dict(zip(self.inputs, xs, strict=True))}
        for path, (template, names) in self.templates.items():
            self.stubs[path].value = rebuild(template, [values[n] for n in names])
        found = tensors(self.model(**{n: values[n] for n in self.raw_names}))
        return tuple(t for i, t in enumerate(found) if i not in self.skip)


class MonolithicModule(nn.Module):
    """``forward(*raw inputs)`` = the whole model, outputs flattened."""

    def __init__(self, model: Any, raw_names: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.raw_names = tuple(raw_names)

    def forward(self, *xs: Any) -> tuple[Any, ...]:
        return tuple(tensors(self.model(**dict(zip(self.raw_names, xs, strict=True)))))
