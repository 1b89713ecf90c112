"""The model zoo: ≥ 24 multimodal models, as users write them, through every mmedge stage.

Each row (``_zoo_models.ROWS``: torchvision / raw ``nn.LSTM``/``nn.GRU`` / ``nn.EmbeddingBag`` /
Hugging Face / torchaudio encoders, six fusions, six ``forward`` forms) runs in its own
subprocess under a time cap, so a crash or hang in one row never stops the zoo: export (parity
at two shapes), quantize (INT8, agreement with FP32 on generated held-out samples), Pipeline
(p50 ms), package_mobile (share of nodes on NNAPI / XNNPACK). Writes ``<out>/zoo.json`` and
``<out>/zoo.md`` after every row.

    .venv/bin/python benchmarks/zoo.py --out benchmarks/results              # all rows (20–40 min on 2 cores)
    .venv/bin/python benchmarks/zoo.py --out benchmarks/results --only a,b   # re-run rows, merged into zoo.json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=HERE / "results")
    p.add_argument("--only", default="", help="comma-separated row names; merged into an existing zoo.json")
    p.add_argument("--timeout", type=int, default=900, help="seconds per row")
    p.add_argument("--samples", type=int, default=32, help="calibration and held-out samples each")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--speed-check", action="store_true", help="keep FP32 where INT8 is not faster (noisy on a busy VM)")
    p.add_argument(
        "--merge", type=Path, nargs="*", default=[], help="zoo.json files of other runs: merge their rows, run none"
    )
    p.add_argument("--row", help=argparse.SUPPRESS)  # worker mode: run one row
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.row:
        return _worker(args)
    from _zoo_models import BY_NAME, ROWS

    if args.merge:
        return _merge(args.out, args.merge, [r.name for r in ROWS])
    names = [n for n in args.only.split(",") if n] or [r.name for r in ROWS]
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        print(f"ERROR unknown rows {unknown}; known: {', '.join(BY_NAME)}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    data = _load(args.out / "zoo.json") if args.only else {}
    if args.only and "machine" in data:  # the table's machine stays the first run's; re-runs are listed
        data.setdefault("reruns", []).append({"rows": names, "machine": _machine()})
    else:
        data["machine"] = _machine()
    data["settings"] = {
        "timeout_s": args.timeout,
        "samples": args.samples,
        "threads": args.threads,
        "speed_check": args.speed_check,
    }
    rows = {r["name"]: r for r in data.get("rows", [])}
    for name in names:
        print(f"[zoo] {name} ...", file=sys.stderr, flush=True)
        rows[name] = _spawn(name, args)
        rows[name]["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
        data["rows"] = [rows[r.name] for r in ROWS if r.name in rows]
        _write(args.out, data)
        print(f"[zoo] {name}: {_verdict(rows[name])}", file=sys.stderr, flush=True)
    return 0


def _merge(out: Path, others: Sequence[Path], order: list[str]) -> int:
    """Fold the rows of runs made in parallel (e.g. halves of the zoo) into ``out``'s zoo.json."""
    data = _load(out / "zoo.json")
    rows = {r["name"]: r for r in data.get("rows", [])}
    for other in others:
        extra = _load(other)
        rows.update({r["name"]: r for r in extra.get("rows", [])})
        merged = {"from": str(other), "rows": [r["name"] for r in extra.get("rows", [])]}
        data.setdefault("merged", []).append(
            {**merged, "machine": extra.get("machine"), "settings": extra.get("settings")}
        )
    data["rows"] = [rows[n] for n in order if n in rows]
    _write(out, data)
    return 0


def _spawn(name: str, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"zoo-{name}-") as tmp:
        result = Path(tmp) / "result.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--row", name, "--result", str(result), "--out", tmp,
               "--samples", str(args.samples), "--threads", str(args.threads)]  # fmt: skip
        if args.speed_check:
            cmd.append("--speed-check")
        start = time.perf_counter()
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
        try:
            log, _ = proc.communicate(timeout=args.timeout)
            status = "done" if proc.returncode == 0 else f"exit code {proc.returncode}"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            log, _ = proc.communicate()
            status = f"timeout after {args.timeout} s"
        finally:  # the zoo itself interrupted: the row's process group goes with it
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        rec = _load(result) or {"name": name, "stages": {}}
        rec["status"], rec["seconds"] = status, round(time.perf_counter() - start, 1)
        if status != "done":
            rec["log_tail"] = (log or "").splitlines()[-8:]
        return rec


def _worker(args: argparse.Namespace) -> int:
    import torch
    from _zoo_models import BY_NAME
    from _zoo_run import run_row

    torch.set_num_threads(args.threads)
    rec = run_row(
        BY_NAME[args.row],
        args.out,
        args.result,
        n_samples=args.samples,
        threads=args.threads,
        speed_check=args.speed_check,
    )
    return 0 if rec["stages"] else 1


def _load(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _machine() -> dict[str, Any]:
    from importlib import metadata

    from mmedge.cpu import cpu_model_and_flags

    cpu, flags = cpu_model_and_flags()
    versions = {
        p: metadata.version(p) for p in ("torch", "torchvision", "torchaudio", "transformers", "onnxruntime", "onnx")
    }
    return {"cpu": cpu, "flags": list(flags), "cores": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()],
            "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "versions": versions}  # fmt: skip


def _write(out: Path, data: dict[str, Any]) -> None:
    from _zoo_report import markdown

    (out / "zoo.json").write_text(json.dumps(data, indent=1, default=str) + "\n", encoding="utf-8")
    (out / "zoo.md").write_text(markdown(data), encoding="utf-8")


def _verdict(rec: dict[str, Any]) -> str:
    s = rec.get("stages", {})
    parts = [f"{k}={'ok' if v.get('ok') else v.get('error', {}).get('type')}" for k, v in s.items()]
    return f"{rec.get('status')} ({rec.get('seconds')} s) " + " ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
