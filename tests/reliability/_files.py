"""Image and sound files for the reliability tests: real ones in every format, and lying headers.

``sample_files`` writes one small real file per format Pillow and libsndfile read here, so the
fuzzers can truncate and corrupt real structure instead of only random bytes. ``png_header``
and ``wav_header`` craft files whose headers claim sizes the data does not have (decompression
bombs, a data chunk of gigabytes), which must be refused from the header alone.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import soundfile
from PIL import Image

IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".bmp": "BMP", ".gif": "GIF", ".tiff": "TIFF", ".webp": "WEBP"}
SOUND_FORMATS = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG", ".aiff": "AIFF"}


def sample_files(directory: Path) -> dict[str, bytes]:
    """One small real file per image and sound format, by suffix, as bytes."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
    wave = (0.5 * np.sin(np.linspace(0, 60, 800))).astype(np.float32)
    out = {}
    for suffix, fmt in IMAGE_FORMATS.items():
        path = directory / f"sample{suffix}"
        Image.fromarray(pixels).save(path, format=fmt)
        out[suffix] = path.read_bytes()
    for suffix, fmt in SOUND_FORMATS.items():
        path = directory / f"sample{suffix}"
        soundfile.write(path, np.stack([wave, wave[::-1]], axis=1), 22050, format=fmt)
        out[suffix] = path.read_bytes()
    return out


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_header(width: int, height: int) -> bytes:
    """A well-formed PNG that declares ``width``×``height`` RGB pixels but carries one row of data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" + b"\x00" * 3 * min(width, 64))
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def wav_header(frames: int, channels: int = 2, rate: int = 16000, held: int = 4) -> bytes:
    """A 16-bit PCM WAV whose header claims ``frames`` frames but that holds ``held`` frames of silence."""
    data = frames * channels * 2
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * channels * 2, channels * 2, 16)
    samples = b"\x00" * (held * channels * 2)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", data) + samples
    return b"RIFF" + struct.pack("<I", min(len(body) + data, 2**32 - 1)) + body
