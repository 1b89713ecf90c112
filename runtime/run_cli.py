"""``mmedge run BUNDLE --input NAME=VALUE ...``: run a bundle once and show what it predicts.

A VALUE ending in ``.npy`` is loaded as an array (a model tensor, or one raw item without the
batch axis); any other VALUE is a file path for image and audio inputs and the text itself for
text inputs. Logits outputs print their top-k labels with softmax probabilities; other outputs
print their shape and first values. A bundle with a decoder (an image captioner) prints the
generated text of each item instead (``--strategy``, ``--beam-size``, ``--max-len``); with
``--json`` it writes ``{"captions": [{"text", "token_ids", "score"}, ...], "providers_used", "whole_graph"}``.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.markup import escape

from mmedge.bundle import RANKED_KINDS, InputSpec, Manifest, OutputSpec, own_items
from mmedge.console import console, print_json, table
from mmedge.decoding import STRATEGIES
from mmedge.errors import InputError
from mmedge.runtime.pipeline import CACHE_DIR_HELP, STRICT_HELP, Pipeline
from mmedge.runtime.policy import PROVIDERS_HELP, parse_policy

__all__ = ["configure", "run", "summarize"]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", help="bundle directory")
    parser.add_argument(
        "--input",
        "-i",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an input by name or modality: image=cat.png, text='a bright dog', audio=x.wav, audio=x.npy (repeat; "
        "a text given twice is a text pair; where the bundle scores every item of one input against every item "
        "of another, as CLIP does, each repeat is one more item: one photo against several label texts)",
    )
    parser.add_argument("--providers", default="auto", help=PROVIDERS_HELP)
    parser.add_argument("--fallback", action="store_true", help="run on the next provider if one is unavailable")
    parser.add_argument("--strict", action="store_true", help=STRICT_HELP)
    parser.add_argument("--threads", type=int, default=None, help="CPU thread budget (default: physical cores)")
    parser.add_argument("--top-k", type=int, default=5, help="labels to show per logits output (default 5)")
    parser.add_argument("--no-hash-check", action="store_true", help="skip sha256 checks (faster on big bundles)")
    parser.add_argument("--cache-dir", default=None, help=CACHE_DIR_HELP)
    parser.add_argument(
        "--strategy", choices=STRATEGIES, default=None, help="bundles with a decoder: greedy (default) or beam search"
    )
    parser.add_argument("--beam-size", type=int, default=None, help="hypotheses per item of beam search (default 4)")
    parser.add_argument("--max-len", type=int, default=None, help="most tokens to generate (default: the bundle's)")


def parse_inputs(pairs: list[str]) -> dict[str, list[Any]]:
    """``NAME=VALUE`` pairs as each name's values in the order given; ``.npy`` values are loaded as arrays."""
    values: dict[str, list[Any]] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise InputError(f"--input {pair!r} must look like NAME=VALUE, e.g. image=cat.png or text='a dog'")
        values.setdefault(name, []).append(_load_npy(Path(value)) if value.endswith(".npy") else value)
    return values


def assemble(values: Mapping[str, list[Any]], manifest: Manifest) -> dict[str, Any]:
    """A ``run()`` dict from each name's values. A value given once is the input. Given more than once, the
    values are the items of an input that counts its own items (one photo against several label texts,
    a CLIP-style bundle), else a text given twice is a text pair (one item of two texts, as the bundled
    tokenizer encodes ``(text, text_pair)``)."""
    inputs: dict[str, Any] = {}
    for name, given in values.items():
        spec = _spec(manifest, name)
        texts = all(isinstance(v, str) for v in given)
        if len(given) == 1:
            inputs[name] = given[0]
        elif spec is not None and own_items(spec):
            inputs[name] = list(given)
        elif len(given) > 2:
            raise InputError(
                f"--input {name!r} is given more than once ({len(given)} times); give it once, or twice for a text "
                f"pair ({name}='a question' -i {name}='a passage')"
            )
        elif texts and (spec is None or spec.modality == "text"):
            inputs[name] = tuple(given)  # a text pair: question and passage, two sentences
        else:
            raise InputError(
                f"--input {name!r} is given twice; only a text input takes two values (a text pair); give {name!r} once"
            )
    return inputs


def _spec(manifest: Manifest, name: str) -> InputSpec | None:
    """The input ``name`` names: by its name, or by its modality where one input has it."""
    by_modality = [i for i in manifest.inputs if i.modality == name]
    named = [i for i in manifest.inputs if i.name == name]
    found = named or (by_modality if len(by_modality) == 1 else [])
    return found[0] if found else None


def _column_labels(manifest: Manifest, output: OutputSpec, inputs: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The texts given for the input whose items an output's columns score (a zero-shot image's label texts)."""
    for name in manifest.column_inputs(output.name):
        value = next((v for key, v in inputs.items() if (spec := _spec(manifest, key)) and spec.name == name), None)
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
    return None


def _load_npy(path: Path) -> np.ndarray:
    if not path.is_file():
        raise InputError(f"array file {path} does not exist")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise InputError(f"{path} is not a readable .npy array ({e})") from e


_SHOWN = {"logits": "probability", "scores": "score"}  # what a ranked kind's top-k shows beside each label


def _softmax(value: np.ndarray) -> np.ndarray:
    shifted = np.exp(value - value.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def summarize(spec: OutputSpec, value: np.ndarray, top_k: int, columns: Sequence[str] | None = None) -> dict[str, Any]:
    """What to show of one output: top-k labels for a ranked output (logits with softmax probabilities;
    scores, such as CLIP's or SigLIP's similarities, with their own values: whether a softmax or a sigmoid
    reads them is the model's, not the bundle's), else shape and leading values. ``columns`` names the
    columns where they score the items of another input (the label texts of a zero-shot call)."""
    out: dict[str, Any] = {"kind": spec.kind, "dtype": str(value.dtype), "shape": list(value.shape)}
    if spec.kind in RANKED_KINDS and value.ndim == 2:
        shown = _softmax(value) if spec.kind == "logits" else value
        key = _SHOWN[spec.kind]
        labels = columns or spec.labels or tuple(str(i) for i in range(value.shape[1]))
        out["top_k"] = [
            [{"label": labels[i], key: float(row[i])} for i in np.argsort(-row, kind="stable")[:top_k]] for row in shown
        ]
    else:
        out["values"] = value.reshape(value.shape[0], -1)[:, :8].tolist() if value.ndim else value.tolist()
    return out


def run(args: argparse.Namespace) -> int:
    if args.top_k < 1:
        raise InputError(f"--top-k must be at least 1, found {args.top_k}")
    values = parse_inputs(args.input)
    with Pipeline(
        args.bundle,
        parse_policy(args.providers),
        threads=args.threads,
        fallback=args.fallback,
        strict=args.strict,
        check_hashes=not args.no_hash_check,
        cache_dir=args.cache_dir,
    ) as pipe:
        inputs = assemble(values, pipe.manifest)
        generative = pipe.manifest.generation is not None
        if generative:
            results: Any = pipe.generate(
                inputs,
                max_len=args.max_len,
                strategy=args.strategy or "greedy",
                beam_size=4 if args.beam_size is None else args.beam_size,
            ).items()
        else:
            _check_no_generation_options(args)
            outputs = pipe.run(inputs)
            results = {
                o.name: summarize(o, outputs[o.name], args.top_k, _column_labels(pipe.manifest, o, inputs))
                for o in pipe.manifest.outputs
            }
        placement = {
            name: {"registered": list(p.registered), "nodes": dict(p.nodes), "fallbacks": list(p.fallbacks)}
            for name, p in pipe.providers_used.items()
        }
        whole = list(pipe.whole_graph)
    if args.json:
        print_json(
            {"captions" if generative else "outputs": results, "providers_used": placement, "whole_graph": whole}
        )
        return 0
    if generative:
        for item, caption in enumerate(results):
            title = f"caption (item {item})" if len(results) > 1 else "caption"
            console.print(f"{title}: [bold]{escape(caption['text'])}[/bold]")
    else:
        for name, result in results.items():
            _show(name, result)
    for name, p in placement.items():
        nodes = ", ".join(f"{ep.removesuffix('ExecutionProvider')}: {n}" for ep, n in p["nodes"].items())
        notes = f"  [yellow]{escape('; '.join(p['fallbacks']))}[/yellow]" if p["fallbacks"] else ""
        console.print(f"{escape(name)}: {escape(nodes or ', '.join(p['registered']))}{notes}")
    if whole:
        console.print(f"one OpenVINO graph, one request per call: {escape(', '.join(whole))}")
    return 0


def _check_no_generation_options(args: argparse.Namespace) -> None:
    given = [f"--{n.replace('_', '-')}" for n in ("strategy", "beam_size", "max_len") if getattr(args, n) is not None]
    if given:
        raise InputError(f"{', '.join(given)} only apply to bundles with a decoder; {args.bundle} has none")


def _show(name: str, result: dict[str, Any]) -> None:
    if "top_k" in result:
        for item, rows in enumerate(result["top_k"]):
            title = f"{name} (item {item})" if len(result["top_k"]) > 1 else name
            key = _SHOWN[result["kind"]]
            console.print(table(title, ["label", key], [(r["label"], r[key]) for r in rows]))
    else:
        console.print(escape(f"{name}: {result['kind']} {result['dtype']} {result['shape']}; first {result['values']}"))
