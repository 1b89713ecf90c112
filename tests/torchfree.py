"""A prelude that makes a Python subprocess refuse torch: prepend it to a script to prove a path is torch-free."""

NO_TORCH = """
import sys

class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision", "torchaudio"):
            raise ImportError(f"a torch-free code path imported {name}")

sys.meta_path.insert(0, NoTorch())
"""
