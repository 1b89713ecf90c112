"""One zoo row through every stage: export → quantize → Pipeline → package_mobile.

``run_row`` records, per stage, its outcome, its seconds and what it produced; a stage that
raises is recorded as ``{"type", "typed", "message"}`` (``typed``: an ``mmedge.errors`` error, as
every failure should be) and the stages that need its output are skipped. ``record`` is written
to ``result`` after every stage, so a row killed by the zoo's time cap still leaves what it did.
"""

from __future__ import annotations

import json
import statistics
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from _zoo_models import Row, build, samples

AGREEMENT = 0.99  # top-1 agreement (or mean cosine for embedding outputs) with FP32
CAL_SEED, HOLD_SEED = 100, 200


def run_row(row: Row, work: Path, result: Path, *, n_samples: int, threads: int, speed_check: bool) -> dict[str, Any]:
    rec: dict[str, Any] = {"name": row.name, "covers": row.covers, "fusion": row.fusion, "stages": {}}
    save = _saver(rec, result)
    model, example = build(row)
    rec["inputs"] = {k: list(v.shape) for k, v in example.items()}
    fp32, int8, mobile = work / "fp32", work / "int8", work / "mobile"
    if not _stage(rec, "export", save, lambda: _export(row, model, example, fp32)):
        return rec
    cal = _numpy(samples(row, n_samples, CAL_SEED))
    hold = _numpy(samples(row, n_samples, HOLD_SEED))
    quantized = _stage(rec, "quantize", save, lambda: _quantize(fp32, int8, cal, hold, speed_check))
    _stage(rec, "run", save, lambda: _run(model, fp32, int8 if quantized else None, hold, threads))
    _stage(rec, "mobile", save, lambda: _mobile(int8 if quantized else fp32, mobile))
    return rec


def _saver(rec: dict[str, Any], path: Path) -> Callable[[], None]:
    def save() -> None:
        path.write_text(json.dumps(rec, indent=1, default=str) + "\n", encoding="utf-8")

    return save


def _stage(rec: dict[str, Any], name: str, save: Callable[[], None], fn: Callable[[], dict[str, Any]]) -> bool:
    from mmedge.errors import MMEdgeError

    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            out = {"ok": True, **fn()}
        except Exception as e:  # noqa: BLE001 -- every failure is recorded: the zoo judges whether it was typed
            lines = str(e).strip().splitlines() or [""]
            out = {
                "ok": False,
                "error": {"type": type(e).__name__, "typed": isinstance(e, MMEdgeError), "message": lines[0][:400]},
            }
            out["error"]["traceback_tail"] = traceback.format_exc().splitlines()[-4:]
    mine = [w for w in caught if w.category.__module__.startswith("mmedge")]
    if mine:
        out["warnings"] = sorted({f"{w.category.__name__}: {' '.join(str(w.message).split())[:700]}" for w in mine})
    out["seconds"] = round(time.perf_counter() - start, 1)
    rec["stages"][name] = out
    save()
    return out["ok"]


def _numpy(items: list[dict[str, Any]]) -> list[dict[str, np.ndarray]]:
    return [{k: v.numpy() for k, v in item.items()} for item in items]


def _export(row: Row, model: Any, example: dict[str, Any], out: Path) -> dict[str, Any]:
    from mmedge.export import export_model

    encoders = None if row.auto_split else {m: f"{m}_encoder" for m in row.parts}
    result = export_model(model, example, encoders, out=out, **row.export)
    failed = [f"{v.component}/{v.output}: {v.detail}" for v in result.verification if not v.passed]
    return {
        "parity_two_shapes": not failed,
        "failed_checks": failed,
        "max_abs_error": max((v.max_abs_error for v in result.verification), default=0.0),
        "exporters": dict(result.exporters),
        "split": {e.name: {"path": e.path, "inputs": list(e.inputs)} for e in result.encoders},
        "components": [c.name for c in result.bundle.manifest.components],
        "export_warnings": [w[:200] for w in result.warnings],
        "fp32_bytes": sum(p.stat().st_size for p in out.glob("*.onnx")),
    }


def _quantize(src: Path, out: Path, cal: list[dict], hold: list[dict], speed_check: bool) -> dict[str, Any]:
    from mmedge.quantize import quantize_bundle

    report = quantize_bundle(src, out=out, calibration=cal, holdout=hold, speed_check=speed_check)
    outputs = [{"name": o.name, "metric": o.metric, "agreement": o.agreement} for o in report.outputs]
    top1 = [o["name"] for o in outputs if o["metric"] == "top1"]
    return {
        "flips": _flips(src, out, hold, top1) if any(o["agreement"] < 1 for o in outputs) else [],
        "agreement": report.agreement,
        "outputs": outputs,
        "met": all(o["agreement"] >= AGREEMENT for o in outputs),
        "size_ratio": round(report.size_ratio, 3),
        "components": {
            c.name: {"precision": c.precision, "mode": c.recipe.get("mode", ""), "reason": c.reason[:160]}
            for c in report.components
        },
        "int8": [c.name for c in report.components if c.precision == "int8"],
        # each component's own damage (FP32 inputs): worst-sample cosine of its outputs against FP32
        "min_cosine": {c.name: min((o.min_cosine for o in c.outputs), default=1.0) for c in report.components},
        "fallback_rounds": len(report.fallback),
        "failures": [
            f"{c.name}: {f.step}: {f.error[:200]} → {f.action}" for c in report.components for f in c.failures
        ],
    }


def _flips(fp32: Path, int8: Path, hold: list[dict], names: list[str]) -> list[dict[str, Any]]:
    """Held-out samples whose top-1 changed, with FP32's top-1 - top-2 logit margin there and its median."""
    from mmedge.runtime import Pipeline

    a, b = Pipeline(fp32, threads=1), Pipeline(int8, threads=1)
    ref, got = [a.run(x) for x in hold], [b.run(x) for x in hold]
    flips = []
    for name in names:
        logits = np.concatenate([r[name] for r in ref]).reshape(len(hold), -1)
        top2 = np.sort(logits, axis=1)[:, -2:]
        margins = top2[:, 1] - top2[:, 0]
        for i, (r, g) in enumerate(zip(ref, got, strict=True)):
            if int(r[name].argmax()) != int(g[name].argmax()):
                flips.append(
                    {
                        "output": name,
                        "sample": i,
                        "fp32_margin": float(margins[i]),
                        "median_margin": float(np.median(margins)),
                    }
                )
    return flips


def _p50(fn: Callable[[], Any], n: int = 15) -> float:
    fn()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return round(statistics.median(times), 2)


def _run(model: Any, fp32: Path, int8: Path | None, hold: list[dict], threads: int) -> dict[str, Any]:
    import torch

    from mmedge.runtime import Pipeline

    feed = hold[0]
    pipe = Pipeline(fp32, threads=threads)
    got = pipe.run(feed)
    with torch.no_grad():
        ref = model(**{k: torch.from_numpy(v) for k, v in feed.items()})
    ref = ref if isinstance(ref, dict) else {next(iter(got)): ref}
    err = max(float(np.abs(got[k] - ref[k].numpy()).max()) for k in got)
    out: dict[str, Any] = {"fp32_vs_torch_max_abs": err, "fp32_p50_ms": _p50(lambda: pipe.run(feed))}
    if int8 is not None:
        q = Pipeline(int8, threads=threads)
        out["int8_p50_ms"] = _p50(lambda: q.run(feed))
    return out


def _mobile(src: Path, out: Path) -> dict[str, Any]:
    from mmedge.mobile import package_mobile

    report = package_mobile(src, out, target="android")
    shares: dict[str, list[int]] = {}
    for c in report.components:
        for ep in c.eps:
            s = shares.setdefault(ep.ep, [0, 0])
            s[0] += ep.supported_nodes
            s[1] += ep.total_nodes
    return {
        "source": src.name,
        "ep_share": {ep: round(a / b, 3) if b else 0.0 for ep, (a, b) in shares.items()},
        "blockers": sorted({b.op for c in report.components for b in c.blockers}),
        "size_ratio": round(report.size_after / report.size_before, 3) if report.size_before else 1.0,
    }
