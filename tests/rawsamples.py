"""A ``.jsonl`` samples file of the kind users keep: photos of another size, sound files at another rate, sentences."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile
from PIL import Image

WORDS = ("bright cat", "dark sea", "bright sky", "dark dog", "sea cat", "bright dog")


def write_samples(folder: Path, n: int, seed: int) -> Path:
    """``n`` samples as users keep them: photos of another size, sound files at another rate, sentences."""
    rng = np.random.default_rng(seed)
    (folder / "media").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        photo = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
        Image.fromarray(photo).save(folder / "media" / f"{seed}-{i}.jpg")
        wave = 0.3 * np.sin(2 * np.pi * rng.uniform(200, 2000) * np.arange(441) / 44100)
        soundfile.write(folder / "media" / f"{seed}-{i}.wav", wave.astype(np.float32), 44100)
        lines.append(
            json.dumps(
                {"text": WORDS[i % len(WORDS)], "image": f"media/{seed}-{i}.jpg", "audio": f"media/{seed}-{i}.wav"}
            )
        )
    path = folder / f"data-{seed}.jsonl"
    path.write_text("\n".join(lines) + "\n\n", encoding="utf-8")
    return path
