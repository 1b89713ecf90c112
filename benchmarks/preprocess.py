"""Preprocessing at real sizes: photo decode + resize and audio resampling, mmedge vs the usual tools.

Photos: smooth synthetic pictures (gradients, waves, fine stripes; not noise) saved as JPEG
(quality 90) and PNG at 640×480, 1920×1080 and 4000×3000, each resized to 64² and 224², and
through torchvision's ImageNet eval transform (shorter side to 256, center 224² cropped, bicubic).

* ``mmedge`` — the runtime's whole image preprocessing from the file path
  (``mmedge.runtime.preprocess.prepare``: open, decode, antialiased resize, crop, scale,
  normalise, NCHW), as ``Pipeline.run`` does it;
* ``Pillow`` — ``Image.open`` + ``resize(..., BILINEAR/BICUBIC)`` (+ ``crop``) + ``np.asarray``
  (uint8 out);
* ``Pillow reduced`` — the same after ``draft`` asks the JPEG decoder for the reduced scale mmedge
  decodes at (``decode_reduced``: 1/2, 1/4 or 1/8 while every side keeps ``DECODE_GAP`` times
  the model's; what ``Image.thumbnail`` does with a gap of 2): the like-for-like Pillow;
* ``torchvision`` (when importable) — ``decode_image`` + ``v2.Resize(..., antialias=True)``
  (+ ``v2.CenterCrop``) + ``v2.ToDtype(float32, scale=True)``, on one torch thread;
* ``decode`` — ``Image.open`` + ``load`` alone: the part every tool pays.

Audio: a 10 s and a 60 s mono 44.1 kHz wave to 16 kHz: mmedge's ``prepare`` (resample, crop/pad)
and, when importable, ``scipy.signal.resample_poly`` and ``torchaudio.functional.resample``
(other filters; shown for scale, not as the goal). Whisper's log-mel features of a 10 s 44.1 kHz
clip (padded to 30 s): mmedge's ``prepare`` with the ``whisper_log_mel`` recipe (resample, pad,
features) against what a transformers user runs (``torchaudio.functional.resample`` +
``WhisperFeatureExtractor``, which computes with torch when importable), and the largest feature
difference between the two on the same 16 kHz wave.

Every repeat runs every case's candidates back to back in a rotating order (interleaved), so a
busy machine slows all alike; a fast case's sample is the mean of the calls made in ~30 ms.
Times are medians of the samples, ratios are between medians of the same run (the ratio of
minimum times is kept as a cross-check). The goal: mmedge within
1.5× of Pillow for every photo. Writes ``benchmarks/results/preprocess.json`` and ``.md`` with
the machine's CPU, SIMD flags and load average.

    .venv/bin/python benchmarks/preprocess.py               # ~4 min on 2 busy cores
    .venv/bin/python benchmarks/preprocess.py --repeats 5   # quicker
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mmedge.bundle import AudioPreprocess, ImagePreprocess, InputSpec
from mmedge.cpu import cpu_model_and_flags
from mmedge.runtime import Audio
from mmedge.runtime.preprocess import DECODE_GAP, prepare, resize_plan

__all__ = ["main", "photo"]

RESULTS = Path(__file__).parent / "results"
PHOTOS = ((640, 480), (1920, 1080), (4000, 3000))  # width, height
# what a photo becomes: stretched to 64² and 224², and torchvision's ImageNet eval transform
# (Resize(256) + CenterCrop(224), bicubic: timm's crop_pct 0.875 and most Hugging Face processors)
RECIPES = {
    "64²": ImagePreprocess(size=(64, 64)),
    "224²": ImagePreprocess(size=(224, 224)),
    "256 → crop 224², bicubic": ImagePreprocess(size=(224, 224), resize=256, interpolation="bicubic"),
}
_FILTERS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}
FORMATS = ("jpeg", "png")
AUDIO_SECONDS = (10, 60)
AUDIO_RATES = (44100, 16000)
GOAL = 1.5  # mmedge / Pillow, decode + resize
_SAMPLE_S = 0.03  # a timing sample of a fast case averages calls over about this long
_PACKAGES = ("mmedge", "numpy", "pillow", "onnxruntime", "torch", "torchvision", "torchaudio", "scipy")


@dataclass(frozen=True)
class Case:
    """One workload and the candidates that do it; ``reference`` is what the goal compares with."""

    kind: str  # "photo" or "audio"
    name: str
    candidates: dict[str, Callable[[], Any]]
    reference: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


def photo(height: int, width: int) -> np.ndarray:
    """A smooth synthetic photo: colour gradients, slow waves and a fine stripe pattern (uint8 RGB)."""
    y, x = np.ogrid[0:height, 0:width]
    u, v = x / width, y / height
    r = 120 + 90 * np.sin(7 * u + 3 * v) + 20 * np.sin(0.9 * x)
    g = 120 + 80 * np.cos(9 * v - 2 * u) + 20 * np.sin(1.3 * y)
    b = 250 * (u + v) / 2 + 0 * y
    return np.clip(np.stack(np.broadcast_arrays(r, g, b), axis=-1), 0, 255).astype(np.uint8)


def _no_tokenizer() -> None:
    return None


def photo_cases(folder: Path) -> list[Case]:
    torchvision = _torchvision()
    cases = []
    for width, height in PHOTOS:
        pixels = photo(height, width)
        for fmt in FORMATS:
            path = folder / f"photo_{width}x{height}.{'jpg' if fmt == 'jpeg' else 'png'}"
            Image.fromarray(pixels).save(path, quality=90) if fmt == "jpeg" else Image.fromarray(pixels).save(path)
            for label, pre in RECIPES.items():
                spec = InputSpec("image", "image", "float32", ("batch", 3, *pre.size), preprocess=pre)
                candidates: dict[str, Callable[[], Any]] = {
                    "decode": lambda p=path: _pil_decode(p),
                    "Pillow": lambda p=path, r=pre: _pil_resize(p, r),
                    "Pillow reduced": lambda p=path, r=pre: _pil_resize(p, r, reduced=True),
                    "mmedge": lambda p=path, sp=spec: prepare(sp, p, _no_tokenizer),
                }
                if torchvision is not None:
                    candidates["torchvision"] = torchvision(path, pre)
                details = {"bytes": path.stat().st_size, "max_level_difference": _levels(path, spec)}
                name = f"{fmt} {width}×{height} → {label}"
                cases.append(Case("photo", name, candidates, reference="Pillow", details=details))
    return cases


def _pil_decode(path: Path) -> None:
    with Image.open(path) as image:
        image.load()


def _pil_resize(path: Path, pre: ImagePreprocess, *, reduced: bool = False) -> np.ndarray:
    """Pillow's resize of the file to the recipe (uint8): to its size, or its shorter side resized and
    the center cropped, as torchvision's Resize + CenterCrop on a PIL image."""
    with Image.open(path) as image:
        if reduced:
            side = DECODE_GAP * max(*pre.size, *pre.resize_sides)
            image.draft(None, (side, side))
        (height, width), (top, left) = resize_plan(image.height, image.width, pre)
        resized = image.resize((width, height), _FILTERS[pre.interpolation])
        return np.asarray(resized.crop((left, top, left + pre.size[1], top + pre.size[0])))


def _levels(path: Path, spec: InputSpec) -> float:
    """Largest difference between mmedge's and Pillow's resized pixels, in 0–255 levels (Pillow rounds to uint8)."""
    pre = spec.preprocess
    ours = prepare(spec, path, _no_tokenizer)[0].transpose(1, 2, 0) * np.array(pre.std) + np.array(pre.mean)
    return round(float(np.abs(ours * 255 - _pil_resize(path, pre)).max()), 3)


def _torchvision() -> Callable[[Path, ImagePreprocess], Callable[[], Any]] | None:
    try:
        import torch
        from torchvision.io import decode_image
        from torchvision.transforms import v2
    except ImportError:
        return None
    torch.set_num_threads(1)  # Pillow and mmedge's resize use one core

    def make(path: Path, pre: ImagePreprocess) -> Callable[[], Any]:
        mode = getattr(v2.InterpolationMode, pre.interpolation.upper())
        steps = (
            [v2.Resize(pre.size, mode, antialias=True)]
            if pre.resize is None
            else [v2.Resize(pre.resize, mode, antialias=True), v2.CenterCrop(pre.size)]
        )
        transform = v2.Compose([*steps, v2.ToDtype(torch.float32, scale=True)])
        return lambda: transform(decode_image(str(path))).numpy()

    return make


def audio_cases() -> list[Case]:
    rate_in, rate_out = AUDIO_RATES
    cases = []
    for seconds in AUDIO_SECONDS:
        t = np.arange(rate_in * seconds) / rate_in
        wave = (0.4 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 3000 * t)).astype(np.float32)
        pre = AudioPreprocess(sample_rate=rate_out, max_seconds=seconds)
        spec = InputSpec("audio", "audio", "float32", ("batch", rate_out * seconds), preprocess=pre)
        candidates: dict[str, Callable[[], Any]] = {
            "mmedge": lambda s=spec, w=wave: prepare(s, Audio(w, rate_in), None)
        }
        candidates.update(_audio_others(wave, rate_in, rate_out))
        name = f"{seconds} s {rate_in / 1000:g} kHz → {rate_out / 1000:g} kHz"
        cases.append(Case("audio", name, candidates, details={"samples_in": len(wave)}))
    return cases


def whisper_cases() -> list[Case]:
    """Whisper's features of a 10-s 44.1 kHz clip, when transformers is importable."""
    try:
        import torch
        import torchaudio.functional
        from transformers import WhisperFeatureExtractor
    except ImportError:
        return []
    rate_in, rate_out = AUDIO_RATES
    t = np.arange(rate_in * 10) / rate_in
    wave = (0.4 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 3000 * t)).astype(np.float32)
    pre = AudioPreprocess(sample_rate=rate_out, max_seconds=30.0, features="whisper_log_mel")
    spec = InputSpec("input_features", "audio", "float32", ("batch", 80, 3000), preprocess=pre)
    extractor = WhisperFeatureExtractor()
    tensor = torch.from_numpy(wave)

    def transformers_way() -> np.ndarray:
        wave_16k = torchaudio.functional.resample(tensor, rate_in, rate_out).numpy()
        return extractor(wave_16k, sampling_rate=rate_out, return_tensors="np").input_features

    wave_16k = prepare(
        InputSpec("a", "audio", "float32", ("batch", 480000), preprocess=AudioPreprocess(rate_out, 30.0)),
        Audio(wave, rate_in),
        None,
    )
    ours = prepare(spec, Audio(wave_16k[0, : rate_out * 10], rate_out), None)
    theirs = extractor(wave_16k[0, : rate_out * 10], sampling_rate=rate_out, return_tensors="np").input_features
    candidates: dict[str, Callable[[], Any]] = {
        "mmedge": lambda: prepare(spec, Audio(wave, rate_in), None),
        "transformers": transformers_way,
    }
    details = {"max_feature_difference": float(np.abs(ours - theirs).max())}
    return [Case("features", "Whisper log-mel, 10 s 44.1 kHz → 80 × 3000", candidates, details=details)]


def _audio_others(wave: np.ndarray, rate_in: int, rate_out: int) -> dict[str, Callable[[], Any]]:
    out: dict[str, Callable[[], Any]] = {}
    try:
        from scipy.signal import resample_poly

        g = np.gcd(rate_in, rate_out)
        out["scipy resample_poly"] = lambda: resample_poly(wave, rate_out // g, rate_in // g)
    except ImportError:
        pass
    try:
        import torch
        import torchaudio.functional

        tensor = torch.from_numpy(wave)
        out["torchaudio resample"] = lambda: torchaudio.functional.resample(tensor, rate_in, rate_out).numpy()
    except ImportError:
        pass
    return out


def measure(cases: list[Case], repeats: int) -> dict[str, dict[str, list[float]]]:
    """Seconds per call, per candidate per case; each repeat runs a case's candidates in a rotated order.

    A fast case's sample is the mean of several calls (about _SAMPLE_S each), so that scheduler noise
    on a busy machine does not decide a 2 ms measurement.
    """
    times: dict[str, dict[str, list[float]]] = {c.name: {n: [] for n in c.candidates} for c in cases}
    calls = {}
    for case in cases:  # unmeasured calls: imports, caches, first-touch memory; and the calls per sample
        fastest = min(_seconds(run, 1) for run in case.candidates.values())
        calls[case.name] = max(1, math.ceil(_SAMPLE_S / fastest))
    for repeat in range(repeats):
        for case in cases:
            names = list(case.candidates)
            for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
                times[case.name][name].append(_seconds(case.candidates[name], calls[case.name]))
    return times


def _seconds(run: Callable[[], Any], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        run()
    return (time.perf_counter() - start) / calls


def summarise(cases: list[Case], times: dict[str, dict[str, list[float]]]) -> list[dict[str, Any]]:
    rows = []
    for case in cases:
        runs = times[case.name]
        row: dict[str, Any] = {
            "kind": case.kind,
            "case": case.name,
            "median_ms": {n: round(statistics.median(t) * 1e3, 3) for n, t in runs.items()},
            "min_ms": {n: round(min(t) * 1e3, 3) for n, t in runs.items()},
            **case.details,
        }
        if case.reference:
            ratio = statistics.median(runs["mmedge"]) / statistics.median(runs[case.reference])
            row["ratio"] = round(ratio, 3)
            row["ratio_of_min"] = round(min(runs["mmedge"]) / min(runs[case.reference]), 3)
            row["goal"] = f"≤ {GOAL}× {case.reference}"
            row["pass"] = ratio <= GOAL
        rows.append(row)
    return rows


def machine() -> dict[str, Any]:
    import psutil

    cpu, flags = cpu_model_and_flags()
    versions = {}
    for package in _PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return {
        "cpu": cpu,
        "arch": platform.machine(),
        "flags": list(flags),
        "physical_cores": psutil.cpu_count(logical=False),
        "logical_cores": psutil.cpu_count(logical=True),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
    }


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    load = report["load_average"]
    lines = [
        "# Preprocessing at real sizes: mmedge vs Pillow",
        "",
        f"CPU: {m['cpu']} ({m['arch']}, {m['usable_cores']} usable cores of {m['logical_cores']} logical); "
        f"SIMD: {', '.join(m['flags']) or 'unknown'}; {m['memory_gb']} GiB; {m['os']}; Python {m['python']}.",
        f"Versions: {', '.join(f'{k} {v}' for k, v in m['versions'].items())}.",
        f"Load average (1/5/15 min) before: {_load(load['before'])}; after: {_load(load['after'])} "
        + (
            "(a shared machine: other jobs ran alongside; the interleaved ratios are what to read)."
            if max(load["before"][0], load["after"][0]) > 1.5
            else "(a quiet machine: this benchmark's own process was most of it)."
        ),
        f"{report['repeats']} samples per candidate, interleaved (every candidate of a case back to back, order "
        "rotated; a sample of a fast case is the mean of the calls made in ~30 ms); medians in ms per call; "
        "ratio = mmedge / Pillow of the medians (ratio of minimum times in brackets).",
        "",
        "## Photos: decode + resize",
        "",
        "| case | decode only | Pillow | Pillow reduced | mmedge | torchvision | mmedge / Pillow "
        "| goal ≤ 1.5× | max level diff |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for row in report["results"]:
        if row["kind"] != "photo":
            continue
        t = row["median_ms"]
        lines.append(
            f"| {row['case']} | {t['decode']:.2f} | {t['Pillow']:.2f} | {_ms(t.get('Pillow reduced'))} | "
            f"{t['mmedge']:.2f} | "
            f"{_ms(t.get('torchvision'))} | {row['ratio']:.2f} ({row['ratio_of_min']:.2f}) | "
            f"{'PASS' if row['pass'] else 'MISS'} | {row['max_level_difference']:.2f} |"
        )
    lines += [
        "",
        "Decode only: `Image.open` + `load` of every pixel. mmedge: the runtime's whole image "
        "preprocessing from the path (decode, resize, scale, normalise, NCHW float32); a JPEG decodes at "
        f"1/2, 1/4 or 1/8 scale while every side keeps {DECODE_GAP}× the model's (`decode_reduced`), which "
        "Pillow reduced does too (PNG: no reduced decode). Max level diff: largest |mmedge − Pillow| in "
        "0–255 levels, Pillow decoding every pixel and rounding to uint8 after each pass (mmedge does "
        "not round); `tests/runtime/test_preprocess_sizes.py` holds the reduced decode within 2 levels "
        "(0.2 on average) of mmedge's own full decode.",
        "",
        "## Audio: resample 44.1 kHz → 16 kHz",
        "",
        "| case | mmedge | scipy resample_poly | torchaudio resample |",
        "|---|---:|---:|---:|",
    ]
    for row in report["results"]:
        if row["kind"] == "audio":
            t = row["median_ms"]
            lines.append(
                f"| {row['case']} | {t['mmedge']:.2f} | {_ms(t.get('scipy resample_poly'))} | "
                f"{_ms(t.get('torchaudio resample'))} |"
            )
    lines += [
        "",
        "mmedge: `prepare` on `Audio(wave, 44100)` (Kaiser-windowed sinc, 16 zero crossings, polyphase "
        "matrix products in float32). scipy and torchaudio use other filters: for scale only.",
        "",
    ]
    features = [row for row in report["results"] if row["kind"] == "features"]
    if features:
        lines += [
            "## Audio: Whisper log-mel features",
            "",
            "| case | mmedge | torchaudio resample + WhisperFeatureExtractor | max feature diff |",
            "|---|---:|---:|---:|",
        ]
        for row in features:
            t = row["median_ms"]
            lines.append(
                f"| {row['case']} | {t['mmedge']:.2f} | {t['transformers']:.2f} | {row['max_feature_difference']:.1e} |"
            )
        lines += [
            "",
            "mmedge: `prepare` on `Audio(wave, 44100)` with the `whisper_log_mel` recipe (resample, pad to 30 s, "
            "strided frames, one float32 real FFT, Slaney mel filters, log10). transformers: "
            "`torchaudio.functional.resample`, then the extractor (torch's STFT where torch is importable). "
            "Max feature diff: the two feature sets of the same 16 kHz wave (features span about -1 to 2).",
            "",
        ]
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _load(values: list[float]) -> str:
    return " / ".join(f"{v:.2f}" for v in values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=21, help="timed samples of every candidate of every case")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for preprocess.json and .md")
    args = parser.parse_args(argv)
    load_before = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory() as folder:
        cases = photo_cases(Path(folder)) + audio_cases() + whisper_cases()
        times = measure(cases, args.repeats)
    report = {
        "machine": machine(),
        "load_average": {"before": load_before, "after": [round(x, 2) for x in os.getloadavg()]},
        "repeats": args.repeats,
        "goal": f"mmedge decode + resize ≤ {GOAL}× Pillow's for every photo",
        "results": summarise(cases, times),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "preprocess.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    (args.out / "preprocess.md").write_text(markdown(report), encoding="utf-8")
    print(markdown(report))
    return 0 if all(r.get("pass", True) for r in report["results"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
