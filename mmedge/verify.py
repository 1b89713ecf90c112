"""One verifier for every stage: numerics against the previous stage, and dynamic dims that stay dynamic.

Every stage that writes components (export, graph optimisation, quantization, mobile conversion)
checks each one with :func:`verify_component` before the bundle is published, and records the
result in the manifest (``Component.verification``). The check is the same everywhere:

* the candidate graph's IO must match the manifest, and a dim the manifest declares symbolic must
  not be fixed in the graph;
* the candidate runs on at least two feeds in which every symbolic input dim takes two sizes (a
  second feed is derived from the manifest when the caller's feeds do not vary a dim): a graph
  that fixed a dim inside (a Reshape to a constant, say) fails there or gives a wrongly shaped
  output;
* its outputs are compared with the reference's (the previous stage, or PyTorch) on every feed:
  within ``atol + rtol·|ref|``, or, for lossy stages, by cosine similarity.

Torch-free: onnxruntime and numpy only. :func:`raise_failures` turns failed checks into the
stage's typed error, one line per component, naming the stage.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmedge.bundle import MODALITIES, Component, TensorSpec, Verification, check_io, is_batch_symbol, modality_batch
from mmedge.errors import ConfigError, MMEdgeError

__all__ = [
    "ComponentRunner",
    "Tolerance",
    "compare_arrays",
    "other_size",
    "raise_failures",
    "second_shape_feeds",
    "session_specs",
    "top1_matches",
    "verify_component",
]

Feed = Mapping[str, np.ndarray]
ComponentRunner = Callable[[Feed], Mapping[str, np.ndarray]]  # a feed in, outputs by name out
_ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int16)": "int16",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}


@dataclass(frozen=True)
class Tolerance:
    """How close a stage's outputs must be to the reference's (PyTorch's, or the previous stage's).

    Export takes it as ``export_model(..., tolerance=Tolerance(atol=...))``; lossy stages set ``min_cosine``.
    """

    atol: float = 1e-4  # |candidate - reference| <= atol + rtol * |reference| for exact stages
    rtol: float = 1e-3
    min_cosine: float | None = None  # lossy stages (INT8): pass when each output's cosine is at least this


def other_size(symbol: str, size: int) -> int:
    """The size a symbolic dim takes in a second check: more batch rows, a shorter sequence.

    Shorter, not longer, so the second input stays within any maximum length. Each modality's own
    batch symbol grows by another step, so an output axis sized by one of them is told from one
    sized by another.
    """
    if is_batch_symbol(symbol):
        steps = [modality_batch(m) for m in MODALITIES]
        return size + 1 + (steps.index(symbol) + 1 if symbol in steps else 0)
    return size - max(1, size // 4) if size >= 4 else size + 2


def top1_matches(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """Per row (classes on the last axis), whether the candidate's top-1 is a top-1 of the reference.

    Where the reference ties exactly, any of the tied classes agrees: the same photo twice in one
    batch scored against a text gives two equal columns, and which of them rounding puts first
    says nothing about the candidate's accuracy.
    """
    picked = np.argmax(candidate, axis=-1)[..., None]
    return np.take_along_axis(reference, picked, axis=-1)[..., 0] >= np.max(reference, axis=-1)


def compare_arrays(ref: np.ndarray, got: np.ndarray, atol: float, rtol: float) -> tuple[float, float, bool]:
    """(max abs error, max relative error, within tolerance) of ``got`` against ``ref`` of the same shape.

    Relative error is ``|got - ref| / (|ref| + atol)``. NaN on both sides counts as equal, on one
    side as an infinite error. Integer and bool outputs must match exactly (errors are then 0 or 1).
    """
    if not np.issubdtype(ref.dtype, np.floating):
        mismatched = bool(np.any(ref != got))
        return float(mismatched), float(mismatched), not mismatched
    ref64, got64 = ref.astype(np.float64), got.astype(np.float64)
    diff = np.abs(got64 - ref64)
    diff[np.isnan(ref64) & np.isnan(got64)] = 0.0
    diff[np.isnan(ref64) ^ np.isnan(got64)] = np.inf
    if diff.size == 0:
        return 0.0, 0.0, True
    magnitude = np.abs(np.nan_to_num(ref64))
    ok = bool(np.all(diff <= atol + rtol * magnitude))
    return float(diff.max()), float((diff / (magnitude + atol)).max()), ok


def _cosine(ref: np.ndarray, got: np.ndarray) -> float:
    a, b = ref.astype(np.float64).ravel(), got.astype(np.float64).ravel()
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        return 1.0 if na == nb else 0.0
    return float(np.dot(a, b) / (na * nb))


# ---------------------------------------------------------------------------------------------
# symbolic dims and the feeds that vary them


def _symbols(tensors: Sequence[TensorSpec]) -> dict[str, list[tuple[str, int]]]:
    """symbol -> the (tensor, axis) places it appears at, for symbolic dims with a real name."""
    found: dict[str, list[tuple[str, int]]] = {}
    for t in tensors:
        for axis, d in enumerate(t.shape):
            if isinstance(d, str) and d != "?":
                found.setdefault(d, []).append((t.name, axis))
    return found


def _sizes(component: Component, feed: Feed) -> dict[str, int]:
    """The size of each input symbol in ``feed``; the caller's feed must bind each one consistently."""
    sizes: dict[str, int] = {}
    for symbol, places in _symbols(component.inputs).items():
        for name, axis in places:
            if name not in feed or np.ndim(feed[name]) <= axis:
                raise ConfigError(
                    f"component {component.name!r}: feed lacks input {name!r} or its axis {axis} ({symbol!r})"
                )
            size = int(np.shape(feed[name])[axis])
            if sizes.setdefault(symbol, size) != size:
                raise ConfigError(
                    f"component {component.name!r}: feed gives dim {symbol!r} two sizes ({sizes[symbol]} and {size})"
                )
    return sizes


def _unvaried(component: Component, feeds: Sequence[Feed]) -> list[str]:
    """Input symbols that take one size only across ``feeds``."""
    per_feed = [_sizes(component, f) for f in feeds]
    return [s for s in _symbols(component.inputs) if len({sizes[s] for sizes in per_feed}) < 2]


def second_shape_feeds(component: Component, feed: Feed, symbols: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """A feed like ``feed`` with each symbolic input dim (or only ``symbols``) resized.

    Sizes come from :func:`other_size`. Values are taken cyclically along each resized axis,
    starting one row later on ``batch``, so token ids stay in the vocabulary, masks stay masks
    and the rows differ from the original's.
    """
    places = _symbols(component.inputs)
    sizes = _sizes(component, feed)
    chosen = list(places) if symbols is None else list(symbols)
    new = {s: other_size(s, sizes[s]) for s in chosen if sizes.get(s)}
    out = {}
    for name, value in feed.items():
        x = np.asarray(value)
        for symbol, spots in places.items():
            if symbol not in new:
                continue
            for tensor, axis in spots:
                if tensor == name:
                    offset = 1 if is_batch_symbol(symbol) else 0
                    x = np.take(x, (np.arange(new[symbol]) + offset) % x.shape[axis], axis=axis)
        out[name] = np.ascontiguousarray(x)
    return out


# ---------------------------------------------------------------------------------------------
# running


def _ort_session(path: Path) -> Any:
    from mmedge.sessions import create_session, plain_options  # sessions imports this module

    # a rejected feed is reported in the Verification, not logged by ORT
    return create_session(path, plain_options(log_severity=4))


def session_specs(args: Any) -> list[TensorSpec]:
    """An onnxruntime session's ``get_inputs()``/``get_outputs()`` as TensorSpecs, for :func:`check_io`."""
    return [
        TensorSpec(
            a.name,
            _ORT_DTYPES.get(a.type, a.type),
            tuple(d if isinstance(d, int | str) else "?" for d in (a.shape or ())),
        )
        for a in args
    ]


def _first_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:300] or type(e).__name__


def _runner(
    source: str | os.PathLike[str] | ComponentRunner, component: Component
) -> tuple[ComponentRunner | None, list[str], list[str]]:
    """A runner for ``source`` and (problems, dynamic-dim problems) of its graph IO against the manifest."""
    if callable(source):
        return source, [], []
    try:
        session = _ort_session(Path(source))
    except Exception as e:  # noqa: BLE001 - an unloadable graph is a verification finding
        return None, [f"onnxruntime cannot load {Path(source).name}: {_first_line(e)}"], []
    problems = check_io(component, session_specs(session.get_inputs()), session_specs(session.get_outputs()))
    dims = [p for p in problems if "declared dynamic" in p]  # check_io's wording for a dim a stage fixed
    names = [o.name for o in session.get_outputs()]

    def run(feed: Feed) -> dict[str, np.ndarray]:
        return dict(zip(names, session.run(names, {k: np.asarray(v) for k, v in feed.items()}), strict=True))

    return run, [p for p in problems if p not in dims], dims


def _shapes(feed: Feed) -> str:
    return ", ".join(f"{k}{list(np.shape(v))}" for k, v in feed.items())


def _declared_problems(
    spec: TensorSpec, shape: tuple[int, ...], sizes: Mapping[str, int]
) -> tuple[list[str], list[str]]:
    """(fixed-dim problems, symbolic-dim problems) of an output's shape against its manifest entry."""
    if len(shape) != len(spec.shape):
        return [f"output {spec.name!r} has rank {len(shape)}, manifest says {len(spec.shape)}"], []
    fixed, symbolic = [], []
    for axis, (want, got) in enumerate(zip(spec.shape, shape, strict=True)):
        if isinstance(want, int) and want != got:
            fixed.append(f"output {spec.name!r} dim {axis} is {got}, manifest says {want}")
        elif isinstance(want, str) and want in sizes and sizes[want] != got:
            symbolic.append(
                f"output {spec.name!r} dim {axis} ({want!r}) is {got} while the inputs give {want!r}={sizes[want]}"
            )
    return fixed, symbolic


@dataclass
class _Check:
    """One component's check in progress: what was found over feeds and outputs."""

    component: Component
    tolerance: Tolerance
    problems: list[str] = field(default_factory=list)
    dims: list[str] = field(default_factory=list)  # problems that show a lost dynamic dim
    notes: list[str] = field(default_factory=list)
    max_abs: float = 0.0
    max_rel: float = 0.0
    min_cos: float = 1.0

    def outputs(self, index: int, feed: Feed, ref: Mapping[str, np.ndarray], got: Mapping[str, np.ndarray]) -> None:
        """Compare one feed's outputs; shape problems on a resized feed (index > 0) are dim problems."""
        sizes = _sizes(self.component, feed)
        for spec in self.component.outputs:
            if spec.name not in got or spec.name not in ref:
                self.problems.append(f"output {spec.name!r} is missing")
                continue
            want, have = np.asarray(ref[spec.name]), np.asarray(got[spec.name])
            fixed, symbolic = _declared_problems(spec, have.shape, sizes)
            if have.shape != want.shape:
                message = (
                    f"output {spec.name!r} is {list(have.shape)} on inputs {_shapes(feed)}, "
                    f"the reference gives {list(want.shape)}"
                )
                (self.dims if index > 0 else self.problems).append(message)
                continue
            self.problems.extend(fixed)
            self.dims.extend(symbolic)
            self._values(spec.name, want, have, feed)

    def _values(self, name: str, want: np.ndarray, have: np.ndarray, feed: Feed) -> None:
        n = self.tolerance
        abs_err, rel_err, ok = compare_arrays(want, have, n.atol, n.rtol)
        self.max_abs, self.max_rel = max(self.max_abs, abs_err), max(self.max_rel, rel_err)
        if n.min_cosine is not None and np.issubdtype(want.dtype, np.floating):
            cos = _cosine(want, have)
            self.min_cos = min(self.min_cos, cos)
            if cos < n.min_cosine:
                self.problems.append(f"output {name!r}: cosine {cos:.5f} < {n.min_cosine} on inputs {_shapes(feed)}")
        elif not ok:
            self.problems.append(
                f"output {name!r}: max abs error {abs_err:.3g} exceeds atol={n.atol:g} + "
                f"rtol={n.rtol:g}·|ref| on inputs {_shapes(feed)}"
            )

    def record(self, feeds: Sequence[Feed], stage: str, reference: str) -> Verification:
        c, n = self.component, self.tolerance
        dims = sorted(_symbols(c.inputs))
        sizes = [_sizes(c, f) for f in feeds]
        checked = ", ".join(f"{s} {'/'.join(str(z[s]) for z in sizes)}" for s in dims)
        summary = [f"dynamic dims {checked}" if dims else "no dynamic dims"]
        if n.min_cosine is not None:
            summary.append(f"min cosine {self.min_cos:.5f} (pass >= {n.min_cosine})")
        lossy = n.min_cosine is not None
        return Verification(
            stage=stage,
            reference=reference,
            passed=not self.problems and not self.dims,
            max_abs_error=self.max_abs,
            max_rel_error=self.max_rel,
            atol=0.0 if lossy else n.atol,
            rtol=0.0 if lossy else n.rtol,
            shapes=tuple(tuple(tuple(int(d) for d in np.shape(v)) for v in f.values()) for f in feeds),
            dynamic_dims_ok=not self.dims,
            detail="; ".join([*self.notes, *self.dims, *self.problems, *summary]),
        )


def _feeds_for(component: Component, feeds: Sequence[Feed], precomputed: bool) -> list[Feed]:
    if not feeds:
        raise ConfigError(f"component {component.name!r}: verification needs at least one feed")
    unvaried = _unvaried(component, feeds)
    if not unvaried:
        return list(feeds)
    if precomputed:
        raise ConfigError(
            f"component {component.name!r}: the feeds give dims {unvaried} one size only, and reference outputs were "
            "given rather than a runner, so no second shape can be checked; pass feeds of two shapes"
        )
    return [*feeds, second_shape_feeds(component, feeds[0], unvaried)]


def verify_component(
    candidate: str | os.PathLike[str] | ComponentRunner,
    reference: str | os.PathLike[str] | ComponentRunner | Sequence[Mapping[str, np.ndarray]],
    component: Component,
    feeds: Sequence[Feed],
    *,
    stage: str,
    reference_name: str,
    tolerance: Tolerance | None = None,
    note: str = "",
) -> Verification:
    """Check ``candidate`` (a graph file or a runner) against ``reference`` for one component.

    ``reference`` is the previous stage's graph file, a runner, or its outputs for each of
    ``feeds`` (then the feeds must already vary every symbolic input dim). When the feeds do not,
    a feed with those dims resized is added (:func:`second_shape_feeds`). ``component`` is the
    candidate's manifest entry: its symbolic dims are what must stay dynamic. Returns the
    :class:`Verification` to record; pass failures to :func:`raise_failures`. ``tolerance``
    defaults to :class:`Tolerance` ``()``.
    """
    precomputed = not callable(reference) and not isinstance(reference, str | os.PathLike)
    feeds = _feeds_for(component, feeds, precomputed)
    check = _Check(component, tolerance or Tolerance(), notes=[note] if note else [])
    run, load_problems, static_dims = _runner(candidate, component)
    check.problems += load_problems
    check.dims += static_dims
    ref_run = None if precomputed else _runner(reference, component)[0]
    for index, feed in enumerate(feeds if run is not None else ()):
        ref = reference[index] if precomputed else _run_reference(ref_run, feed, index, check)
        if ref is None:
            continue
        try:
            got = run(feed)
        except Exception as e:  # noqa: BLE001 - a rejected feed is the finding
            where = f"fails on inputs {_shapes(feed)}: {_first_line(e)}"
            (check.dims if index > 0 else check.problems).append(where)
            continue
        check.outputs(index, feed, ref, got)
    return check.record(feeds, stage, reference_name)


def _run_reference(
    ref_run: ComponentRunner | None, feed: Feed, index: int, check: _Check
) -> Mapping[str, np.ndarray] | None:
    if ref_run is None:
        check.problems.append("the reference cannot be loaded")
        return None
    try:
        return ref_run(feed)
    except Exception as e:  # noqa: BLE001 - the reference rejecting a derived feed says the feed is unsuitable
        if index == 0:
            check.problems.append(f"the reference fails on inputs {_shapes(feed)}: {_first_line(e)}")
        else:
            check.notes.append(
                f"not checked on inputs {_shapes(feed)}: the reference fails there too ({_first_line(e)})"
            )
        return None


def raise_failures(
    stage: str,
    checks: Mapping[str, Verification],
    error: type[MMEdgeError],
    *,
    dims_only: bool = False,
    fix: str = "",
) -> None:
    """Raise ``error`` naming the stage and every component whose check failed.

    ``dims_only``: only a lost dynamic dim fails (lossy stages report their numerics instead).
    """
    bad = {n: v for n, v in checks.items() if not (v.dynamic_dims_ok if dims_only else v.passed)}
    if not bad:
        return
    lines = [
        f"component {name!r} ({'a dynamic dim was lost' if not v.dynamic_dims_ok else 'outputs differ'}): {v.detail}"
        for name, v in bad.items()
    ]
    reference = next(iter(bad.values())).reference
    raise error(
        f"stage {stage!r} broke {len(bad)} component(s), checked against {reference}:\n  - "
        + "\n  - ".join(lines)
        + (f"\n{fix}" if fix else "")
    )
