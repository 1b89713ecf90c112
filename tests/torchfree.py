"""Proving a code path torch-free: a prelude that makes a Python subprocess refuse torch (prepend it to
a script), and the subprocess runner."""

import subprocess
import sys

NO_TORCH = """
import sys

class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision", "torchaudio"):
            raise ImportError(f"a torch-free code path imported {name}")

sys.meta_path.insert(0, NoTorch())
"""


def run_python(script: str, *args: object, timeout: float) -> subprocess.CompletedProcess[str]:
    """``python -c script args...`` in a fresh interpreter (torch not yet imported), output captured as text."""
    return subprocess.run(
        [sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True, check=False, timeout=timeout
    )
