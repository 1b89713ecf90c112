"""The ``mmedge`` command line: ``build_parser()`` + ``main(argv) -> int``.

Each sub-command lives in its own module exposing ``configure(parser)`` and ``run(args) -> int``;
only the chosen one is imported, so ``mmedge run`` never pays for (or needs) torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from mmedge import __version__
from mmedge.errors import MMEdgeError

__all__ = ["COMMANDS", "build_parser", "main"]

# name -> (module, one-line help, extra that provides its dependencies)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "demo": ("mmedge.demo", "train, export, quantize, run and benchmark a reference model end to end", "export"),
    "export": ("mmedge.export.cli", "export a trained PyTorch model to a split ONNX bundle", "export"),
    "doctor": ("mmedge.export.doctor_cli", "list patterns in a model that break export or mobile EPs", "export"),
    "quantize": ("mmedge.quantize_cli", "turn a bundle into an INT8 bundle with an accuracy report", ""),
    "run": ("mmedge.runtime.run_cli", "run a bundle on inputs (files, arrays or strings)", ""),
    "bench": ("mmedge.bench.cli", "profile latency per component and end to end", ""),
    "mobile": ("mmedge.mobile.cli", "prepare a bundle for phones (.ort, fixed shapes, EP report)", ""),
    "inspect": ("mmedge.inspect", "print a bundle's components, IO, precision, sizes and hashes", ""),
    "serve": ("mmedge.serve.cli", "serve a bundle over HTTP (REST)", "serve"),
}


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser; sub-command arguments are added by each command's module."""
    parser = argparse.ArgumentParser(
        prog="mmedge",
        description="Take a trained multimodal PyTorch model to fast on-device inference.",
        epilog="Run `mmedge COMMAND --help` for a command's options. Start with `mmedge demo`.",
    )
    parser.add_argument("--version", action="version", version=f"mmedge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text, _) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def _command_parser(name: str) -> tuple[argparse.ArgumentParser, object]:
    module_name, help_text, extra = COMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        if (e.name or "").startswith("mmedge"):
            raise MMEdgeError(f"`mmedge {name}` is missing from this install ({e.name}); reinstall mmedge") from e
        hint = f"pip install 'mmedge[{extra}]'" if extra else "reinstall mmedge"
        raise MMEdgeError(f"`mmedge {name}` needs a package that is not installed ({e.name}): {hint}") from e
    parser = argparse.ArgumentParser(prog=f"mmedge {name}", description=help_text)
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON on stdout")
    module.configure(parser)
    return parser, module


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mmedge`` script; returns the process exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in COMMANDS:
        parser = build_parser()
        if args and not args[0].startswith("-"):
            parser.print_usage(sys.stderr)
            print(f"ERROR unknown command {args[0]!r}; choose one of: {', '.join(COMMANDS)}", file=sys.stderr)
            return 2
        parser.parse_args(args)  # handles --help / --version and exits
        parser.print_help()
        return 0
    try:
        parser, module = _command_parser(args[0])
        ns = parser.parse_args(args[1:])
        return int(module.run(ns))
    except MMEdgeError as e:
        print(f"ERROR {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # output piped into `head` and closed early: not an error
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("ERROR interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
