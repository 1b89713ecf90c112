"""From the user's ``run``/``encode`` dict to validated tensors, with every problem in one error.

Keys a call accepts (:class:`InputRouter` builds the table once per bundle):

* a raw input's name, or its modality when exactly one input has that modality;
* an encoder output tensor's name (when no other component has an output of that name), or
  ``"component.tensor"``: a precomputed output, e.g. from :meth:`Pipeline.encode`. Passing the
  outputs of an encoder that the bundle reads (another component's input, or a model output) skips
  it, so a zero-shot classifier's label embeddings are computed once; its raw inputs must then be left out.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mmedge.bundle import Bundle, InputSpec, TensorSpec, TextPreprocess, has_batch_axis
from mmedge.errors import InputError
from mmedge.graph import Graph
from mmedge.runtime._audio_length import MinimumLength, input_minimum, too_short
from mmedge.runtime.limits import DEFAULT_LIMITS, InputLimits
from mmedge.runtime.preprocess import check_array, prepare, prepare_audio, prepare_text
from mmedge.runtime.text import Tokenizer, Vocabulary, load_tokenizer
from mmedge.runtime.validate import (
    all_finite,
    batch_problems,
    id_range_problems,
    raise_problems,
    short_repr,
    tensor_problems,
)

__all__ = ["Feeds", "InputRouter"]

_RAW_HINTS = {
    "image": "raw images go one at a time or in a list: (H, W, C) arrays, file paths or PIL images",
    "audio": "raw waves go one at a time or in a list: 1-D arrays, (wave, sample_rate) or file paths",
}


@dataclass(frozen=True)
class _Expected:
    """What :meth:`InputRouter._prepare` and ``_check_batch`` accept of one input's ready tensor,
    precomputed for :meth:`InputRouter._all_pass`."""

    dtype: np.dtype
    rank: int
    fixed: tuple[tuple[int, int], ...]  # (axis, size) of each fixed dimension
    batch: str | None  # the batch symbol of a first axis of independent rows (``batch``, ``text_batch``)
    floats: bool  # NaN/Inf checked
    ids: bool  # token ids checked against the vocabulary
    audio: bool  # samples checked against the encoders' minimum

    @classmethod
    def of(cls, spec: InputSpec) -> _Expected:
        dtype = np.dtype(spec.dtype)
        return cls(
            dtype=dtype,
            rank=len(spec.shape),
            fixed=tuple((axis, dim) for axis, dim in enumerate(spec.shape) if isinstance(dim, int)),
            batch=str(spec.shape[0]) if has_batch_axis(spec.shape) else None,
            floats=dtype.kind == "f",
            ids=spec.modality == "text" and dtype.kind in "iu",
            audio=spec.modality == "audio",
        )


@dataclass(frozen=True)
class Feeds:
    """Validated tensors of one call: raw inputs by name, precomputed outputs by component."""

    raw: dict[str, np.ndarray]
    provided: dict[str, dict[str, np.ndarray]]
    # clips' own lengths of audio inputs that keep them, where a batch's clips differ: the batch is
    # padded to its longest, and the pipeline runs it row by row, each clip cut back to its length
    lengths: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def rows(self, whole: Collection[str] = ()) -> list[Feeds]:
        """One call's feeds per row, each audio clip at its own length (for batches with ``lengths``).
        ``whole``: inputs that count their items apart from the clips (a zero-shot model's label texts),
        given whole to every row."""
        batch = len(next(iter(self.lengths.values())))
        return [
            Feeds(
                raw={
                    name: value
                    if name in whole
                    else value[i : i + 1, ..., : self.lengths[name][i]]
                    if name in self.lengths
                    else value[i : i + 1]
                    for name, value in self.raw.items()
                },
                provided={
                    c: {t: v if c in whole else v[i : i + 1] for t, v in out.items()}
                    for c, out in self.provided.items()
                },
            )
            for i in range(batch)
        ]


class InputRouter:
    """Maps user keys to inputs, prepares raw values, validates everything against the manifest."""

    def __init__(self, bundle: Bundle, graph: Graph, limits: InputLimits = DEFAULT_LIMITS) -> None:
        self._bundle = bundle
        self._graph = graph
        self.limits = limits
        manifest = bundle.manifest
        self._specs = {i.name: i for i in manifest.inputs}
        self.raw_keys = graph.input_keys()
        self.output_keys: dict[str, tuple[str, TensorSpec]] = {}
        encoders = [c for c in manifest.components if c.role == "encoder"]
        tensor_names = [t.name for c in encoders for t in c.outputs]
        for c in encoders:
            for t in c.outputs:
                self.output_keys[f"{c.name}.{t.name}"] = (c.name, t)
                if tensor_names.count(t.name) == 1 and t.name not in self.raw_keys:
                    self.output_keys[t.name] = (c.name, t)
        self._tokenizers: dict[str, Tokenizer | None] = {}
        self._minimums: dict[str, MinimumLength | None] = {}  # audio input -> fewest samples, read on first use
        # attention-mask input -> the text input it is derived from (TextPreprocess.mask_input)
        self.mask_inputs: dict[str, str] = {
            i.preprocess.mask_input: i.name
            for i in manifest.inputs
            if isinstance(i.preprocess, TextPreprocess) and i.preprocess.mask_input
        }
        self._lock = threading.Lock()
        self._expected = {name: _Expected.of(spec) for name, spec in self._specs.items()}
        # encoder outputs another component or the caller reads: what a precomputed encoder must be given
        self._read = {(e.source, e.output) for e in manifest.wiring} | {
            (o.component, o.tensor) for o in manifest.outputs
        }
        self._vocabs: dict[str, int] = {}  # text input -> vocabulary size, once known (it never changes)

    def resolve(self, inputs: Any, targets: Iterable[str]) -> Feeds:
        """Validated feeds to compute ``targets`` (component names) from the user's ``inputs`` dict."""
        ready = self._ready_tensors(inputs, targets)
        if ready is not None:
            return ready
        if not isinstance(inputs, Mapping):
            raise InputError(
                f"inputs must be a dict of input name → value, found {type(inputs).__name__}; "
                f"this bundle takes: {', '.join(self._specs)}"
            )
        problems: list[str] = []
        raw_given, outputs_given = self._route_keys(inputs, problems)
        provided = self._group_outputs(outputs_given, problems)
        needed = self._graph.needed(targets, frozenset(provided))
        wanted = self._graph.raw_inputs(needed)
        problems += [
            f"input {name!r} is not used: the outputs of every encoder it feeds were passed; leave one of them out"
            for name in raw_given
            if name not in wanted
        ]
        raw: dict[str, np.ndarray] = {}
        derived: dict[str, np.ndarray] = {}  # attention masks from raw text, unless given
        lengths: dict[str, tuple[int, ...]] = {}
        for name in sorted(wanted & raw_given.keys(), key=list(self._specs).index):
            tensor = self._prepare(self._specs[name], raw_given[name], problems, derived, lengths)
            if tensor is not None:
                raw[name] = tensor
        raw |= {name: mask for name, mask in derived.items() if name in wanted and name not in raw_given}
        given = raw_given.keys() | derived.keys()
        problems += [
            f"precomputed outputs of {c!r} are not used by this call; leave them out"
            for c in provided
            if not any(c in self._graph.upstream(n) for n in needed)
        ]
        problems += self._missing(wanted - given, provided)
        problems += self._check_batch(raw, provided)
        raise_problems(problems)
        self._fill_defaults(wanted - given, raw, provided)
        return Feeds(raw=raw, provided=provided, lengths={n: v for n, v in lengths.items() if len(set(v)) > 1})

    def _ready_tensors(self, inputs: Any, targets: Iterable[str]) -> Feeds | None:
        """The feeds when ``inputs`` holds exactly the raw inputs ``targets`` need, by name, each a
        model tensor that passes every per-input check; None sends the call down the general path,
        which then names each problem.

        Why: callers that pass model tensors (a server fed preprocessed data, a benchmark) pay for
        the general path's routing and bookkeeping on every call, and from cold caches that costs
        as much as a small encoder (``benchmarks/NOTES.md``). The checks are the same functions.
        """
        if not isinstance(inputs, dict):
            return None
        wanted = self._graph.raw_inputs(self._graph.needed(targets))  # needed() is memoized per targets
        if inputs.keys() != wanted or any(not isinstance(v, np.ndarray) for v in inputs.values()):
            return None
        if self._all_pass(inputs):
            return Feeds(raw={name: inputs[name] for name in self._specs if name in inputs}, provided={})
        problems: list[str] = []
        derived: dict[str, np.ndarray] = {}
        raw = {
            name: self._prepare(spec, inputs[name], problems, derived, {})
            for name, spec in self._specs.items()
            if name in inputs
        }
        if problems or derived or self._check_batch(raw, {}):  # type: ignore[arg-type] - no None without a problem
            return None
        return Feeds(raw=raw, provided={})  # type: ignore[arg-type]

    def _all_pass(self, inputs: Mapping[str, np.ndarray]) -> bool:
        """Whether every ready tensor passes every check of :meth:`_prepare` and :meth:`_check_batch`.

        The same conditions in one function, without building a message: from cold caches each
        layer of small helpers costs microseconds, and for a small model they added up to a tenth of
        the call (``benchmarks/NOTES.md``). False sends the call to those checks, which explain.
        """
        limits, batches = self.limits, {}
        for name, value in inputs.items():
            expected, shape, size = self._expected[name], value.shape, value.size
            if value.dtype != expected.dtype or len(shape) != expected.rank or not 0 < size <= limits.max_elements:
                return False
            if (shape and shape[0] > limits.max_batch) or any(shape[axis] != dim for axis, dim in expected.fixed):
                return False
            if expected.batch is not None and batches.setdefault(expected.batch, shape[0]) != shape[0]:
                return False
            if expected.floats and not all_finite(value):
                return False
            if expected.ids:
                vocab = self._vocab_size(self._specs[name])
                if value.min() < 0 or (vocab is not None and value.max() >= vocab):
                    return False
            if expected.audio:
                least = self.minimum_samples(name)
                if least is not None and shape[-1] < least.samples:
                    return False
        return True

    def _route_keys(self, inputs: Mapping[Any, Any], problems: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
        raw: dict[str, Any] = {}
        outputs: dict[str, Any] = {}
        for key, value in inputs.items():
            if key in self.raw_keys:
                target, table = self.raw_keys[key], raw
            elif key in self.output_keys:
                component, spec = self.output_keys[key]
                target, table = f"{component}.{spec.name}", outputs
            else:
                problems.append(f"unknown input {short_repr(key)}; {self.accepted_keys()}")
                continue
            if target in table:
                problems.append(f"input {target!r} is given twice (as {key!r} and another key); give it once")
            table[target] = value
        return raw, outputs

    def accepted_keys(self) -> str:
        """A sentence listing the keys a call accepts."""
        raw = ", ".join(self.raw_keys)
        encoded = ", ".join(k for k in self.output_keys if "." not in k) or "none"
        return f"this bundle takes: {raw}; or precomputed encoder outputs: {encoded} (or 'component.tensor')"

    def _group_outputs(self, given: dict[str, Any], problems: list[str]) -> dict[str, dict[str, np.ndarray]]:
        """Precomputed outputs by component, validated; components given only in part are problems."""
        by_component: dict[str, dict[str, Any]] = {}
        bad: set[str] = set()
        for key, value in given.items():
            component, spec = self.output_keys[key]
            by_component.setdefault(component, {})[spec.name] = value
            what = f"encoder output {key!r}"
            found = self._oversize(what, value) or tensor_problems(what, spec.dtype, spec.shape, value)
            problems += found
            bad |= {component} if found else set()
        for component, values in by_component.items():
            missing = [
                t.name
                for t in self._bundle.manifest.component(component).outputs
                if t.name not in values and (component, t.name) in self._read
            ]
            if missing:
                bad.add(component)
                problems.append(
                    f"precomputed outputs of {component!r} are incomplete: missing {missing}; pass all of its "
                    "outputs that the bundle reads (as Pipeline.encode returns them) or none"
                )
        return {c: v for c, v in by_component.items() if c not in bad}

    def _oversize(self, what: str, value: Any) -> list[str]:
        """The size limit an array breaks, as a problem line (checked before its values are scanned)."""
        if not isinstance(value, np.ndarray):
            return []
        try:
            check_array(what, value, self.limits)
        except InputError as e:
            return [str(e)]
        return []

    def _prepare(
        self,
        spec: InputSpec,
        value: Any,
        problems: list[str],
        derived: dict[str, np.ndarray],
        lengths: dict[str, tuple[int, ...]],
    ) -> np.ndarray | None:
        """The validated tensor of one raw input; a text input's attention mask and token type ids go to
        ``derived``, the clip lengths of an audio input that keeps them to ``lengths``."""
        pre = spec.preprocess
        companions = {"mask": pre.mask_input, "type_ids": pre.type_ids_input} if isinstance(pre, TextPreprocess) else {}
        try:
            if spec.keeps_length:
                audio = prepare_audio(spec, value, self.limits)
                tensor = audio.samples
                if audio.lengths is not None:
                    lengths[spec.name] = audio.lengths
            elif any(companions.values()):
                text = prepare_text(spec, value, lambda: self.tokenizer(spec.name), self.limits)
                tensor = text.ids
                for kind, target in companions.items():
                    found = getattr(text, kind)
                    if target and found is not None:
                        derived[target] = found.astype(self._specs[target].dtype)
            else:
                tensor = prepare(spec, value, lambda: self.tokenizer(spec.name), self.limits)
        except InputError as e:
            problems.append(str(e))
            return None
        found = tensor_problems(f"input {spec.name!r}", spec.dtype, spec.shape, tensor)
        if found and tensor is value and spec.modality in _RAW_HINTS:
            found = [
                f"{p} (an array of this rank is taken as the model tensor; {_RAW_HINTS[spec.modality]})" for p in found
            ]
        if not found and spec.modality == "text":
            found = id_range_problems(f"input {spec.name!r}", tensor, self._vocab_size(spec))
        if not found and spec.modality == "audio":
            least = self.minimum_samples(spec.name)
            found = too_short(spec, tensor, least) if least is not None else []
        problems += found
        return None if found else tensor

    def tokenizer(self, name: str) -> Tokenizer | None:
        """The tokenizer of text input ``name``, loaded once on first use (thread-safe)."""
        with self._lock:
            if name not in self._tokenizers:
                self._tokenizers[name] = load_tokenizer(self._bundle, self._specs[name])
            return self._tokenizers[name]

    def minimum_samples(self, name: str) -> MinimumLength | None:
        """The fewest samples audio input ``name`` needs (from its encoders' graphs), read once on first use:
        shorter audio would fail inside onnxruntime (see :mod:`mmedge.runtime._audio_length`)."""
        with self._lock:
            if name not in self._minimums:
                self._minimums[name] = input_minimum(self._bundle, self._graph, self._specs[name])
            return self._minimums[name]

    def _vocab_size(self, spec: InputSpec) -> int | None:
        """The vocabulary size, if known without importing an optional package (kept once known)."""
        known = self._vocabs.get(spec.name)
        if known is not None:
            return known
        pre = spec.preprocess
        if isinstance(pre, TextPreprocess) and pre.vocab_file and not pre.tokenizer_file:
            tokenizer = self.tokenizer(spec.name)
            size = tokenizer.vocab_size if isinstance(tokenizer, Vocabulary) else None
        else:
            loaded = self._tokenizers.get(spec.name)
            size = loaded.vocab_size if loaded is not None else None
        if size is not None:
            self._vocabs[spec.name] = size
        return size

    def _missing(self, names: Iterable[str], provided: Mapping[str, Any]) -> list[str]:
        problems = []
        for name in names:
            spec = self._specs[name]
            if spec.default is not None:
                continue
            skip = [f"{c} outputs" for c in self._graph.consumers(name) if c not in provided]
            source = self.mask_inputs.get(name)
            problems.append(
                f"missing input {name!r} ({spec.modality}, {spec.dtype} {list(spec.shape)}); pass it"
                + (f", or the precomputed {' and '.join(skip)}" if skip else "")
                + (f" (it is derived when {source!r} is given as strings or id lists)" if source else "")
            )
        return problems

    def _check_batch(
        self, raw: Mapping[str, np.ndarray], provided: Mapping[str, Mapping[str, np.ndarray]]
    ) -> list[str]:
        leading = {
            name: (batch, t.shape[0]) for name, t in raw.items() if (batch := self._expected[name].batch) is not None
        }
        for component, values in provided.items():
            shapes = {t.name: t.shape for t in self._bundle.manifest.component(component).outputs}
            leading |= {
                f"{component}.{k}": (str(shapes[k][0]), v.shape[0])
                for k, v in values.items()
                if v.ndim and has_batch_axis(shapes[k])
            }
        found = batch_problems(leading)
        shared = len({symbol for symbol, _ in leading.values()}) == 1
        paired = self._bundle.manifest.paired_outputs() if found and shared else ()  # only on an error
        if paired:  # one photo against several label texts, in a bundle exported with one shared batch
            found[0] += (
                f"; output(s) {', '.join(map(repr, paired))} pair row i of one input with every row of the others "
                "(a similarity matrix over one batch): to score items against a different number of others, "
                "encode each side with Pipeline.encode and compare the embeddings"
            )
        return found

    def _fill_defaults(self, names: Iterable[str], raw: dict[str, np.ndarray], provided: Mapping[str, Any]) -> None:
        """Omitted inputs that declare a default: filled at the call's batch size (1 if unknown), their other
        symbolic dims at the sizes the call's inputs bind them to (``token_type_ids`` as long as the ids)."""
        names = list(names)
        if not names:
            return
        sizes = [t.shape[0] for t in raw.values()] + [v.shape[0] for vs in provided.values() for v in vs.values()]
        batch = sizes[0] if sizes else 1
        bound = {
            dim: int(size)
            for given, tensor in raw.items()
            for dim, size in zip(self._specs[given].shape, tensor.shape, strict=False)
            if isinstance(dim, str)
        }
        for name in names:
            spec = self._specs[name]
            shape = spec.sized_shape(batch, bound)
            if shape is None:
                raise InputError(
                    f"input {name!r} was omitted and its default cannot be sized: a symbolic dim other than "
                    "batch has no example_shape in the bundle; pass the input"
                )
            raw[name] = np.full(shape, spec.default, dtype=spec.dtype)
