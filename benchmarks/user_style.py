"""A user-style model through the command line, as a user runs it: export → quantize → bench.

The model (``_user_style_model.ClipLike``: DistilBERT-from-config text on 128 tokens with a mask,
MobileNetV3-small, torchaudio MelSpectrogram, a dict-returning ``forward`` of keyword tensors) is
exported with ``mmedge export --config``, quantized with ``mmedge quantize`` on generated samples
(speed check on: what runs where is decided on this CPU), and benchmarked with ``mmedge bench``
against the FP32 bundle and PyTorch eager, every variant in its own process, interleaved.

    .venv/bin/python benchmarks/user_style.py [--iterations 60] [--work DIR]

Writes ``benchmarks/results/user_style.{json,md}``: bench's report with the quantize report's
per-component decisions (precision, backend and their timings) and the machine's load before.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
MMEDGE = [sys.executable, "-m", "mmedge"]


def samples(folder: Path, n: int, seed: int) -> None:
    """``n`` .npz samples: padded token ids with a mask, a noisy tone, an image of noise."""
    from _user_style_model import SAMPLE_RATE, TOKENS, VOCAB

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    for i in range(n):
        length = int(rng.integers(20, TOKENS))
        ids = np.zeros((1, TOKENS), np.int64)
        ids[0, :length] = rng.integers(1, VOCAB, length)
        mask = (ids > 0).astype(np.int64)
        tone = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 2000) * t) + 0.05 * rng.standard_normal(SAMPLE_RATE)
        image = rng.standard_normal((1, 3, 224, 224)).astype(np.float32)
        np.savez(
            folder / f"{i}.npz",
            input_ids=ids,
            attention_mask=mask,
            pixel_values=image,
            waveform=tone[None].astype(np.float32),
        )


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
    args = p.parse_args()
    sys.path.insert(0, str(HERE))
    from _user_style_model import EXPORT_TOML

    work = args.work or Path(tempfile.mkdtemp(prefix="user_style-"))
    work.mkdir(parents=True, exist_ok=True)
    (work / "export.toml").write_text(EXPORT_TOML, encoding="utf-8")
    samples(work / "calibration", args.samples, seed=0)
    samples(work / "holdout", args.samples, seed=1)
    model = ["--model", "_user_style_model:ClipLike", "--config", "export.toml"]
    cli("export", *model, "--out", "fp32", work=work)
    cli("quantize", "fp32", "--out", "int8", "--calibration", "calibration", "--holdout", "holdout", work=work)
    load = quiet_load()
    bench = ["bench", "int8", "--compare", "fp32", "--torch", *model[1:2], *model[2:], "--no-monolithic"]
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
    result = {"load_average_before_bench": load, "agreement": agreement, "decisions": decisions, "bench": report}
    (RESULTS / "user_style.json").write_text(json.dumps(result, indent=1, default=str) + "\n", encoding="utf-8")
    lines = [
        "# A user-style model through the command line",
        "",
        f"`benchmarks/user_style.py`: {args.samples} calibration + {args.samples} held-out generated samples; INT8 "
        f"top-1 agreement with FP32 on the held-out ones {agreement:.1%}. Load average before the bench: "
        + ", ".join(f"{x:.2f}" for x in load)
        + ("" if load[0] < 1.0 else " (busy: latencies are indicative)"),
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
    (RESULTS / "user_style.md").write_text("\n".join(lines), encoding="utf-8")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {RESULTS / 'user_style.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
