"""``mmedge demo``: the whole path on a built-in model and synthetic data, with no download.

Generates the tri-modal synthetic set, trains ``TriModalNet``, exports a split FP32 bundle
(verified against PyTorch), quantizes it to INT8 (with the accuracy report), optionally packages it
for phones, runs real examples through the torch-free ``Pipeline``, and benchmarks PyTorch eager vs
ONNX FP32 vs INT8. Each step uses the public API of its stage, so the demo doubles as a tour of it.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmedge.console import console, note, print_json, progress, table

__all__ = ["DemoPlan", "DemoSummary", "configure", "run", "run_demo"]

ENCODERS = {"text": "text_encoder", "image": "image_encoder", "audio": "audio_encoder"}


@dataclass(frozen=True)
class DemoPlan:
    """How big each step is; ``quick()`` is the CI-sized variant."""

    train_samples: int = 2000  # synthetic training set
    holdout_samples: int = 400  # held out: accuracy, INT8 agreement, the examples shown
    epochs: int = 3  # enough for a near-perfect held-out accuracy in a few minutes (benchmarks/NOTES.md)
    calibration_samples: int = 128  # INT8 calibration drawn from the training set
    bench_iterations: int = 60  # timed rounds per variant
    examples: int = 6  # predictions printed next to the truth
    threads: int = 2  # intra-op threads for the runtime and torch alike, as in the benchmarks
    mobile: bool = True  # also package the INT8 bundle for Android

    @classmethod
    def quick(cls) -> DemoPlan:
        return cls(
            train_samples=800, holdout_samples=160, epochs=3, calibration_samples=48, bench_iterations=15, examples=4
        )


@dataclass(frozen=True)
class DemoSummary:
    """What the demo measured and where it wrote it (``--json`` prints this)."""

    out: str
    train_accuracy: float
    fp32_accuracy: float  # PyTorch on the held-out set
    int8_accuracy: float | None  # the INT8 bundle on the held-out set (from the quantization report)
    int8_agreement: float  # top-1 agreement INT8 vs FP32 bundle
    export_max_abs_error: float  # worst logits error of the FP32 bundle vs PyTorch
    size_fp32: int  # bytes on disk: what inference on the FP32 bundle reads (not model.onnx)
    size_int8: int  # every file of the INT8 bundle
    speedups: dict[str, float]  # INT8 bundle vs each baseline at batch 1 (p50 ratio)
    examples: list[dict[str, Any]]
    files: dict[str, str]
    seconds: float


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="mmedge-demo", help="where to write everything (default: ./mmedge-demo)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smaller run (about 80 s on 2 cores, 94%% held-out accuracy): what CI runs",
    )
    parser.add_argument("--no-mobile", action="store_true", help="skip packaging the INT8 bundle for phones")
    parser.add_argument("--threads", type=int, default=2, help="threads for training, runtime and benchmark")


def run(args: argparse.Namespace) -> int:
    plan = DemoPlan.quick() if args.quick else DemoPlan()
    plan = dataclasses.replace(plan, mobile=not args.no_mobile, threads=args.threads)
    summary = run_demo(args.out, plan, show=not args.json)
    if args.json:
        print_json(dataclasses.asdict(summary))
    return 0


def _step(show: bool, n: int, title: str) -> None:
    if show:
        console.rule(f"[bold]{n}. {title}")


def run_demo(out: str | Path, plan: DemoPlan = DemoPlan(), *, show: bool = True) -> DemoSummary:
    """Run every stage on ``TriModalNet`` and synthetic data; write all artefacts under ``out``."""
    import torch

    from mmedge import data
    from mmedge.models import TriModalConfig, TriModalNet
    from mmedge.train import evaluate

    start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    torch.set_num_threads(plan.threads)

    _step(show, 1, "Synthetic data and training")
    trainset = data.make_trimodal(plan.train_samples, seed=0)
    holdout = data.make_trimodal(plan.holdout_samples, seed=1)
    model = TriModalNet(TriModalConfig())
    history = _train(model, trainset, plan, out / "checkpoint.pt", show=show)
    fp32_accuracy = evaluate(model, holdout)
    if show:
        console.print(f"held-out accuracy (PyTorch FP32): [bold]{fp32_accuracy:.1%}[/bold] (chance: 12.5%)")

    _step(show, 2, "Export: one ONNX per encoder + fusion head, verified against PyTorch")
    exported = _export(model, out / "bundle-fp32", show)

    _step(show, 3, "Quantize to INT8 (calibrated on training samples, checked on held-out ones)")
    report = _quantize(exported.path, out / "bundle-int8", trainset, holdout, plan, show=show)

    mobile_dir = out / "bundle-mobile"
    if plan.mobile:
        _step(show, 4, "Package for phones (.ort, fixed shapes, EP usability report)")
        _mobile(out / "bundle-int8", mobile_dir, show)

    _step(show, 5, "Run real examples through the torch-free Pipeline (INT8)")
    examples = _examples(out / "bundle-int8", holdout, plan, show)

    _step(show, 6, "Benchmark: PyTorch eager vs ONNX FP32 (monolithic and split) vs INT8")
    speedups = _bench(out, plan, show)

    files = {
        "checkpoint": str(out / "checkpoint.pt"),
        "fp32_bundle": str(out / "bundle-fp32"),
        "int8_bundle": str(out / "bundle-int8"),
        "quantization_report": str(out / "bundle-int8" / "quantization_report.md"),
        "bench_report": str(out / "bench" / "bench.md"),
        "bench_chart": str(out / "bench" / "bench.png"),
    }
    if plan.mobile:
        files["mobile_bundle"] = str(mobile_dir)
    logits = [r for r in exported.verification if r.component == "chain"]
    summary = DemoSummary(
        out=str(out),
        train_accuracy=history[-1].accuracy,
        fp32_accuracy=fp32_accuracy,
        int8_accuracy=report.outputs[0].quantized_accuracy,
        int8_agreement=report.agreement,
        export_max_abs_error=max(r.max_abs_error for r in logits or exported.verification),
        size_fp32=report.bundle_size_before,
        size_int8=report.bundle_size_after,
        speedups=speedups,
        examples=examples,
        files=files,
        seconds=time.perf_counter() - start,
    )
    if show:
        _epilogue(summary)
    return summary


def _train(model: Any, trainset: Any, plan: DemoPlan, checkpoint: Path, *, show: bool) -> tuple:
    from mmedge.train import train

    with progress(enabled=show) as bar:
        task = bar.add_task("training TriModalNet", total=plan.epochs, status="")

        def on_epoch(stats: Any) -> None:
            bar.update(task, advance=1, status=f"loss {stats.loss:.3f}  train acc {stats.accuracy:.1%}")
            if show:
                console.print(
                    f"epoch {stats.epoch}/{plan.epochs}: loss {stats.loss:.3f}, "
                    f"train accuracy {stats.accuracy:.1%} ({stats.seconds:.0f} s)"
                )

        result = train(model, trainset, epochs=plan.epochs, lr=2e-3, checkpoint=checkpoint, on_epoch=on_epoch)
    return result.history


def _export(model: Any, out: Path, show: bool) -> Any:
    from mmedge.export import export_model
    from mmedge.export.cli import show_result

    with progress(enabled=show) as bar:
        task = bar.add_task("exporting", total=None, status="")
        result = export_model(
            model,
            model.example_inputs(1),
            ENCODERS,
            out=out,
            monolithic=True,
            progress=lambda step, status: bar.update(task, description=step, status=status),
        )
    if show:
        show_result(result, list(result.warnings))
    return result


def _quantize(src: Path, out: Path, trainset: Any, holdout: Any, plan: DemoPlan, *, show: bool) -> Any:
    from mmedge.quantize import AccuracyWarning, quantize_bundle
    from mmedge.quantize.cli import show_report

    with progress(enabled=show) as bar, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", AccuracyWarning)
        task = bar.add_task("quantizing", total=None, status="")
        report = quantize_bundle(
            src,
            out,
            calibration=trainset.samples(plan.calibration_samples),
            holdout=holdout.samples(),
            labels=[int(x) for x in holdout.labels],
            progress=lambda status: bar.update(task, status=status),
        )
    if show:
        show_report(report)
        for w in caught:
            note("note", str(w.message))
    return report


def _mobile(src: Path, out: Path, show: bool) -> None:
    from mmedge.mobile import package_mobile
    from mmedge.mobile.cli import show_report

    report = package_mobile(src, out, target="android")
    if show:
        show_report(report)


def _examples(bundle: Path, holdout: Any, plan: DemoPlan, show: bool) -> list[dict[str, Any]]:
    """Feed raw forms (uint8 pixels, a waveform, a string) as a user would, not model tensors."""
    import numpy as np

    from mmedge.runtime import Pipeline

    rows = []
    with Pipeline(bundle, providers="cpu", threads=plan.threads) as pipe:
        for i in range(plan.examples):
            out = pipe.run(
                {"image": holdout.raw_images[i], "audio": holdout.inputs["audio"][i], "text": holdout.texts[i]}
            )
            logits = next(iter(out.values()))[0]
            probs = np.exp(logits - logits.max())
            probs /= probs.sum()
            best = int(probs.argmax())
            rows.append(
                {
                    "text": holdout.texts[i].replace("<pad>", "").strip(),
                    "truth": holdout.label_names[int(holdout.labels[i])],
                    "predicted": holdout.label_names[best],
                    "probability": float(probs[best]),
                }
            )
    if show:
        console.print(
            table(
                "Predictions (INT8 bundle, raw inputs)",
                ["text", "truth", "predicted", "p", ""],
                [(r["text"], r["truth"], r["predicted"], r["probability"], _mark(r)) for r in rows],
            )
        )
    return rows


def _mark(row: dict[str, Any]) -> str:
    return "✓" if row["truth"] == row["predicted"] else "✗"


def _bench(out: Path, plan: DemoPlan, show: bool) -> dict[str, float]:
    from mmedge.bench import bench
    from mmedge.bench.cli import show as show_bench
    from mmedge.bench.cli import write_outputs

    with progress(enabled=show) as bar:
        task = bar.add_task("benchmarking", total=None, status="")
        report = bench(
            out / "bundle-int8",
            compare=[out / "bundle-fp32"],
            torch_model="TriModalNet",
            checkpoint=out / "checkpoint.pt",
            iterations=plan.bench_iterations,
            threads=plan.threads,
            progress=lambda p: bar.update(task, description=f"benchmarking: {p.phase}", status=p.variant),
        )
    write_outputs(report, out / "bench", None, None)
    if show:
        show_bench(report)
    return {c.baseline: c.speedup for c in report.comparisons if c.batch == 1 and c.speedup is not None}


def _epilogue(s: DemoSummary) -> None:
    console.rule("[bold]Done")
    console.print(
        f"FP32 accuracy {s.fp32_accuracy:.1%}, INT8 accuracy "
        f"{'-' if s.int8_accuracy is None else f'{s.int8_accuracy:.1%}'} "
        f"(top-1 agreement {s.int8_agreement:.1%}); on disk {s.size_fp32 / 1e6:.1f} MB → {s.size_int8 / 1e6:.1f} MB; "
        + ", ".join(f"{v:.1f}× faster than {k}" for k, v in s.speedups.items())
    )
    console.print(table("Written", ["what", "where"], list(s.files.items())))
    int8 = s.files["int8_bundle"]
    console.print(
        "Next:\n"
        f"  mmedge inspect {int8}\n"
        f"  mmedge run {int8} -i image=photo.png -i audio=clip.wav -i text='a bright dog'\n"
        f"  mmedge bench {int8} --compare {s.files['fp32_bundle']} --torch TriModalNet "
        f"--checkpoint {s.files['checkpoint']}\n"
        "  mmedge export --model my_pkg.my_model:MyNet --checkpoint my.pt --config export.toml --out my-bundle\n"
        f"(finished in {s.seconds:.0f} s)"
    )
