"""``mmedge export``: build the user's model, load its checkpoint safely, export and verify a bundle.

mmedge export --model mypkg.models:MyNet --checkpoint ckpt.safetensors --config export.toml --out bundle/
mmedge export --model TriModalNet --out bundle/ --monolithic --audio-frontend conv
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mmedge.bundle import ModelInfo, required_inputs
from mmedge.console import console, note, print_json, progress, table
from mmedge.errors import ExportError
from mmedge.export._arguments import AUDIO_FRONTENDS
from mmedge.export._types import DEFAULT_OPSET, ExportResult
from mmedge.verify import Tolerance

__all__ = ["configure", "run"]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", required=True, help="package.module:ClassName, or a reference model (TextImageNet, TriModalNet, ...)"
    )
    parser.add_argument(
        "--checkpoint", help="weights: .pt/.pth/.bin/.ckpt (loaded with weights_only=True) or .safetensors"
    )
    parser.add_argument("--config", help="export.toml: [model] kwargs, [inputs.<name>] specs, [encoders], [export]")
    parser.add_argument("--out", required=True, help="bundle directory to write (replaced atomically)")
    parser.add_argument(
        "--force", action="store_true", help="replace --out even if it is not an mmedge bundle (its files are deleted)"
    )
    parser.add_argument("--opset", type=int, help=f"ONNX opset (default {DEFAULT_OPSET})")
    parser.add_argument(
        "--monolithic", action="store_true", default=None, help="also write the whole model as model.onnx"
    )
    parser.add_argument("--static", action="store_true", default=None, help="fix every dimension to the example shapes")
    parser.add_argument(
        "--audio-frontend",
        choices=AUDIO_FRONTENDS,
        help="auto (default): replace torchaudio MelSpectrograms (an ONNX STFT) by convolutions where that verifies; "
        "conv: replace them or fail; keep: export them as they are",
    )
    parser.add_argument("--atol", type=float, help=f"absolute tolerance of verification (default {Tolerance().atol:g})")
    parser.add_argument("--rtol", type=float, help=f"relative tolerance of verification (default {Tolerance().rtol:g})")
    parser.add_argument("--batch", type=int, help="batch size of generated example inputs (default 2)")
    parser.add_argument(
        "--encoder", action="append", default=[], metavar="MODALITY=PATH", help="an encoder, e.g. text=text_encoder"
    )
    parser.add_argument(
        "--tokenizer",
        help="a tokenizer.json, or the folder a fast tokenizer's save_pretrained wrote: stored in the bundle so it "
        "takes strings and text pairs (an attention_mask input is then filled from them, token_type_ids with a "
        "pair's segment ids, else 0)",
    )
    parser.add_argument(
        "--processor",
        action="append",
        metavar="PATH",
        help="(repeatable) a Hugging Face preprocessor_config.json, or the folder an image processor's or feature extractor's "
        "save_pretrained wrote: its resize, crop, filter, scaling and mean/std (or audio rate and normalization, or "
        "Whisper's log-mel features) become the bundle's recipe, so it takes photos (or sound files) as that "
        "processor prepared them",
    )
    parser.add_argument(
        "--non-strict", action="store_true", help="accept checkpoints with missing/unexpected keys (they are reported)"
    )
    parser.add_argument(
        "--teacher-forced",
        action="store_true",
        help="captioners (decoder.init_state/step): export forward() as a plain head instead of a decoder step",
    )


def _option(args: argparse.Namespace, export: dict[str, Any], name: str, default: Any) -> Any:
    value = getattr(args, name)
    return value if value is not None else export.get(name, default)


def _paths(args: argparse.Namespace, export: dict[str, Any], name: str) -> list[Path]:
    """A file option's paths: the flag as given (once, or repeated), else export.toml's [export] value (a
    path or a list of them) relative to that file."""
    given = getattr(args, name)
    if given:
        return [Path(p) for p in ([given] if isinstance(given, str) else given)]
    listed = export.get(name, [])
    return [Path(args.config).parent / p for p in ([listed] if isinstance(listed, str) else listed)]


def _processor_recipes(paths: list[Path], inputs: dict[str, Any], modalities: dict[str, str]) -> dict[str, Any]:
    """The recipes of every Hugging Face processor config in ``paths``."""
    from mmedge.export._hf_processor import load_processor, processor_preprocess

    shapes = {n: tuple(t.shape) for n, t in inputs.items() if hasattr(t, "shape")}
    recipes: dict[str, Any] = {}
    for path in paths:
        recipes.update(processor_preprocess(load_processor(path), shapes, modalities))
    return recipes


@contextmanager
def _progress(enabled: bool) -> Iterator[Callable[[str, str], None]]:
    """A progress callback showing one line per component with its latest status."""
    with progress(enabled) as p:
        tasks: dict[str, Any] = {}

        def update(step: str, status: str) -> None:
            done = status.startswith("verified") or (step == "split" and "=" in status)
            if step not in tasks:
                tasks[step] = p.add_task(step, total=1, status=status)
            p.update(tasks[step], status=status, completed=1 if done else 0)

        yield update


def run(args: argparse.Namespace) -> int:
    from mmedge.export._checkpoint import load_checkpoint
    from mmedge.export._config import build_model, encoders_option, example_inputs, load_config, resolve_class
    from mmedge.export._hf_tokenizer import load_tokenizer
    from mmedge.export.api import export_model

    config = load_config(args.config)
    encoders = encoders_option(args.encoder, config.encoders)
    cls = resolve_class(args.model)
    model = build_model(cls, config.model)
    ckpt = load_checkpoint(model, args.checkpoint, strict=not args.non_strict) if args.checkpoint else None
    export = dict(config.export)
    inputs = example_inputs(model, config, _option(args, export, "batch", 2))
    modalities = {n: i.modality for n, i in config.inputs.items() if i.modality}
    preprocess = {
        **(getattr(model, "preprocess", None) or {}),
        **_processor_recipes(_paths(args, export, "processor"), inputs, modalities),
        **{n: i.preprocess for n, i in config.inputs.items() if i.preprocess},
    }
    tokenizer_paths = _paths(args, export, "tokenizer")
    if len(tokenizer_paths) > 1:
        raise ExportError(f"tokenizer = {[str(p) for p in tokenizer_paths]}: give one tokenizer.json or folder")
    tokenizer = load_tokenizer(tokenizer_paths[0]) if tokenizer_paths else None
    info = ModelInfo(
        name=cls.__name__,
        class_path=f"{cls.__module__}:{cls.__qualname__}",
        checkpoint_sha256=ckpt.sha256 if ckpt else "",
    )
    with _progress(enabled=not args.json) as update:
        if _is_captioner(model) and not args.teacher_forced:
            result = _export_captioner(model, inputs, args, export, preprocess=preprocess, info=info, update=update)
        else:
            result = export_model(
                model,
                inputs,
                encoders,
                out=args.out,
                opset=_option(args, export, "opset", None),
                dynamic=not (args.static or not export.get("dynamic", True)),
                monolithic=bool(_option(args, export, "monolithic", False)),
                preprocess=preprocess,
                tolerance=Tolerance(
                    atol=_option(args, export, "atol", Tolerance().atol),
                    rtol=_option(args, export, "rtol", Tolerance().rtol),
                ),
                audio_frontend=_option(args, export, "audio_frontend", "auto"),
                modalities=modalities,
                tokenizer=tokenizer,
                progress=update,
                model_info=info,
                force=args.force,
            )
    warnings = [*(_ckpt_warnings(ckpt) if ckpt else []), *result.warnings]
    if args.json:
        print_json(_summary(result, ckpt, warnings))
    else:
        show_result(result, warnings)
        for line in next_steps(result):
            note("next", line, style="cyan")
    return 0


_EXAMPLE_VALUES = {"image": "photo.jpg", "audio": "clip.wav", "text": "a sentence"}


def next_steps(result: ExportResult) -> list[str]:
    """The commands that take the new bundle on, with a sample line in the bundle's own input names: raw
    files and text for inputs with preprocessing, numbers for the others; inputs filled by the runtime
    (an attention mask from the text, a default) are left out."""
    inputs = required_inputs(result.manifest.inputs)
    raw = {i.name: _EXAMPLE_VALUES[i.modality] for i in inputs if i.preprocess is not None}
    line = json.dumps({i.name: raw.get(i.name, "[...]") for i in inputs}).replace('"[...]"', "[...]")
    out = str(result.path).rstrip("/")
    given = {i.name: raw.get(i.name, f"{i.name}.npy") for i in inputs}
    return [
        f"mmedge quantize {out} --out {out}-int8 --calibration samples.jsonl   # per line: {line}",
        f"mmedge run {out} " + " ".join(f"-i {k}={v!r}" if " " in v else f"-i {k}={v}" for k, v in given.items()),
    ]


def _is_captioner(model: Any) -> bool:
    decoder = getattr(model, "decoder", None)
    return hasattr(model, "image_encoder") and hasattr(decoder, "init_state") and hasattr(decoder, "step")


def _export_captioner(
    model: Any, inputs: dict, args: argparse.Namespace, export: dict, *, preprocess: dict, info: ModelInfo, update: Any
) -> ExportResult:
    """A generative bundle (image_encoder + decoder_init + decoder_step) that `Pipeline.generate` runs."""
    from mmedge.export.decoder import export_captioner

    return export_captioner(
        model,
        {"image": inputs["image"]},
        out=args.out,
        preprocess=preprocess,
        opset=_option(args, export, "opset", None),
        tolerance=Tolerance(
            atol=_option(args, export, "atol", Tolerance().atol),
            rtol=_option(args, export, "rtol", Tolerance().rtol),
        ),
        progress=update,
        model_info=info,
        force=args.force,
    )


def _ckpt_warnings(report: Any) -> list[str]:
    lines = [*report.notes]
    if report.missing:
        lines.append(
            f"checkpoint lacks {len(report.missing)} model keys (left as initialised): {', '.join(report.missing[:10])}"
        )
    if report.unexpected:
        lines.append(
            f"checkpoint has {len(report.unexpected)} keys the model lacks (ignored): {', '.join(report.unexpected[:10])}"
        )
    return lines


def _summary(result: ExportResult, ckpt: Any, warnings: list[str]) -> dict[str, Any]:
    return {
        "bundle": str(result.path),
        "encoders": [dataclasses.asdict(e) for e in result.encoders],
        "auto_split": result.auto_split,
        "exporters": dict(result.exporters),
        "verification": [dataclasses.asdict(r) for r in result.verification],
        "checkpoint": {**dataclasses.asdict(ckpt), "path": str(ckpt.path)} if ckpt else None,
        "warnings": warnings,
    }


def show_result(result: ExportResult, warnings: list[str]) -> None:
    """The verification table and notes of an export, on stderr (also used by the demo)."""
    rows = [
        (
            r.component,
            r.output,
            result.exporters.get(r.component, ""),
            r.max_abs_error,
            r.max_rel_error,
            " / ".join(map(str, r.shapes)),
            "ok" if r.passed else "FAIL",
        )
        for r in result.verification
    ]
    console.print(
        table(
            "Verification vs PyTorch (example input / second input)",
            ["component", "output", "exporter", "max abs", "max rel", "shapes", ""],
            rows,
        )
    )
    for w in warnings:
        note("note", w)
    console.print(f"[green]wrote[/green] {result.path} ({', '.join(c.name for c in result.manifest.components)})")
