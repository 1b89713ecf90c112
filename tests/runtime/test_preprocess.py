"""Raw images, waveforms and strings become exactly the tensors the manifest describes."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile
from PIL import Image
from tinybundle import VOCAB

from mmedge.bundle import Asset, InputSpec, Manifest, TextPreprocess, load_bundle
from mmedge.errors import InputError
from mmedge.runtime import Audio, Pipeline
from mmedge.runtime._signal import resample, resize
from mmedge.runtime.preprocess import prepare
from mmedge.runtime.text import Vocabulary, load_tokenizer

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def _no_tokenizer() -> None:
    raise AssertionError("no strings here, so no tokenizer should be loaded")


@pytest.fixture
def specs(tiny_bundle: Path) -> dict[str, InputSpec]:
    return {i.name: i for i in load_bundle(tiny_bundle).manifest.inputs}


def _pixels(h: int = 8, w: int = 8, c: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, c), dtype=np.uint8)


# -- images -----------------------------------------------------------------------------------


def test_uint8_image_is_scaled_normalised_and_made_nchw(specs: dict[str, InputSpec]) -> None:
    pixels = _pixels()
    expected = ((pixels / 255.0 - MEAN) / STD).transpose(2, 0, 1)[None].astype(np.float32)
    np.testing.assert_allclose(prepare(specs["image"], pixels, _no_tokenizer), expected, rtol=1e-6, atol=1e-6)


def test_png_file_pil_image_and_array_give_the_same_tensor(specs: dict[str, InputSpec], tmp_path: Path) -> None:
    pixels = _pixels(20, 30)
    Image.fromarray(pixels).save(tmp_path / "cat.png")
    from_array = prepare(specs["image"], pixels, _no_tokenizer)
    np.testing.assert_array_equal(prepare(specs["image"], str(tmp_path / "cat.png"), _no_tokenizer), from_array)
    np.testing.assert_array_equal(prepare(specs["image"], tmp_path / "cat.png", _no_tokenizer), from_array)
    np.testing.assert_array_equal(prepare(specs["image"], Image.fromarray(pixels), _no_tokenizer), from_array)
    assert from_array.shape == (1, 3, 8, 8)


def test_grayscale_and_rgba_images_become_rgb(specs: dict[str, InputSpec]) -> None:
    gray = _pixels(c=1)[:, :, 0]
    rgb = np.repeat(gray[:, :, None], 3, axis=2)
    np.testing.assert_array_equal(
        prepare(specs["image"], gray, _no_tokenizer), prepare(specs["image"], rgb, _no_tokenizer)
    )
    rgba = np.concatenate([rgb, np.full((8, 8, 1), 7, np.uint8)], axis=2)
    np.testing.assert_array_equal(
        prepare(specs["image"], rgba, _no_tokenizer), prepare(specs["image"], rgb, _no_tokenizer)
    )
    pil_gray = Image.fromarray(gray, mode="L")
    np.testing.assert_array_equal(
        prepare(specs["image"], pil_gray, _no_tokenizer), prepare(specs["image"], rgb, _no_tokenizer)
    )


def test_float_images_in_unit_range_equal_uint8(specs: dict[str, InputSpec]) -> None:
    pixels = _pixels()
    np.testing.assert_allclose(
        prepare(specs["image"], pixels.astype(np.float32) / 255.0, _no_tokenizer),
        prepare(specs["image"], pixels, _no_tokenizer),
        rtol=1e-6,
        atol=1e-6,
    )


@pytest.mark.parametrize("size", [(8, 8), (5, 13), (64, 40), (37, 53)], ids=str)
def test_resize_matches_pillow_bilinear(size: tuple[int, int]) -> None:
    image = np.random.default_rng(0).random((37, 53, 2)).astype(np.float32)
    ours = resize(image, size)
    for c in range(2):
        theirs = np.asarray(Image.fromarray(image[:, :, c], mode="F").resize(size[::-1], Image.BILINEAR))
        np.testing.assert_allclose(ours[:, :, c], theirs, rtol=0, atol=1e-5)


def test_nhwc_layout_is_respected(specs: dict[str, InputSpec]) -> None:
    # the spec alone: a bundle declaring NHWC input for the tiny NCHW graph is refused at load
    spec = dataclasses.replace(specs["image"], shape=("batch", 8, 8, 3), preprocess=_nhwc(), example_shape=())
    pixels = _pixels()
    expected = ((pixels / 255.0 - MEAN) / STD)[None].astype(np.float32)
    np.testing.assert_allclose(prepare(spec, pixels, _no_tokenizer), expected, rtol=1e-6, atol=1e-6)


def _nhwc():
    from mmedge.bundle import ImagePreprocess

    return ImagePreprocess(size=(8, 8), layout="NHWC")


# -- audio ------------------------------------------------------------------------------------


def test_wav_file_at_another_rate_in_stereo_is_mixed_and_resampled(specs: dict[str, InputSpec], tmp_path: Path) -> None:
    rate = 44100
    t = np.arange(rate // 50) / rate
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), 0.5 * np.sin(2 * np.pi * 440 * t)]).astype(np.float32) * 0.5
    soundfile.write(tmp_path / "x.wav", stereo.T, rate, subtype="FLOAT")
    from_file = prepare(specs["audio"], str(tmp_path / "x.wav"), _no_tokenizer)
    from_array = prepare(specs["audio"], Audio(stereo, rate), _no_tokenizer)
    np.testing.assert_array_equal(from_file, from_array)
    np.testing.assert_array_equal(prepare(specs["audio"], (stereo, rate), _no_tokenizer), from_array)
    assert from_file.shape == (1, 160)  # 0.01 s at 16 kHz
    mono_16k = 0.375 * np.sin(2 * np.pi * 440 * np.arange(160) / 16000)
    # away from the start (zero-padded history), the band-limited resampler is accurate
    np.testing.assert_allclose(from_file[0, 40:], mono_16k[40:], rtol=0, atol=2e-3)


def test_waves_are_padded_or_cropped_to_the_input_length(specs: dict[str, InputSpec]) -> None:
    wave = np.arange(1, 301, dtype=np.float32) / 1000
    out = prepare(specs["audio"], [wave[:100], wave], _no_tokenizer)
    np.testing.assert_array_equal(out[0], np.concatenate([wave[:100], np.zeros(60, np.float32)]))
    np.testing.assert_array_equal(out[1], wave[:160])


@pytest.mark.parametrize(("rate_in", "rate_out"), [(44100, 16000), (8000, 16000), (48000, 16000), (22050, 16000)])
def test_resampling_keeps_a_tone(rate_in: int, rate_out: int) -> None:
    tone = np.sin(2 * np.pi * 440 * np.arange(rate_in // 4) / rate_in)
    out = resample(tone, rate_in, rate_out)
    assert out.shape == (round(len(tone) * rate_out / rate_in),)
    expected = np.sin(2 * np.pi * 440 * np.arange(len(out)) / rate_out)
    np.testing.assert_allclose(out[100:-100], expected[100:-100], rtol=0, atol=1e-4)


def test_downsampling_removes_tones_above_the_new_nyquist() -> None:
    tone = np.sin(2 * np.pi * 10_000 * np.arange(44100 // 4) / 44100)  # above 8 kHz
    assert np.abs(resample(tone, 44100, 16000)[100:-100]).max() < 1e-3


# -- text -------------------------------------------------------------------------------------


def test_strings_become_vocabulary_ids_padded_to_max_length(tiny_bundle: Path, specs: dict[str, InputSpec]) -> None:
    tokenizer = load_tokenizer(load_bundle(tiny_bundle), specs["text"])
    assert isinstance(tokenizer, Vocabulary)
    assert tokenizer.vocab_size == len(VOCAB)
    out = prepare(specs["text"], ["Bright CAT zebra", "dog " * 20], lambda: tokenizer)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out[0], [2, 4, 1, 0, 0, 0, 0, 0])  # zebra → <unk>, then <pad>
    np.testing.assert_array_equal(out[1], [5] * 8)  # cropped to max_length


def test_id_lists_are_padded_like_strings(specs: dict[str, InputSpec]) -> None:
    np.testing.assert_array_equal(prepare(specs["text"], [2, 4], _no_tokenizer), [[2, 4, 0, 0, 0, 0, 0, 0]])
    np.testing.assert_array_equal(
        prepare(specs["text"], [[2], np.array([3, 5])], _no_tokenizer),
        [[2, 0, 0, 0, 0, 0, 0, 0], [3, 5, 0, 0, 0, 0, 0, 0]],
    )


def test_strings_and_ids_give_the_same_output(pipe: Pipeline) -> None:
    x = {"image": np.zeros((8, 8, 3), np.uint8), "audio": np.zeros(160, np.float32)}
    np.testing.assert_array_equal(
        pipe.run({**x, "text": "bright cat"})["logits"], pipe.run({**x, "text": [2, 4]})["logits"]
    )


@pytest.mark.parametrize(
    ("item", "message"),
    [
        (("bright cat", "dog"), "a text pair needs the bundle's Hugging Face tokenizer"),
        ({"text": "bright cat", "pair": "dog"}, 'a text pair is {"text": ..., "text_pair": ...}'),
    ],
)
def test_a_text_pair_a_word_vocabulary_cannot_encode_is_refused(
    tiny_bundle: Path, specs: dict[str, InputSpec], item: object, message: str
) -> None:
    tokenizer = load_tokenizer(load_bundle(tiny_bundle), specs["text"])
    with pytest.raises(InputError, match=re.escape(message)):
        prepare(specs["text"], item, lambda: tokenizer)


def test_tokenizer_file_must_be_an_asset(edited_bundle: Callable[..., Path]) -> None:
    pre = TextPreprocess(max_length=8, unk_id=1, vocab_file="other.txt")
    bundle = load_bundle(edited_bundle("text", preprocess=pre, files={"other.txt": b"a\nb\n"}))
    from mmedge.errors import BundleError

    with pytest.raises(BundleError, match=r"'other\.txt' is not listed in the manifest's assets"):
        load_tokenizer(bundle, bundle.manifest.input("text"))


def test_hugging_face_tokenizer_file(edited_bundle: Callable[..., Path]) -> None:
    tokenizers = pytest.importorskip("tokenizers")
    hf = tokenizers.Tokenizer(tokenizers.models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="<unk>"))
    hf.normalizer = tokenizers.normalizers.Lowercase()
    hf.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    pre = TextPreprocess(max_length=4, pad_id=0, tokenizer_file="tokenizer.json")

    def add_asset(m: Manifest) -> Manifest:
        return dataclasses.replace(m, assets=(*m.assets, Asset("tokenizer", "tokenizer.json")))

    bundle = edited_bundle("text", preprocess=pre, edit=add_asset, files={"tokenizer.json": hf.to_str().encode()})
    with Pipeline(bundle, "cpu") as p:
        ids = prepare(p.manifest.input("text"), ["Dark SKY over the sea", "cat"], lambda: p._router.tokenizer("text"))
        np.testing.assert_array_equal(ids, [[3, 6, 1, 1], [4, 0, 0, 0]])  # truncated by the tokenizer to 4
        x = {"image": np.zeros((8, 8, 3), np.uint8), "audio": np.zeros(160, np.float32)}
        np.testing.assert_array_equal(p.run({**x, "text": "cat"})["logits"], p.run({**x, "text": [4]})["logits"])


def test_texts_are_cut_before_tokenizers_computes_their_overflow(tmp_path: Path) -> None:
    """``tokenizers`` computes every overflowing window of a text and pairs those of a pair's two texts (two
    20,000-word texts took 4.6 GB): texts are cut to CHARS_PER_TOKEN per token first."""
    tokenizers = pytest.importorskip("tokenizers")
    from mmedge.runtime.text import CHARS_PER_TOKEN, _HFTokenizer

    hf = tokenizers.Tokenizer(tokenizers.models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="<unk>"))
    hf.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    hf.post_processor = tokenizers.processors.TemplateProcessing(single="$A", pair="$A $B:1", special_tokens=[])
    hf.save(str(tmp_path / "tokenizer.json"))
    tok = _HFTokenizer(tmp_path / "tokenizer.json", max_length=8)
    short = ("bright cat", "dog " * 20)  # under the cap: exactly what tokenizers gives
    reference = tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    reference.enable_truncation(8)
    expected = reference.encode(*short)
    assert tok.encode_pair(*short) == (expected.ids, expected.type_ids)

    seen: list[tuple[int, int]] = []
    real = tok._tokenizer

    class Recording:
        def encode(self, *texts: str) -> object:
            seen.append(tuple(map(len, texts)))
            return real.encode(*texts)

    tok._tokenizer = Recording()
    ids, types = tok.encode_pair("cat " * 250_000, "dog " * 250_000)  # 1 MB each
    assert (len(ids), types) == (8, [0] * 4 + [1] * 4)
    assert tok.encode("cat " * 250_000) == reference.encode("cat " * 20).ids  # one text: cut the same way
    assert seen == [(8 * CHARS_PER_TOKEN, 8 * CHARS_PER_TOKEN), (8 * CHARS_PER_TOKEN,)]
