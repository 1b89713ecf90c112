"""Package a bundle for phones: fixed shapes, ORT format, a reduced-build operator config, an EP report.

``package_mobile`` turns an ONNX bundle (FP32 or INT8) into a *mobile bundle*: the same contract
(manifest, wiring, assets), each component an ``.ort`` file optimised for the target, with the
dims NNAPI/CoreML need fixed, verified against the source, plus ``required_operators.config``
(build a minimal onnxruntime with only those kernels) and a usability report per component for
NNAPI, CoreML and XNNPACK: how many nodes each would take, in how many partitions, what blocks
full offload (an STFT, a 1-D convolution, dynamic shapes) and the fix.

ORT's guidance decides the optimisation level: NNAPI and CoreML take only plain ONNX ops, so
``android``/``ios`` bake in only ``basic`` optimisations (constant folding, redundant nodes, which
also fold shape arithmetic once shapes are fixed); ``generic`` bakes in ``extended`` fusions for
the CPU EP (``all`` adds only layout transforms, and the x86-only NCHWc one is always left out).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from mmedge.bundle import (
    OPENVINO_BUILD_PREFIX,
    Asset,
    Bundle,
    Component,
    Manifest,
    check_replaceable,
    deploy_assets,
    deploy_bytes,
    load_bundle,
    scratch_directory,
    staged_bundle,
    write_manifest,
    write_sized,
)
from mmedge.errors import BundleError, InputError
from mmedge.graph import Graph
from mmedge.mobile._eps import EPS, analyze, blockers
from mmedge.mobile._ort import LEVELS, convert, required_operators, run_model, write_operator_config
from mmedge.mobile._report import MobileComponentReport, MobileReport
from mmedge.mobile._shapes import (
    DimPlan,
    concrete,
    feeding_patterns,
    fix_inputs,
    fix_outputs,
    graph_io,
    parse_fixed_shapes,
    plan_dims,
)
from mmedge.mobile._verify import ATOL, RTOL, max_abs_difference, probe_inputs, random_tensor
from mmedge.verify import Tolerance, raise_failures, verify_component

__all__ = ["TARGETS", "MobileComponentReport", "MobileReport", "package_mobile", "parse_fixed_shapes"]

TARGETS: dict[str, tuple[str, ...]] = {"android": ("NNAPI", "XNNPACK"), "ios": ("CoreML", "XNNPACK"), "generic": EPS}
DEFAULT_OPTIMIZATION = {"android": "basic", "ios": "basic", "generic": "extended"}
REPORT_JSON, REPORT_MD, OPERATOR_CONFIG = "mobile_report.json", "mobile_report.md", "required_operators.config"
_NEW_ASSETS = {"mobile_report": REPORT_JSON, "mobile_report_md": REPORT_MD, "required_operators": OPERATOR_CONFIG}


@dataclass(frozen=True)
class _Settings:
    target: str
    level: str
    plan: DimPlan
    graph: Graph

    @property
    def arm(self) -> bool:
        return self.target in ("android", "ios")


def package_mobile(
    bundle: str | os.PathLike[str] | Bundle,
    out: str | os.PathLike[str],
    *,
    target: str = "generic",
    fixed_shapes: Mapping[str, int] | None = None,
    optimization: str | None = None,
    progress: Callable[[str], None] | None = None,
    force: bool = False,
) -> MobileReport:
    """Write the mobile bundle of ``bundle`` to ``out`` (atomically) and return its report.

    ``target``: ``"android"`` (NNAPI + XNNPACK), ``"ios"`` (CoreML + XNNPACK) or ``"generic"``
    (all three; dims stay dynamic unless ``fixed_shapes`` names them). ``fixed_shapes``: sizes by
    dim name (``{"batch": 1, "seq": 16}``) overriding the defaults (see ``_mobile_shapes``).
    ``optimization``: ``"basic"``, ``"extended"`` or ``"all"``; default per target as above.
    ``progress`` is called with each component's name once it is done. An existing ``out`` is
    replaced only if it is an mmedge bundle (``force=True``: any folder).
    Raises InputError for bad options, BundleError if the source is unusable or a mobile component
    does not reproduce its source.
    """
    if target not in TARGETS:
        raise InputError(f"target (--target) must be one of {', '.join(TARGETS)}, found {target!r}")
    if optimization is not None and optimization not in LEVELS:
        raise InputError(f"optimization (--optimization) must be one of {', '.join(LEVELS)}, found {optimization!r}")
    check_replaceable(out, force=force)
    source = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    already = [c.name for c in source.manifest.components if c.format != "onnx"]
    if already:
        raise BundleError(
            f"components {already} of {source.path} are already in ORT format; package the ONNX bundle they came from"
        )
    plan = plan_dims(source.manifest, fixed_shapes, fix_all=target != "generic")
    settings = _Settings(target, optimization or DEFAULT_OPTIMIZATION[target], plan, Graph(source.manifest))
    with staged_bundle(out, force=force) as stage, scratch_directory("mobile") as tmp:
        results = _package_components(source, settings, (stage, Path(tmp)), progress)
        components = {c.name: c for c, _ in results}
        operators = write_operator_config(
            stage / OPERATOR_CONFIG,
            required_operators([stage / c.file for c in components.values()]),
            [c.file for c in components.values()],
        )
        report = _report(source, Path(out), settings, [r for _, r in results], operators)
        kept = _kept_assets(source)
        _copy_assets(source, kept, stage)
        manifest = _manifest(source.manifest, settings, components, kept)

        def write(size: int) -> None:
            nonlocal report
            report = dataclasses.replace(report, bundle_size_after=size)
            (stage / REPORT_JSON).write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
            (stage / REPORT_MD).write_text(report.to_markdown(), encoding="utf-8")
            write_manifest(stage, manifest)

        write_sized(stage, write)  # the report states the bundle's size on disk, itself included
    return report


def _package_components(
    source: Bundle, s: _Settings, dirs: tuple[Path, Path], progress: Callable[[str], None] | None
) -> list[tuple[Component, MobileComponentReport]]:
    """Fix, convert, verify and analyse every component; raise once if any fails verification."""
    m = source.manifest
    raw = probe_inputs(source, {i.name: concrete(i.shape, s.plan.probe, f"input {i.name!r}") for i in m.inputs})
    values: dict[str, dict[str, Any]] = {}
    results: list[tuple[Component, MobileComponentReport]] = []
    for c in (m.component(name) for name in s.graph.order()):
        feeds = _feeds(s.graph, c, raw, values, s.plan)
        values[c.name] = run_model(
            source.component_path(c.name), feeds, f"component {c.name!r}", level=s.level, target_arm=s.arm
        )
        fixed_io = {done.name: done.outputs for done, _ in results}
        results.append(
            _package_one(source, c, feeds=feeds, reference=values[c.name], s=s, dirs=dirs, fixed_io=fixed_io)
        )
        if progress is not None:
            progress(c.name)
    raise_failures(
        "mobile",
        {r.name: r.verification for _, r in results},
        BundleError,
        fix="Nothing was written. Try --optimization basic; if it persists, report it with the bundle attached.",
    )
    return results


def _feeds(
    graph: Graph, c: Component, raw: Mapping[str, Any], values: Mapping[str, Any], plan: DimPlan
) -> dict[str, Any]:
    """``c``'s inputs as the wiring feeds them; an input the runtime feeds itself (a decoder's state)
    gets a random tensor of its probe shape: any valid value will do."""
    import numpy as np

    wired = graph.feeds(c.name, raw, values)
    rng = np.random.default_rng(1)
    return {
        t.name: wired[t.name]
        if t.name in wired
        else random_tensor(t.dtype, concrete(t.shape, plan.probe, f"{c.name}.{t.name}"), rng)
        for t in c.inputs
    }


def _package_one(
    source: Bundle,
    c: Component,
    *,
    feeds: Mapping[str, Any],
    reference: Mapping[str, Any],
    s: _Settings,
    dirs: tuple[Path, Path],
    fixed_io: Mapping[str, Any],
) -> tuple[Component, MobileComponentReport]:
    """One component: fixed graph → ``.ort`` in the stage, verified and analysed."""
    import onnx

    stage, tmp = dirs
    what = f"component {c.name!r}"
    model = _fixed_model(source, c, reference, s, fixed_io)
    fixed, optimized_path = tmp / f"{c.name}.onnx", tmp / f"{c.name}.optimized.onnx"
    onnx.save(model, str(fixed))
    file = str(PurePosixPath(c.file).with_suffix(".ort"))
    (stage / file).parent.mkdir(parents=True, exist_ok=True)
    convert(fixed, stage / file, optimized_path, level=s.level, target_arm=s.arm)
    mobile = dataclasses.replace(
        c,
        file=file,
        format="ort",
        inputs=graph_io(model, c.inputs, outputs=False),
        outputs=graph_io(model, c.outputs, outputs=True),
        optimizations=(*c.optimizations, f"ort-format:{s.level}"),
        sha256="",
        size_bytes=0,
    )
    # The shared check, against the source run with the conversion's own settings; dims the mobile
    # manifest still declares symbolic (target "generic") are tried at a second size.
    verification = verify_component(
        lambda feed: run_model(stage / file, feed, what),
        lambda feed: run_model(source.component_path(c.name), feed, what, level=s.level, target_arm=s.arm),
        mobile,
        [feeds],
        stage="mobile",
        reference_name="source-bundle",
        tolerance=Tolerance(atol=ATOL, rtol=RTOL),
        note=f"{file} vs {c.file} run with the same '{s.level}' optimisations",
    )
    mobile = dataclasses.replace(mobile, verification=(*c.verification, verification))
    actual = run_model(stage / file, feeds, what)
    as_pipeline_runs_it = run_model(source.component_path(c.name), feeds, what)  # onnxruntime's defaults
    optimized = onnx.load(str(optimized_path))
    eps = analyze(optimized, model, TARGETS[s.target], s.level)
    report = MobileComponentReport(
        name=c.name,
        source_file=c.file,
        mobile_file=file,
        size_before=source.component_path(c.name).stat().st_size,
        size_after=(stage / file).stat().st_size,
        inputs={t.name: t.shape for t in mobile.inputs},
        outputs={t.name: t.shape for t in mobile.outputs},
        ops=dict(sorted(Counter(f"{n.domain or 'ai.onnx'}:{n.op_type}" for n in optimized.graph.node).items())),
        eps=eps,
        blockers=blockers(eps),
        verification=verification,
        difference_from_default=max_abs_difference(actual, as_pipeline_runs_it),
    )
    return mobile, report


def _fixed_model(
    source: Bundle, c: Component, reference: Mapping[str, Any], s: _Settings, fixed_io: Mapping[str, Any]
) -> Any:
    """The component's ONNX graph with the planned dims fixed on its inputs, and on its outputs
    too once every input is fully fixed (their sizes are then those of the reference run)."""
    import onnx

    what = f"component {c.name!r}"
    model = onnx.load(str(source.component_path(c.name)))
    patterns = feeding_patterns(s.graph, s.plan, c.name, fixed_io)
    fix_inputs(model, patterns, what)
    if all(isinstance(d, int) for shape in patterns.values() for d in shape):
        fix_outputs(model, {name: value.shape for name, value in reference.items()}, what)
    # The exporter's value_info stays (its named dims were fixed with the inputs above): without it
    # onnxruntime cannot infer the shapes some fusions need (SkipLayerNormalization after a
    # transformer's reshapes), the .ort graph differs from the one the desktop session runs, and a
    # dynamic-INT8 graph's quantization steps then round differently.
    return model


def _report(
    source: Bundle, out: Path, s: _Settings, reports: list[MobileComponentReport], operators: tuple[str, ...]
) -> MobileReport:
    import onnxruntime as ort

    return MobileReport(
        source=str(source.path),
        out=str(out),
        target=s.target,
        optimization=s.level,
        eps=TARGETS[s.target],
        fixed_dims=dict(s.plan.fixed),
        fixed_dim_origin=dict(s.plan.origin),
        components=tuple(reports),
        required_operators=operators,
        onnxruntime_version=ort.__version__,
        bundle_size_before=deploy_bytes(source),
    )


def _kept_assets(source: Bundle) -> tuple[Asset, ...]:
    """What inference needs of the source's assets: no monolithic baseline graph, and no external
    weights (an ``.ort`` file holds its own), nor the reports this stage writes anew, nor the
    OpenVINO builds of components (desktop CPUs only: :meth:`mmedge.bundle.Bundle.openvino_path`)."""
    return tuple(
        a
        for a in deploy_assets(source, {})
        if a.name not in _NEW_ASSETS
        and a.file not in _NEW_ASSETS.values()
        and not a.name.startswith(OPENVINO_BUILD_PREFIX)
    )


def _copy_assets(source: Bundle, kept: tuple[Asset, ...], stage: Path) -> None:
    for a in kept:
        (stage / a.file).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source.path / a.file, stage / a.file)


def _manifest(m: Manifest, s: _Settings, components: Mapping[str, Component], kept: tuple[Asset, ...]) -> Manifest:
    """The source manifest with the mobile components, fixed raw-input shapes and the new assets;
    without ``whole_graph``: the one OpenVINO graph quantize measured reads the ONNX files, and a
    mobile bundle's ORT-format files run on onnxruntime alone."""
    import onnxruntime as ort

    inputs = tuple(
        dataclasses.replace(
            i, shape=s.plan.pattern(i.shape), example_shape=concrete(i.shape, s.plan.probe, f"input {i.name!r}")
        )
        for i in m.inputs
    )
    return dataclasses.replace(
        m,
        inputs=inputs,
        components=tuple(components[c.name] for c in m.components),
        assets=kept + tuple(Asset(name, file) for name, file in _NEW_ASSETS.items()),
        created_by={**m.created_by, "mobile_target": s.target, "ort_format": f"onnxruntime {ort.__version__}"},
        whole_graph=None,
    )
