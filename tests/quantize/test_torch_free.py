"""quantize works where torch is not installed (its extra is the runtime's: onnx, onnxruntime, numpy)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
from torchfree import run_python

SCRIPT = textwrap.dedent(
    """
    import sys

    # As if not installed: `import torch` fails and importlib.util.find_spec("torch") is None
    # (onnxruntime.tools imports torch whenever find_spec finds it).
    for name in ("torch", "torchvision", "torchaudio"):
        sys.modules[name] = None
    from mmedge.cli import main
    from mmedge.quantize import quantize_bundle

    bundle, calib, out = sys.argv[1:]
    assert main(["quantize", bundle, "--out", out, "--calibration", calib, "--min-agreement", "0", "--json"]) == 0
    loaded = sorted(m for m, mod in sys.modules.items() if mod is not None and m.split(".")[0] == "torch")
    sys.exit(f"torch was imported: {loaded}" if loaded else 0)
    """
)


def test_quantize_command_runs_without_torch(tiny_bundle: Path, tmp_path: Path) -> None:
    from tinybundle import tiny_inputs

    (tmp_path / "calib").mkdir()
    for i in range(6):
        np.savez(tmp_path / "calib" / f"{i}.npz", **tiny_inputs(seed=i))
    result = run_python(SCRIPT, str(tiny_bundle), str(tmp_path / "calib"), str(tmp_path / "out"), timeout=300)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "quantization_report.json").is_file()
