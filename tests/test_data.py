"""Synthetic datasets: deterministic, balanced, every modality carries its bit, tokenizer round trip."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from mmedge.data import (
    BOS_ID,
    CAPTION_LENGTH,
    EOS_ID,
    IMAGENET_MEAN,
    IMAGENET_STD,
    PAD_ID,
    TEXTIMAGE_LABELS,
    TRIMODAL_LABELS,
    UNK_ID,
    VOCAB,
    decode_ids,
    encode_text,
    make_captions,
    make_textimage,
    make_trimodal,
)

SR = 8000
MAKERS = {
    "trimodal": lambda n, seed: make_trimodal(n, seed, image_size=24, sample_rate=SR, audio_seconds=0.25),
    "textimage": lambda n, seed: make_textimage(n, seed, image_size=24),
    "captions": lambda n, seed: make_captions(n, seed, image_size=24),
}


@pytest.fixture(scope="module")
def trimodal():
    return MAKERS["trimodal"](96, 0)


def _arrays(ds) -> dict[str, np.ndarray]:
    return {**ds.inputs, "raw_images": ds.raw_images}


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_same_seed_same_data_other_seed_other_data(kind: str) -> None:
    a, b, c = MAKERS[kind](24, 3), MAKERS[kind](24, 3), MAKERS[kind](24, 4)
    for name, array in _arrays(a).items():
        np.testing.assert_array_equal(array, _arrays(b)[name])
        assert not np.array_equal(array, _arrays(c)[name]), name


def test_trimodal_shapes_and_dtypes(trimodal) -> None:
    assert trimodal.inputs["text"].shape == (96, 16)
    assert trimodal.inputs["text"].dtype == np.int64
    assert trimodal.inputs["image"].shape == (96, 3, 24, 24)
    assert trimodal.inputs["image"].dtype == np.float32
    assert trimodal.inputs["audio"].shape == (96, SR // 4)
    assert trimodal.inputs["audio"].dtype == np.float32
    assert trimodal.raw_images.shape == (96, 24, 24, 3)
    assert trimodal.raw_images.dtype == np.uint8
    assert trimodal.labels.dtype == np.int64
    assert trimodal.label_names == TRIMODAL_LABELS
    assert trimodal.vocab == VOCAB


def test_images_are_the_raw_pixels_normalised(trimodal) -> None:
    expected = (trimodal.raw_images / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(trimodal.inputs["image"], expected.transpose(0, 3, 1, 2), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("kind", "classes"), [("trimodal", 8), ("textimage", 4)])
def test_classes_are_balanced(kind: str, classes: int) -> None:
    counts = np.bincount(MAKERS[kind](8 * classes + 3, 0).labels, minlength=classes)
    assert counts.max() - counts.min() <= 1


def test_no_two_modalities_determine_the_label(trimodal) -> None:
    f = trimodal.factors
    np.testing.assert_array_equal(trimodal.labels, 4 * f["shape"] + 2 * f["tone"] + f["keyword"])
    for left_out in ("shape", "tone", "keyword"):
        known = [f[k] for k in f if k != left_out]
        for bits in {tuple(b) for b in np.stack(known, axis=1)}:
            same = np.all(np.stack(known, axis=1) == bits, axis=1)
            # given the other two modalities, the label is still a fair coin over two classes
            assert len(np.unique(trimodal.labels[same])) == 2, left_out


def test_text_carries_the_keyword_bit(trimodal) -> None:
    bright, dark = VOCAB.index("bright"), VOCAB.index("dark")
    text = trimodal.inputs["text"]
    np.testing.assert_array_equal((text == bright).any(axis=1), trimodal.factors["keyword"] == 1)
    np.testing.assert_array_equal((text == dark).any(axis=1), trimodal.factors["keyword"] == 0)
    assert all(
        encode_text(t, max_length=16).tolist() == ids.tolist() for t, ids in zip(trimodal.texts, text, strict=True)
    )


def test_audio_carries_the_tone_bit(trimodal) -> None:
    spectrum = np.abs(np.fft.rfft(trimodal.inputs["audio"], axis=1))
    peak_hz = spectrum.argmax(axis=1) * SR / trimodal.inputs["audio"].shape[1]
    np.testing.assert_array_equal(peak_hz > 1000, trimodal.factors["tone"] == 1)


def test_image_carries_the_shape_bit(trimodal) -> None:
    # shapes are drawn in channels >= 100 on a background <= 60 (+ noise): threshold the mean
    mask = trimodal.raw_images.astype(np.float32).mean(axis=3) > 80
    rows, cols = mask.any(axis=2), mask.any(axis=1)
    box = rows.sum(axis=1) * cols.sum(axis=1)
    fill = mask.sum(axis=(1, 2)) / box  # a square fills its bounding box, a circle ~pi/4 of it
    np.testing.assert_array_equal(fill > 0.9, trimodal.factors["shape"] == 1)


def test_split_is_disjoint_and_batches_cover_everything(trimodal) -> None:
    train, held_out = trimodal.split(0.75)
    assert (len(train), len(held_out)) == (72, 24)
    train_texts, held_texts = {tuple(t) for t in train.inputs["text"]}, {tuple(t) for t in held_out.inputs["text"]}
    assert not train_texts & held_texts
    batches = list(train.batches(32, shuffle_seed=1))
    assert [len(labels) for _, labels in batches] == [32, 32, 8]
    labels = np.concatenate([labels for _, labels in batches])
    assert sorted(labels.tolist()) == sorted(train.labels.tolist())
    assert set(batches[0][0]) == {"text", "image", "audio"}
    with pytest.raises(ValueError, match="between 0 and 1"):
        trimodal.split(1.0)


def test_textimage_has_text_and_image_only() -> None:
    ds = MAKERS["textimage"](16, 0)
    assert set(ds.inputs) == {"text", "image"}
    assert ds.label_names == TEXTIMAGE_LABELS
    np.testing.assert_array_equal(ds.labels, 2 * ds.factors["shape"] + ds.factors["keyword"])


def test_captions_are_bos_words_eos_pad() -> None:
    ds = MAKERS["captions"](40, 0)
    assert ds.tokens.shape == (40, CAPTION_LENGTH)
    assert ds.inputs["image"].shape == (40, 3, 24, 24)
    assert (ds.tokens[:, 0] == BOS_ID).all()
    for caption, ids in zip(ds.captions, ds.tokens.tolist(), strict=True):
        end = ids.index(EOS_ID)
        assert set(ids[end + 1 :]) <= {PAD_ID}
        assert decode_ids(ids) == caption
        assert UNK_ID not in ids
    assert {len(c.split()) for c in ds.captions} == {6}
    assert len(set(ds.captions)) > 20


@pytest.mark.parametrize(
    ("text", "max_length", "ids"),
    [
        pytest.param(
            "Bright  photo\tof",
            None,
            [VOCAB.index("bright"), VOCAB.index("photo"), VOCAB.index("of")],
            id="lower-split",
        ),
        pytest.param("dark zebra", 4, [VOCAB.index("dark"), UNK_ID, PAD_ID, PAD_ID], id="unknown-padded"),
        pytest.param("a a a a a", 3, [VOCAB.index("a")] * 3, id="cropped"),
        pytest.param("", 2, [PAD_ID, PAD_ID], id="empty"),
    ],
)
def test_encode_text(text: str, max_length: int | None, ids: list[int]) -> None:
    out = encode_text(text, max_length=max_length)
    assert out.dtype == np.int64
    assert out.tolist() == ids


def test_vocab_is_unique_and_starts_with_specials() -> None:
    assert VOCAB[:4] == ("<pad>", "<unk>", "<bos>", "<eos>")
    assert len(set(VOCAB)) == len(VOCAB)
    assert all(t == t.lower() and not any(c.isspace() for c in t) for t in VOCAB)  # survives a vocab file


def test_data_module_does_not_import_torch() -> None:
    code = "import sys, mmedge.data; mmedge.data.make_trimodal(8); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
