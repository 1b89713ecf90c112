"""Synthetic multimodal datasets, deterministic from a seed, built with numpy only.

The reference models need data whose label depends on every modality, so that a bundle that
drops or breaks one encoder visibly loses accuracy. :func:`make_trimodal` builds 8 classes from
three independent bits, one per modality: the image shows a circle or a square, the audio is a
low or a high tone, and the text contains the word "bright" or "dark". No two modalities
determine the label. Everything is random (colour, position, size, frequency, phase, filler
words, noise) except those bits.

Text is tokenized by plain whitespace splitting against :data:`VOCAB` (one token per id, id 0
``<pad>``, id 1 ``<unk>``), exactly what the runtime does with a one-token-per-line vocabulary
file, so strings fed to an exported bundle give the ids the model was trained on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from mmedge.bundle import Manifest

__all__ = [
    "BOS_ID",
    "CAPTION_LENGTH",
    "EOS_ID",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PAD_ID",
    "REFERENCE_SETS",
    "TEXTIMAGE_LABELS",
    "TRIMODAL_LABELS",
    "UNK_ID",
    "VOCAB",
    "CaptionDataset",
    "Dataset",
    "decode_ids",
    "encode_text",
    "make_captions",
    "make_textimage",
    "make_trimodal",
    "normalize_images",
    "reference_set",
]

SPECIALS = ("<pad>", "<unk>", "<bos>", "<eos>")
PAD_ID, UNK_ID, BOS_ID, EOS_ID = range(4)
KEYWORDS = ("dark", "bright")  # index = keyword bit
FILLERS = (
    "a", "an", "the", "this", "that", "it", "is", "was", "here", "there", "some", "very", "quite",
    "photo", "picture", "image", "sound", "clip", "recording", "scene", "thing", "object", "shape",
    "of", "with", "and", "looks", "sounds", "seems", "at", "on", "in",
)  # fmt: skip
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (50, 80, 230),
    "yellow": (235, 215, 40),
    "white": (240, 240, 240),
    "purple": (150, 60, 200),
}
CAPTION_SHAPES = ("circle", "square", "triangle")
# name -> (centre row, centre column) as fractions of the image side, and the caption's preposition
POSITIONS = {
    "left": ((0.5, 0.25), "on the"),
    "right": ((0.5, 0.75), "on the"),
    "top": ((0.25, 0.5), "at the"),
    "bottom": ((0.75, 0.5), "at the"),
    "middle": ((0.5, 0.5), "in the"),
}
_WORDS = (*KEYWORDS, *FILLERS, *COLOURS, *CAPTION_SHAPES, *POSITIONS)
VOCAB: tuple[str, ...] = SPECIALS + tuple(dict.fromkeys(_WORDS))  # id -> token, no duplicates

SHAPES = ("circle", "square")  # index = shape bit of the classification sets
TONES = ("low", "high")  # index = tone bit
LOW_HZ, HIGH_HZ = (300.0, 600.0), (2000.0, 3500.0)
TRIMODAL_LABELS = tuple(f"{s}-{t}-{k}" for s in SHAPES for t in TONES for k in KEYWORDS)
TEXTIMAGE_LABELS = tuple(f"{s}-{k}" for s in SHAPES for k in KEYWORDS)
CAPTION_LENGTH = 8  # <bos> + the longest caption's 6 words + <eos>
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ---------------------------------------------------------------------------------------------
# text


def encode_text(text: str, *, vocab: Sequence[str] = VOCAB, max_length: int | None = None) -> np.ndarray:
    """Token ids (int64) of ``text``: lowercase, split on whitespace, unknown words -> ``<unk>``.

    With ``max_length`` the ids are cropped or right-padded with ``<pad>`` to exactly that length.
    """
    index = {token: i for i, token in enumerate(vocab)}
    ids = [index.get(word, UNK_ID) for word in text.lower().split()]
    if max_length is not None:
        ids = ids[:max_length] + [PAD_ID] * max(0, max_length - len(ids))
    return np.asarray(ids, dtype=np.int64)


def decode_ids(ids: Sequence[int] | np.ndarray, *, vocab: Sequence[str] = VOCAB) -> str:
    """The text of token ids: ``<pad>`` and ``<bos>`` are dropped and decoding stops at ``<eos>``."""
    words = []
    for i in np.asarray(ids).reshape(-1).tolist():
        if i == EOS_ID:
            break
        if i not in (PAD_ID, BOS_ID):
            words.append(vocab[i] if 0 <= i < len(vocab) else vocab[UNK_ID])
    return " ".join(words)


def _keyword_texts(rng: np.random.Generator, keyword_bits: np.ndarray, length: int) -> list[str]:
    """One text per bit: 4..length words of filler with the keyword at a random position."""
    texts = []
    for bit in keyword_bits:
        n_words = int(rng.integers(min(4, length), length + 1))
        words = list(rng.choice(FILLERS, size=n_words - 1))
        words.insert(int(rng.integers(0, n_words)), KEYWORDS[bit])
        texts.append(" ".join(words))
    return texts


# ---------------------------------------------------------------------------------------------
# images


def normalize_images(
    raw: np.ndarray, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> np.ndarray:
    """uint8 [n, H, W, 3] pixels -> float32 [n, 3, H, W], scaled to [0, 1] then mean/std normalised.

    The same arithmetic as the bundle's ``ImagePreprocess`` (scale 1/255, then mean/std).
    """
    x = raw.astype(np.float32) / np.float32(255.0)
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def _shape_mask(kind: str, size: int, centre: tuple[float, float], radius: float) -> np.ndarray:
    """Boolean [size, size] mask of one shape; a square has the area of the circle of ``radius``."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    dy, dx = y - centre[0], x - centre[1]
    if kind == "circle":
        return dy * dy + dx * dx <= radius * radius
    if kind == "square":
        half = radius * np.sqrt(np.pi) / 2
        return (np.abs(dy) <= half) & (np.abs(dx) <= half)
    # an upward triangle: apex at the top, base at the bottom, as wide as it is tall
    return (np.abs(dy) <= radius) & (np.abs(dx) <= (dy + radius) / 2)


def _draw(
    rng: np.random.Generator,
    size: int,
    *,
    kinds: Sequence[str],
    colours: np.ndarray,
    centres: np.ndarray,
    radii: np.ndarray,
) -> np.ndarray:
    """uint8 [n, size, size, 3]: one shape per image on a dark grey background, plus pixel noise."""
    n = len(kinds)
    background = rng.uniform(0, 60, size=(n, 1, 1, 1)).astype(np.float32)
    images = np.broadcast_to(background, (n, size, size, 3)).copy()
    for i in range(n):
        mask = _shape_mask(kinds[i], size, (centres[i, 0], centres[i, 1]), radii[i])
        images[i][mask] = colours[i]
    images += rng.normal(0, 8, size=images.shape).astype(np.float32)
    return np.clip(np.rint(images), 0, 255).astype(np.uint8)


def _random_shapes(rng: np.random.Generator, shape_bits: np.ndarray, size: int) -> np.ndarray:
    """Circles or squares of random bright colour, size and position (fully inside the image)."""
    n = len(shape_bits)
    radii = rng.uniform(0.2, 0.35, size=n) * size
    centres = rng.uniform(radii[:, None], size - radii[:, None], size=(n, 2))
    colours = rng.uniform(100, 255, size=(n, 3))
    return _draw(rng, size, kinds=[SHAPES[b] for b in shape_bits], colours=colours, centres=centres, radii=radii)


# ---------------------------------------------------------------------------------------------
# audio


def _tones(rng: np.random.Generator, tone_bits: np.ndarray, sample_rate: int, seconds: float) -> np.ndarray:
    """float32 [n, samples]: a low (300-600 Hz) or high (2-3.5 kHz) tone, random phase/amplitude, noise."""
    n, samples = len(tone_bits), round(sample_rate * seconds)
    low, high = rng.uniform(*LOW_HZ, size=n), rng.uniform(*HIGH_HZ, size=n)
    freq = np.where(tone_bits == 1, high, low)
    phase = rng.uniform(0, 2 * np.pi, size=n)
    amplitude = rng.uniform(0.2, 0.8, size=n)
    t = np.arange(samples) / sample_rate
    wave = amplitude[:, None] * np.sin(2 * np.pi * freq[:, None] * t[None, :] + phase[:, None])
    wave += rng.normal(0, 0.05, size=wave.shape)
    return wave.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# datasets


@dataclass(frozen=True)
class Dataset:
    """A classification set: model inputs keyed by forward-argument name, and one label each."""

    inputs: Mapping[str, np.ndarray]  # "text" int64 [n, T], "image" float32 [n, 3, H, W], "audio" float32 [n, S]
    labels: np.ndarray  # int64 [n], index into label_names
    label_names: tuple[str, ...]
    vocab: tuple[str, ...]  # id -> token of the text input
    raw_images: np.ndarray  # uint8 [n, H, W, 3]: the pixels before ImagePreprocess
    texts: tuple[str, ...]  # the strings the text ids encode (with max_length padding)
    factors: Mapping[str, np.ndarray]  # the hidden bits the label is built from, e.g. "shape", "tone"

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: Sequence[int] | np.ndarray) -> Dataset:
        """The samples at ``indices``, in that order."""
        idx = np.asarray(indices, dtype=np.int64)
        return dataclasses.replace(
            self,
            inputs={k: v[idx] for k, v in self.inputs.items()},
            labels=self.labels[idx],
            raw_images=self.raw_images[idx],
            texts=tuple(self.texts[i] for i in idx),
            factors={k: v[idx] for k, v in self.factors.items()},
        )

    def split(self, fraction: float, *, seed: int = 0) -> tuple[Dataset, Dataset]:
        """Two disjoint random parts: the first holds ``fraction`` of the samples."""
        first, rest = _split_indices(len(self), fraction, seed)
        return self.subset(first), self.subset(rest)

    def samples(self, n: int | None = None) -> list[dict[str, np.ndarray]]:
        """The first ``n`` samples (all if None) as batch-1 input dicts: calibration and hold-out sets."""
        count = len(self) if n is None else min(n, len(self))
        return [{k: v[i : i + 1] for k, v in self.inputs.items()} for i in range(count)]

    def batches(
        self, batch_size: int, *, shuffle_seed: int | None = None
    ) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
        """``(inputs, labels)`` chunks of ``batch_size`` (the last may be smaller); shuffled if seeded."""
        for idx in _batch_indices(len(self), batch_size, shuffle_seed):
            yield {k: v[idx] for k, v in self.inputs.items()}, self.labels[idx]


@dataclass(frozen=True)
class CaptionDataset:
    """Images of one coloured shape and template captions as ``<bos> ... <eos> <pad>*`` token ids."""

    inputs: Mapping[str, np.ndarray]  # "image" float32 [n, 3, H, W], "tokens" int64 [n, CAPTION_LENGTH]
    captions: tuple[str, ...]  # "a red circle on the left"
    vocab: tuple[str, ...]
    raw_images: np.ndarray  # uint8 [n, H, W, 3]

    @property
    def tokens(self) -> np.ndarray:
        return self.inputs["tokens"]

    def __len__(self) -> int:
        return len(self.captions)

    def subset(self, indices: Sequence[int] | np.ndarray) -> CaptionDataset:
        """The samples at ``indices``, in that order."""
        idx = np.asarray(indices, dtype=np.int64)
        return dataclasses.replace(
            self,
            inputs={k: v[idx] for k, v in self.inputs.items()},
            captions=tuple(self.captions[i] for i in idx),
            raw_images=self.raw_images[idx],
        )

    def split(self, fraction: float, *, seed: int = 0) -> tuple[CaptionDataset, CaptionDataset]:
        """Two disjoint random parts: the first holds ``fraction`` of the samples."""
        first, rest = _split_indices(len(self), fraction, seed)
        return self.subset(first), self.subset(rest)

    def batches(self, batch_size: int, *, shuffle_seed: int | None = None) -> Iterator[dict[str, np.ndarray]]:
        """Input chunks of ``batch_size`` (the last may be smaller); shuffled if seeded."""
        for idx in _batch_indices(len(self), batch_size, shuffle_seed):
            yield {k: v[idx] for k, v in self.inputs.items()}


def _split_indices(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"split fraction must be strictly between 0 and 1, got {fraction}")
    order = np.random.default_rng(seed).permutation(n)
    cut = round(n * fraction)
    return order[:cut], order[cut:]


def _batch_indices(n: int, batch_size: int, shuffle_seed: int | None) -> Iterator[np.ndarray]:
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    order = np.arange(n) if shuffle_seed is None else np.random.default_rng(shuffle_seed).permutation(n)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


def _balanced_labels(rng: np.random.Generator, n: int, num_classes: int) -> np.ndarray:
    """``n`` labels with class counts differing by at most one, in random order."""
    return rng.permutation(np.arange(n) % num_classes).astype(np.int64)


def make_trimodal(
    n: int,
    seed: int = 0,
    *,
    image_size: int = 64,
    sample_rate: int = 16000,
    audio_seconds: float = 1.0,
    text_length: int = 16,
) -> Dataset:
    """``n`` samples of 8 balanced classes; label = 4·shape_bit + 2·tone_bit + keyword_bit."""
    rng = np.random.default_rng(seed)
    labels = _balanced_labels(rng, n, len(TRIMODAL_LABELS))
    factors = {"shape": labels // 4, "tone": (labels // 2) % 2, "keyword": labels % 2}
    raw = _random_shapes(rng, factors["shape"], image_size)
    audio = _tones(rng, factors["tone"], sample_rate, audio_seconds)
    texts = _keyword_texts(rng, factors["keyword"], text_length)
    return Dataset(
        inputs={
            "text": np.stack([encode_text(t, max_length=text_length) for t in texts]),
            "image": normalize_images(raw),
            "audio": audio,
        },
        labels=labels,
        label_names=TRIMODAL_LABELS,
        vocab=VOCAB,
        raw_images=raw,
        texts=tuple(texts),
        factors=factors,
    )


def make_textimage(n: int, seed: int = 0, *, image_size: int = 64, text_length: int = 16) -> Dataset:
    """``n`` samples of 4 balanced classes from text + image; label = 2·shape_bit + keyword_bit."""
    rng = np.random.default_rng(seed)
    labels = _balanced_labels(rng, n, len(TEXTIMAGE_LABELS))
    factors = {"shape": labels // 2, "keyword": labels % 2}
    raw = _random_shapes(rng, factors["shape"], image_size)
    texts = _keyword_texts(rng, factors["keyword"], text_length)
    return Dataset(
        inputs={
            "text": np.stack([encode_text(t, max_length=text_length) for t in texts]),
            "image": normalize_images(raw),
        },
        labels=labels,
        label_names=TEXTIMAGE_LABELS,
        vocab=VOCAB,
        raw_images=raw,
        texts=tuple(texts),
        factors=factors,
    )


def make_captions(n: int, seed: int = 0, *, image_size: int = 64) -> CaptionDataset:
    """``n`` images of one named-colour shape at a named position, captioned from a template."""
    rng = np.random.default_rng(seed)
    colour_names = rng.choice(list(COLOURS), size=n)
    kinds = rng.choice(CAPTION_SHAPES, size=n)
    places = rng.choice(list(POSITIONS), size=n)
    radii = rng.uniform(0.1, 0.16, size=n) * image_size
    anchors = np.array([POSITIONS[p][0] for p in places], dtype=np.float64)
    centres = (anchors + rng.uniform(-0.04, 0.04, size=(n, 2))) * image_size
    colours = np.array([COLOURS[c] for c in colour_names], dtype=np.float32)
    raw = _draw(rng, image_size, kinds=list(kinds), colours=colours, centres=centres, radii=radii)
    captions = tuple(f"a {c} {k} {POSITIONS[p][1]} {p}" for c, k, p in zip(colour_names, kinds, places, strict=True))
    tokens = np.stack([encode_text(f"<bos> {c} <eos>", max_length=CAPTION_LENGTH) for c in captions])
    return CaptionDataset(
        inputs={"image": normalize_images(raw), "tokens": tokens},
        captions=captions,
        vocab=VOCAB,
        raw_images=raw,
    )


# Reference model name (ModelInfo.name) -> the factory of the synthetic data it is trained on.
REFERENCE_SETS: dict[str, Callable[..., Dataset | CaptionDataset]] = {
    "TriModalNet": make_trimodal,
    "TextImageNet": make_textimage,
    "ResNetBertNet": make_textimage,
    "CaptionNet": make_captions,
}


def reference_set(manifest: Manifest, n: int, seed: int = 0) -> Dataset | CaptionDataset | None:
    """``n`` samples of a reference model's synthetic data, shaped as its bundle's inputs; None for other models.

    ``mmedge quantize --calibration synthetic`` calibrates with it. The sizes come from the
    manifest's preprocessing (image side, text length, audio rate and length).
    """
    factory = REFERENCE_SETS.get(manifest.model.name)
    return None if factory is None else factory(n, seed, **_bundle_sizes(manifest, factory))


def _bundle_sizes(manifest: Manifest, factory: Callable[..., Any]) -> dict[str, Any]:
    """Keyword arguments of ``factory`` that make arrays of the bundle's shapes."""
    sizes: dict[str, Any] = {}
    for spec in manifest.inputs:
        pre = spec.preprocess
        if spec.modality == "image" and pre is not None:
            sizes["image_size"] = pre.size[0]
        elif spec.modality == "audio" and pre is not None:
            sizes["sample_rate"], sizes["audio_seconds"] = pre.sample_rate, pre.max_seconds
        elif spec.modality == "text" and pre is not None and factory is not make_captions:
            sizes["text_length"] = pre.max_length
    return sizes
