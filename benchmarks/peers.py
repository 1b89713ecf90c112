"""mmedge against peer toolchains, speed beside accuracy, on the reference models.

Per model: train briefly on the synthetic data and export + quantize as ``run_standard.py`` does,
then one interleaved ``mmedge bench`` run with the peers (onnxruntime INT8, OpenVINO FP32/INT8,
ExecuTorch FP32/INT8, each INT8 also with its spectral front-end kept FP32) built from the same
model and checkpoint, their INT8 calibrated on the same training samples mmedge's was, and every
variant's top-1 agreement with PyTorch FP32 measured on held-out samples. Writes
``<out>/peers.json`` and ``<out>/peers.md``.

    .venv/bin/python benchmarks/peers.py --peer-python /tmp/et-venv/bin/python
    .venv/bin/python benchmarks/peers.py --models trimodal224 resnetbert224 --peer-python ...  # real sizes

The real-size models (``trimodal224``, ``resnetbert224``) are prepared exactly as
``run_standard.py`` prepares them (same training, calibration and held-out samples).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import run_standard  # this folder is on sys.path when the script runs

from mmedge.bench import BenchReport, MachineInfo, bench, busy_warning, machine_line
from mmedge.runtime.policy import parse_policy

__all__ = ["PEER_MODELS", "main"]

RESULTS = Path(__file__).parent / "results"
CALIBRATION = 128  # training samples every INT8 (mmedge's and the peers') is calibrated on
AGREEMENT_SAMPLES = 300  # held-out samples (another seed) every variant is scored on
REAL_SIZES = ("trimodal224", "resnetbert224")  # run_standard.py's recipes, sizes and sample counts
EQUAL_ACCURACY = 0.99  # top-1 agreement with PyTorch FP32 a peer variant needs to count as equally accurate


@dataclass(frozen=True)
class Recipe:
    """A reference model, its synthetic data set and a short training (as ``run_standard.py``'s 64² recipes)."""

    model: str  # name in mmedge.models.REFERENCE_MODELS
    data: str  # factory in mmedge.data
    train_samples: int
    epochs: int
    lr: float


# ResNetBertNet (ResNet-50 + BERT-base-width text encoder) trains on fewer samples: its training
# dominates the run on 2 cores.
PEER_MODELS = {
    "trimodal": Recipe("TriModalNet", "make_trimodal", train_samples=2000, epochs=3, lr=2e-3),
    "textimage": Recipe("TextImageNet", "make_textimage", train_samples=2000, epochs=3, lr=2e-3),
    "resnetbert": Recipe("ResNetBertNet", "make_textimage", train_samples=400, epochs=1, lr=5e-4),
}


def prepare(spec: Recipe, work: Path, threads: int, agreement_samples: int) -> dict[str, Any]:
    """Train, export the FP32 bundle with its monolithic model, quantize it with mmedge."""
    import torch

    from mmedge import data, models
    from mmedge.export import export_model
    from mmedge.quantize import quantize_bundle
    from mmedge.train import evaluate, train

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = models.REFERENCE_MODELS[spec.model]()
    make = getattr(data, spec.data)
    trainset, held = make(spec.train_samples, seed=0), make(agreement_samples, seed=1)
    _say(f"training {spec.model} on {spec.train_samples} synthetic samples, {spec.epochs} epochs")
    train(model, trainset, epochs=spec.epochs, lr=spec.lr, checkpoint=work / "model.pt")
    accuracy = evaluate(model, held)
    _say(f"exporting (held-out accuracy {accuracy:.1%}) and quantizing with mmedge")
    export_model(model, model.example_inputs(1), out=work / "fp32", monolithic=True)
    q = quantize_bundle(work / "fp32", work / "int8", calibration=trainset.samples(CALIBRATION), holdout=held.samples())
    run_standard.save_samples(work / "calibration.npz", trainset.samples(CALIBRATION))
    run_standard.save_samples(work / "agreement.npz", held.samples())
    return {
        "model": spec.model,
        "training": {"samples": spec.train_samples, "epochs": spec.epochs, "heldout_accuracy": accuracy},
        "mmedge_int8_precision": {c.name: c.precision for c in q.components},
        "mmedge_int8_backend": run_standard.backend_record(q),
    }


def run(name: str, work: Path, args: argparse.Namespace) -> tuple[dict[str, Any], BenchReport]:
    """Prepare model ``name`` (a 64² recipe here, or a real-size one of ``run_standard.py``) and bench it."""
    if name in REAL_SIZES:
        spec = _overridden(run_standard.MODELS[name], args)
        setup = run_standard.prepare(spec, work, args.threads, _say)
        setup["mmedge_int8_precision"] = setup["quantization"]["precision"]
        setup["mmedge_int8_backend"] = setup["quantization"].get("backend", {})
        return setup, _bench(spec.model, work, args, config=work / "model.toml")
    recipe = _overridden(PEER_MODELS[name], args)
    return prepare(recipe, work, args.threads, args.agreement_samples), _bench(recipe.model, work, args)


def _overridden(spec: Any, args: argparse.Namespace) -> Any:
    if args.train_samples:
        spec = dataclasses.replace(spec, train_samples=args.train_samples)
    if args.epochs:
        spec = dataclasses.replace(spec, epochs=args.epochs)
    return spec


def _bench(model: str, work: Path, args: argparse.Namespace, config: Path | None = None) -> BenchReport:
    _say(f"benchmark with peers {args.peers} ({args.iterations} interleaved rounds, {args.threads} threads)")
    return bench(
        work / "int8",
        compare=[work / "fp32"],  # the peers start from its whole-model FP32 ONNX
        monolithic=not args.contenders_only,
        torch_model=model,
        config=config,
        subject_providers=[parse_policy(t) for t in args.subject_providers],
        checkpoint=work / "model.pt",
        iterations=args.iterations,
        warmup=3,
        warm_runs=args.warm_runs,
        processes=args.processes,
        threads=args.threads,
        profile=False,
        peers=args.peers,
        peer_python=args.peer_python,
        peer_calibration=work / "calibration.npz",
        agreement_inputs=work / "agreement.npz",
        cache_dir=work / "openvino-cache" if args.cache_dir else None,
    )


def table(report: dict[str, Any]) -> list[str]:
    """Latency beside agreement with PyTorch FP32, one row per variant (from the report's JSON form).

    The speed-up over PyTorch is given on medians and on minimum times: on a busy machine PyTorch's
    OpenMP threads suffer most, so its median is inflated far more than its minimum.
    """
    ref = next((v["batches"][0]["latency"] for v in report["variants"] if v["kind"] == "torch" and v["batches"]), None)
    warm = report["settings"].get("warm_runs", 0) > 0
    rows = [
        "| variant | precision | p50 ms | min ms | speed-up vs PyTorch (p50 / min) | top-1 agreement with PyTorch FP32 "
        f"| size MiB | peak RSS MiB |{' warm p50 ms |' if warm else ''}",
        f"|---|---|---:|---:|---:|---:|---:|---:|{'---:|' if warm else ''}",
    ]
    for v in report["variants"]:
        if not v["batches"]:
            continue
        lat = v["batches"][0]["latency"]
        agree = "reference" if v["kind"] == "torch" else ", ".join(_agreement(a) for a in v["agreement"]) or "—"
        speed = f"{ref['p50_ms'] / lat['p50_ms']:.2f}× / {ref['min_ms'] / lat['min_ms']:.2f}×" if ref else "—"
        rows.append(
            f"| {v['name']} | {v['precision']} | {lat['p50_ms']:.2f} | {lat['min_ms']:.2f} | {speed} | {agree} | "
            f"{v['size_bytes'] / 2**20:.1f} | {v['peak_rss_bytes'] / 2**20:.0f} |"
            + (f" {v['batches'][0]['warm_latency']['p50_ms']:.2f} |" if warm else "")
        )
    return rows


def equal_accuracy(report: dict[str, Any], subject: str = "split INT8") -> list[str]:
    """The target: ``subject`` against the fastest peer variant of equal accuracy, on p50 and on min
    (and on the warm runs' p50, when the run has them).

    Equal accuracy = top-1 agreement with PyTorch FP32 of at least ``EQUAL_ACCURACY`` (FP32 peers
    qualify by construction). The ratio is the peer's time over the subject's (> 1× = mmedge faster).
    """
    timed = {v["name"]: v for v in report["variants"] if v["batches"]}
    if subject not in timed:
        return []

    def agreement(v: dict[str, Any]) -> float:
        top1 = [a["value"] for a in v["agreement"] if a["metric"] == "top1"]
        return min(top1) if top1 else 0.0

    peers = [v for v in timed.values() if v["kind"] == "peer" and agreement(v) >= EQUAL_ACCURACY]
    own = agreement(timed[subject])
    lines = [
        f"Equal accuracy (top-1 agreement with PyTorch FP32 ≥ {EQUAL_ACCURACY:.0%}; {subject}: {own:.1%}):",
        "",
    ]
    if own < EQUAL_ACCURACY:
        lines.append(f"- {subject} itself is below it ({own:.1%}): what follows is not an equal-accuracy comparison")
    if not peers:
        return [*lines, "- no peer variant reached it.", ""]
    warm = [("warm_latency", "p50_ms")] if timed[subject]["batches"][0].get("warm_latency") else []
    for kind, stat in [("latency", "p50_ms"), ("latency", "min_ms"), *warm]:
        best = min(peers, key=lambda v: v["batches"][0][kind][stat])
        ratio = best["batches"][0][kind][stat] / timed[subject]["batches"][0][kind][stat]
        interval = _interval(report, subject, best["name"]) if (kind, stat) == ("latency", "p50_ms") else None
        label = stat.removesuffix("_ms") if kind == "latency" else "warm p50 (back to back)"
        lines.append(
            f"- {label}: fastest such peer `{best['name']}` ({agreement(best):.1%}) "
            f"{best['batches'][0][kind][stat]:.2f} ms; {subject} {_verdict(ratio, interval)}"
        )
    return [*lines, ""]


def _interval(report: dict[str, Any], subject: str, baseline: str) -> tuple[float, float] | None:
    """The p50 speed-up's interval over the run's rounds (the report has it for its subject only)."""
    if report["subject"] != subject:
        return None
    found = [c.get("speedup_interval") for c in report["comparisons"] if c["baseline"] == baseline]
    return tuple(found[0]) if found and found[0] else None  # type: ignore[return-value]


def _verdict(ratio: float, interval: tuple[float, float] | None) -> str:
    """Faster or slower by the ratio; with an interval, "level" when it spans 1× (the run cannot tell)."""
    goal = "meets ≥ 1.25×" if ratio >= 1.25 else "below 1.25×"
    if interval is None:
        return f"is {'faster' if ratio >= 1.0 else '**slower**'} by {ratio:.2f}× ({goal})"
    low, high = interval
    spread = f"{ratio:.2f}×, 95% interval {low:.2f}–{high:.2f}× over the rounds"
    if low > 1.0:
        return f"is faster: {spread} ({goal})"
    if high < 1.0:
        return f"is **slower**: {spread}"
    return f"is level with it: {spread}, which spans 1×"


def _agreement(a: dict[str, Any]) -> str:
    return f"{a['value']:.1%}" if a["metric"] == "top1" else f"cos {a['value']:.4f} (min {a['worst']:.4f})"


def markdown(results: dict[str, dict[str, Any]], notes: Sequence[str] = ()) -> str:
    """The Markdown report, from the JSON records (so runs made separately can be merged)."""
    machines = {n: _machine(r["report"]["machine"]) for n, r in results.items()}
    described = {machine_line(m) for m in machines.values()}  # one line, or one per section
    first = next(iter(results.values()))["report"]["settings"]
    rounds = " or ".join(str(n) for n in sorted({r["report"]["settings"]["iterations"] for r in results.values()}))
    lines = [
        "# mmedge against peer toolchains: latency beside accuracy",
        "",
        (
            f"- **Machine**: {next(iter(described))}"
            if len(described) == 1
            else f"- **Machines**: {len(described)} (runs merged from different days); each section names its own"
        ),
        "- **Load average (1, 5, 15 min) at each run's start**: "
        + "; ".join(f"{n}: {', '.join(f'{x:.1f}' for x in m.load_average)}" for n, m in machines.items()),
        (
            "- **The machine was busy for some runs** (other jobs used its 2 cores; marked below): absolute times "
            "are then inflated and noisy. "
            if any(m.busy for m in machines.values())
            else "- The machine was quiet at each run's start. "
        )
        + "The variants of one model ran interleaved (order shuffled each round), so the ratios within a table "
        "are the comparable numbers.",
        f"- **Run**: batch 1, {first['threads']} threads per variant, {rounds} interleaved rounds "
        "after warm-up (each section says how many), every variant in its own process; peers built from the same model and checkpoint, "
        f"INT8 calibrated on the same {CALIBRATION} training samples as mmedge's; agreement = share of "
        f"{_agreement_samples(results)} held-out samples whose top-1 class equals PyTorch FP32's.",
        "- **Peers**: `ort-int8` = the monolithic FP32 ONNX through `quant_pre_process` + `quantize_static` "
        "(QDQ, U8S8 per channel, MinMax); `openvino-fp32` = `ov.convert_model` of that ONNX, "
        "`openvino-int8` = `nncf.quantize` defaults; `executorch-fp32` = `torch.export` + XNNPACK, "
        "`executorch-int8` = pt2e `XNNPACKQuantizer` (symmetric, per channel) + XNNPACK; `-keepfe` = "
        "the same with the spectral front-end left FP32 (ORT `nodes_to_exclude`, NNCF `IgnoredScope`, "
        "pt2e annotations removed), for an equal-accuracy comparison.",
        *(f"- {n}" for n in notes),
        "",
    ]
    for name, result in results.items():
        setup, m = result["setup"], machines[name]
        lines += [
            f"## {setup['model']} (run `{name}`)",
            "",
            f"Trained {setup['training']['epochs']} epochs on {setup['training']['samples']} synthetic samples "
            f"(held-out accuracy {setup['training']['heldout_accuracy']:.1%}); mmedge INT8 precision "
            f"{setup['mmedge_int8_precision']}. {result['report']['settings']['iterations']} interleaved rounds; "
            f"load average at start: {', '.join(f'{x:.1f}' for x in m.load_average)}"
            + (f" ({busy_warning(m)})" if m.busy else "")
            + "."
            + ("" if len(described) == 1 else f" Machine: {machine_line(m)}.")
            + (
                " mmedge's bundles opened with an OpenVINO cache filled before timing (`--cache-dir`): their "
                "peak RSS is a cache hit's."
                if result["report"]["settings"].get("cache_dir")
                else ""
            ),
            "",
            *run_standard.backend_lines(setup.get("mmedge_int8_backend") or {}),
            "",
            *table(result["report"]),
            "",
            *(
                line
                for v in result["report"]["variants"]
                if v["kind"] == "split" and v["name"].startswith("split INT8")
                for line in equal_accuracy(result["report"], v["name"])
            ),
            "Notes:",
            "",
            *(f"- {v['name']}: {note}" for v in result["report"]["variants"] for note in v["notes"]),
            "",
        ]
    return "\n".join(lines) + "\n"


def _agreement_samples(results: dict[str, dict[str, Any]]) -> str:
    counts = {a["samples"] for r in results.values() for v in r["report"]["variants"] for a in v["agreement"]}
    return "/".join(str(c) for c in sorted(counts)) or "—"


def _machine(data: dict[str, Any]) -> MachineInfo:
    return MachineInfo(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def merge(paths: Sequence[Path], out: Path, notes: Sequence[str] = ()) -> None:
    """Several runs' ``peers.json`` (one model each, say) into one ``peers.json`` + ``peers.md``."""
    results: dict[str, Any] = {}
    for path in paths:
        results |= json.loads(path.read_text(encoding="utf-8"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "peers.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (out / "peers.md").write_text(markdown(results, notes), encoding="utf-8")


def _say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models", nargs="+", choices=[*sorted(PEER_MODELS), *REAL_SIZES], default=["trimodal", "textimage"]
    )
    parser.add_argument("--peers", nargs="+", default=["ort-int8", "openvino", "executorch"])
    parser.add_argument("--peer-python", help="interpreter with executorch (and mmedge) for the ExecuTorch peers")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument(
        "--warm-runs", type=int, default=3, help="back-to-back runs after each timed one, reported as warm latency"
    )
    parser.add_argument(
        "--processes", type=int, default=1, help="processes per variant, taken in turn by the rounds (default 1)"
    )
    parser.add_argument(
        "--contenders-only",
        action="store_true",
        help="time no monolithic FP32 ONNX: the INT8 contenders run beside each other, mmedge's split FP32 and "
        "PyTorch (the agreement reference) only; each run is recorded as MODEL-contenders",
    )
    parser.add_argument("--train-samples", type=int, help="override each model's training-set size")
    parser.add_argument("--epochs", type=int, help="override each model's training epochs")
    parser.add_argument(
        "--agreement-samples",
        type=int,
        default=AGREEMENT_SAMPLES,
        help="held-out samples scored (64² models; the real-size ones use run_standard's)",
    )
    parser.add_argument(
        "--subject-providers",
        action="append",
        default=[],
        metavar="POLICY",
        help="also time mmedge's INT8 bundle under this provider policy, e.g. 'image=openvino;*=cpu'",
    )
    parser.add_argument(
        "--cache-dir",
        action="store_true",
        help="open mmedge's bundles with an OpenVINO cache filled before timing (`mmedge bench --cache-dir`): "
        "start-up and peak memory of a machine that ran the bundle before",
    )
    parser.add_argument("--note", action="append", default=[], help="a line for the report's header (with --merge)")
    parser.add_argument(
        "--merge", nargs="+", type=Path, metavar="JSON", help="only merge these runs' peers.json into --out"
    )
    args = parser.parse_args(argv)
    if args.merge:
        merge(args.merge, args.out, args.note)
        return 0
    results = {}
    for name in args.models:
        with tempfile.TemporaryDirectory(prefix=f"mmedge-peers-{name}-") as tmp:
            setup, report = run(name, Path(tmp), args)
        key = name + ("-contenders" if args.contenders_only else "") + ("-cached" if args.cache_dir else "")
        results[key] = {"setup": setup, "report": report.to_dict()}
        args.out.mkdir(parents=True, exist_ok=True)  # written after each model: a later failure keeps these
        (args.out / "peers.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        (args.out / "peers.md").write_text(markdown(results), encoding="utf-8")
        _say(f"wrote {args.out / 'peers.json'} and peers.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
