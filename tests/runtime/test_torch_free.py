"""Importing and running the runtime never imports torch (it ships to devices without it)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
from PIL import Image
from torchfree import NO_TORCH, run_python

SCRIPT = NO_TORCH + textwrap.dedent(
    """
    import sys

    import numpy as np
    import mmedge.runtime
    from mmedge.cli import main
    from mmedge.runtime import Audio, Pipeline

    bundle, image = sys.argv[1], sys.argv[2]
    with Pipeline(bundle, "auto") as pipe:
        out = pipe.run({"text": ["bright cat", "sea"], "image": [image, np.zeros((8, 8, 3), np.uint8)],
                        "audio": [Audio(np.zeros((2, 441), np.float32), 44100), np.zeros(160, np.float32)]})
        pipe.encode("image", image)
    assert out["logits"].shape == (2, 3), out
    assert main(["run", bundle, "-i", f"image={image}", "-i", "text=dark sky", "-i", "audio=" + sys.argv[3], "--json"]) == 0
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "torchaudio"))
    sys.exit(f"torch was imported: {loaded}" if loaded else 0)
    """
)


def test_runtime_and_run_command_never_import_torch(tiny_bundle: Path, tmp_path: Path) -> None:
    Image.fromarray(np.full((10, 12, 3), 128, np.uint8)).save(tmp_path / "img.png")
    np.save(tmp_path / "wave.npy", np.zeros(200, np.float32))
    result = run_python(SCRIPT, str(tiny_bundle), str(tmp_path / "img.png"), str(tmp_path / "wave.npy"), timeout=120)
    assert result.returncode == 0, result.stderr
