"""A user-style model through the command line, as a user runs it: export → quantize → bench.

The model (``_user_style_model.ClipLike``: DistilBERT-from-config text on 128 tokens with a mask,
MobileNetV3-small, torchaudio MelSpectrogram, a dict-returning ``forward`` of keyword tensors) is
exported from a seeded checkpoint with ``mmedge export --config --checkpoint``, quantized with
``mmedge quantize`` on generated samples (speed check on: what runs where is decided on this CPU),
and benchmarked with ``mmedge bench`` against the FP32 bundle and PyTorch eager, every variant in
its own process, interleaved. ``--peers`` adds bench's peer toolchains built from the same
checkpoint (calibrated on the same samples, agreement on the held-out ones).

    .venv/bin/python benchmarks/user_style.py [--iterations 60] [--work DIR]
        [--peers all --peer-python /tmp/et-venv/bin/python]

Writes ``benchmarks/results/user_style.{json,md}``: bench's report with the quantize report's
per-component decisions (precision, backend and their timings) and the machine's load before.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
MMEDGE = [sys.executable, "-m", "mmedge"]


def samples(module: ModuleType, folder: Path, n: int, seed: int) -> None:
    """``n`` .npz samples of the model's synthetic task, one per file."""
    folder.mkdir(parents=True)
    inputs, _ = module.synthetic(np.random.default_rng(seed), n)
    for i in range(n):
        np.savez(folder / f"{i}.npz", **{k: v[i : i + 1] for k, v in inputs.items()})


def stacked(folder: Path, out: Path) -> None:
    """The samples of ``folder`` as one .npz, one sample per row of the first axis (what --peers reads)."""
    files = sorted(folder.glob("*.npz"), key=lambda f: int(f.stem))
    loaded = [np.load(f) for f in files]
    np.savez(out, **{k: np.concatenate([x[k] for x in loaded]) for k in loaded[0].files})


def checkpoint(module: ModuleType, path: Path, steps: int) -> float:
    """Weights from seed 0 trained ``steps`` steps on the synthetic task where the model has one
    (every variant and peer runs them); the accuracy on fresh samples."""
    import torch

    torch.manual_seed(0)
    model = getattr(module, module.MODEL_CLASS)()
    accuracy = module.train(model, steps) if steps and module.train is not None else float("nan")
    torch.save(model.state_dict(), path)
    return accuracy


def cli(*args: str, work: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    subprocess.run([*MMEDGE, *args], cwd=work, env=env, check=True)


def quiet_load(limit: float = 1.0, wait_s: float = 120.0) -> tuple[float, float, float]:
    """The load average once the 1-minute one is under ``limit`` (quantize's processes just ended), or after ``wait_s``."""
    deadline = time.monotonic() + wait_s
    while os.getloadavg()[0] >= limit and time.monotonic() < deadline:
        time.sleep(5)
    return os.getloadavg()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iterations", type=int, default=60)
    p.add_argument("--samples", type=int, default=32, help="calibration and held-out samples each")
    p.add_argument("--work", type=Path, help="keep the bundles here (default: a temporary folder)")
    p.add_argument("--peers", help="peer toolchains for mmedge bench --peers (ort-int8, openvino, executorch, all)")
    p.add_argument("--peer-python", help="interpreter with executorch for the ExecuTorch peers")
    p.add_argument("--train-steps", type=int, default=100, help="training steps on the synthetic task (0: random)")
    p.add_argument(
        "--model",
        default="_user_style_model",
        help="module of the model (default _user_style_model; _user_style_vit: ViT + Wav2Vec2 + BERT, untrained); "
        "results go to results/user_style.md, or user_style_<suffix>.md for _user_style_<suffix>",
    )
    args = p.parse_args()
    sys.path.insert(0, str(HERE))
    module = importlib.import_module(args.model)
    stem = "user_style" if args.model == "_user_style_model" else args.model.lstrip("_")

    work = args.work or Path(tempfile.mkdtemp(prefix="user_style-"))
    work.mkdir(parents=True, exist_ok=True)
    (work / "export.toml").write_text(module.EXPORT_TOML, encoding="utf-8")
    samples(module, work / "calibration", args.samples, seed=0)
    samples(module, work / "holdout", args.samples, seed=1)
    accuracy = checkpoint(module, work / "ckpt.pt", args.train_steps)
    model = ["--model", f"{args.model}:{module.MODEL_CLASS}", "--config", "export.toml", "--checkpoint", "ckpt.pt"]
    cli("export", *model, "--out", "fp32", *(["--monolithic"] if args.peers else []), work=work)
    cli("quantize", "fp32", "--out", "int8", "--calibration", "calibration", "--holdout", "holdout", work=work)
    load = quiet_load()
    bench = ["bench", "int8", "--compare", "fp32", "--torch", *model[1:2], *model[2:]]
    bench += [] if args.peers else ["--no-monolithic"]  # the peers start from the monolithic FP32 file
    if args.peers:
        stacked(work / "calibration", work / "calibration.npz")
        stacked(work / "holdout", work / "holdout.npz")
        bench += ["--peers", args.peers, "--peer-calibration", "calibration.npz", "--agreement-inputs", "holdout.npz"]
        bench += ["--peer-python", args.peer_python] if args.peer_python else []
    cli(*bench, "--inputs", "calibration/0.npz", "--iterations", str(args.iterations), "--out", "bench", work=work)
    report = json.loads((work / "bench" / "bench.json").read_text(encoding="utf-8"))
    manifest = json.loads((work / "int8" / "manifest.json").read_text(encoding="utf-8"))
    quantized = json.loads((work / "int8" / "quantization_report.json").read_text(encoding="utf-8"))
    decisions = {
        c["name"]: {
            "precision": c.get("precision"),
            "speed_check": (c.get("quantization") or {}).get("speed_check"),
            "backend": (c.get("quantization") or {}).get("backend"),
        }
        for c in manifest["components"]
    }
    RESULTS.mkdir(exist_ok=True)
    agreement = quantized["agreement"]
    result = {
        "load_average_before_bench": load,
        "model": args.model,
        "train_steps": args.train_steps,
        "fp32_accuracy": accuracy,
        "agreement": agreement,
        "decisions": decisions,
        "bench": report,
    }
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=1, default=str) + "\n", encoding="utf-8")
    lines = [
        "# A user-style model through the command line",
        "",
        f"`benchmarks/user_style.py --model {args.model}`: "
        + (
            f"the model trained {args.train_steps} steps on the synthetic task (accuracy {accuracy:.1%} on fresh "
            "samples)"
            if not math.isnan(accuracy)
            else "random weights"
        )
        + f"; {args.samples} calibration + {args.samples} held-out samples; INT8 agreement with FP32 on the "
        f"held-out ones (top-1 for logits, else mean cosine) {agreement:.1%}. Load average before the bench: "
        + ", ".join(f"{x:.2f}" for x in load)
        + ("" if load[0] < 1.0 else " (busy: latencies are indicative)"),
        *(
            [
                "",
                f"Peers ({args.peers}): onnxruntime's and OpenVINO's start from mmedge's monolithic FP32 export "
                "(a torchaudio spectrogram there is already convolutions: a plain `torch.onnx.export` would give "
                "them the STFT op); ExecuTorch's start from the PyTorch model. Each calibrates on the same samples.",
            ]
            if args.peers
            else []
        ),
        "",
        "## What quantize decided on this CPU",
        "",
        "| component | precision | runs on | INT8 vs FP32 | OpenVINO vs onnxruntime |",
        "|---|---|---|---:|---:|",
    ]
    for name, d in decisions.items():
        speed, backend = d["speed_check"] or {}, d["backend"] or {}
        ratio = f"{speed['speedup']:.2f}×" if speed.get("speedup") else "-"
        timing = (backend.get("timing") or {}).get("speedup")
        lines.append(
            f"| {name} | {d['precision']} | {backend.get('backend', 'onnxruntime')} | {ratio} | "
            + (f"{timing:.2f}×" if isinstance(timing, float) and timing > 0 else "-")
            + " |"
        )
    lines += [
        "",
        (work / "bench" / "bench.md").read_text(encoding="utf-8").replace("# mmedge bench", "## mmedge bench", 1),
    ]
    (RESULTS / f"{stem}.md").write_text("\n".join(lines), encoding="utf-8")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {RESULTS / stem}.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
