"""The processes of the peer variants: ``build`` one peer, or time one (``openvino``, ``executorch``).

``python -m mmedge.bench._peer_worker build`` reads one JSON line (the peer, the FP32 ONNX or the
torch model to build it from, calibration samples, batch sizes, where to write) and answers one
JSON line with what it wrote and its notes, or ``{"error", "type"}``. Building runs in its own
process, before the timed workers start, so a peer's quantization costs no worker start-up time
or memory. ``python -m mmedge.bench._peer_worker openvino|executorch`` is a timed worker speaking
``mmedge.bench._worker``'s protocol. The onnxruntime INT8 peer is timed by the onnxruntime
worker, like the monolithic variant. ExecuTorch runs under ``--peer-python``: everything here
imports only what its own peer needs.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mmedge.bench._agreement import samples_of
from mmedge.bench._inputs import load_npz
from mmedge.errors import ConfigError
from mmedge.worker_process import serve_lines

__all__ = ["build"]


def build(request: Mapping[str, Any]) -> dict[str, Any]:
    """Build the peer ``request`` describes; returns the paths written, notes and build seconds."""
    start = time.monotonic()
    peer = request["peer"]
    calibration = samples_of(load_npz(Path(request["calibration"])))
    out = Path(request["out"])
    int8, keep = peer["precision"] == "int8", bool(peer["keep_frontend"])
    if peer["family"] == "ort":
        from mmedge.bench._peer_ort import build_ort_int8

        built = build_ort_int8(Path(request["source"]), out, calibration, keep_frontend=keep)
    elif peer["family"] == "openvino":
        from mmedge.bench._peer_openvino import build_openvino

        built = build_openvino(Path(request["source"]), out, calibration, int8=int8, keep_frontend=keep)
    elif peer["family"] == "executorch":
        from mmedge.bench._peer_executorch import build_executorch

        built = build_executorch(
            _torch_model(request["torch"], int(request["threads"])),
            out,
            calibration,
            request["batch_sizes"],
            int8=int8,
            keep_frontend=keep,
            items=request.get("items"),
        )
    else:
        raise ConfigError(f"unknown peer family {peer['family']!r}")
    return {**built, "build_s": time.monotonic() - start}


def _torch_model(spec: Mapping[str, Any], threads: int) -> Any:
    import torch

    from mmedge.bench._torch_worker import build_model

    torch.set_num_threads(threads)
    model = build_model(spec["model"], spec.get("model_kwargs"))
    if spec.get("checkpoint"):
        from mmedge.train import load_checkpoint

        load_checkpoint(model, spec["checkpoint"])
    return model.eval()


def _build_main() -> int:
    """Build from the configuration line; the reply is what was written, or the error."""
    return serve_lines(lambda config: (None, build(config)), _no_commands)


def _no_commands(_state: None, command: Mapping[str, Any]) -> Mapping[str, Any]:
    raise ConfigError(f"the peer build process takes no commands (got {command.get('cmd')!r})")


def _main(argv: list[str]) -> int:
    from mmedge.bench._worker import serve

    what = argv[0] if argv else ""
    if what == "build":
        return _build_main()
    if what == "openvino":
        from mmedge.bench._peer_openvino import OpenVinoRunner, import_openvino

        return serve(import_openvino, OpenVinoRunner)
    if what == "executorch":
        from mmedge.bench._peer_executorch import ExecutorchRunner, import_executorch

        return serve(import_executorch, ExecutorchRunner)
    print(f"usage: python -m mmedge.bench._peer_worker build|openvino|executorch (got {argv})", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
