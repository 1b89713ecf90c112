"""Export of models whose encoders are transformers modules, with the tokenizer in the bundle."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from hf._models import IMAGE_SIZE, TEXT_LENGTH, Exported, bert_tokenizer, encode

from mmedge.bundle import RAW_INPUTS, Edge, TextPreprocess, load_bundle
from mmedge.errors import BundleError, ExportError, InputError
from mmedge.runtime import Pipeline

PARITY_ATOL = 1e-4
OTHER_TEXTS = [
    "the dogs sleep on a red sofa",
    "a photo",
    "zebra xylophone quantum",  # unknown words: [UNK]
    "a photo of a red circle and a blue square near the house on a sunny beach",  # truncated
]


def _images(batch: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, 3, IMAGE_SIZE, IMAGE_SIZE)).astype(np.float32)


def _torch(model: torch.nn.Module, inputs: dict[str, object]) -> dict[str, np.ndarray]:
    with torch.no_grad():
        out = model(**{k: torch.as_tensor(v) for k, v in inputs.items()})
    return {k: v.numpy() for k, v in out.items()} if isinstance(out, dict) else {"logits": out.numpy()}


@pytest.mark.slow
def test_bert_resnet_manifest_and_parity(bert_export: Exported) -> None:
    result = bert_export.result
    m = result.manifest
    assert all(row.passed and row.max_abs_error <= PARITY_ATOL for row in result.verification)
    assert set(result.exporters) == {"text_encoder", "image_encoder", "fusion_head"}
    ids, mask = m.input("input_ids"), m.input("attention_mask")
    assert (ids.modality, ids.shape, mask.modality, mask.shape) == ("text", ("batch", "seq"), "other", ("batch", "seq"))
    assert ids.preprocess == TextPreprocess(
        max_length=TEXT_LENGTH,
        pad_id=0,
        tokenizer_file="tokenizer.json",
        lowercase=False,
        mask_input="attention_mask",
    )
    assert m.asset("tokenizer").file == "tokenizer.json"
    assert Edge(RAW_INPUTS, "attention_mask", "text_encoder", "attention_mask") in m.wiring
    assert [t.name for t in m.component("text_encoder").inputs] == ["input_ids", "attention_mask"]
    # a third shape, independent of the exporter's own checks: batch 4, sequence 7
    feeds = {**{k: v.numpy() for k, v in encode(bert_export.hf, OTHER_TEXTS, 7).items()}, "image": _images(4, 3)}
    with Pipeline(result.path, providers="cpu") as pipe:
        got = pipe.run(feeds)["logits"]
    np.testing.assert_allclose(got, _torch(bert_export.model, feeds)["logits"], atol=PARITY_ATOL, rtol=1e-3)


@pytest.mark.slow
def test_strings_give_the_hf_tokenizers_ids_and_outputs(bert_export: Exported) -> None:
    from mmedge.runtime.preprocess import prepare_text
    from mmedge.runtime.text import load_tokenizer

    bundle = load_bundle(bert_export.path)
    spec = bundle.manifest.input("input_ids")
    text = prepare_text(spec, OTHER_TEXTS, lambda: load_tokenizer(bundle, spec))
    ids, mask = text.ids, text.mask
    reference = encode(bert_export.hf, OTHER_TEXTS)
    np.testing.assert_array_equal(ids, reference["input_ids"].numpy())
    np.testing.assert_array_equal(mask, reference["attention_mask"].numpy())
    assert mask[3].all()  # the long text is truncated with [SEP] kept, as the HF tokenizer does
    image = _images(len(OTHER_TEXTS), 4)
    with Pipeline(bert_export.path, providers="cpu") as pipe:
        from_strings = pipe.run({"text": OTHER_TEXTS, "image": image})["logits"]
        from_ids = pipe.run({**{k: v.numpy() for k, v in reference.items()}, "image": image})["logits"]
        np.testing.assert_array_equal(from_strings, from_ids)
        expected = _torch(bert_export.model, {**reference, "image": image})["logits"]
        np.testing.assert_allclose(from_strings, expected, atol=PARITY_ATOL, rtol=1e-3)
        one = pipe.encode("text", "a photo")["text_features"]
        np.testing.assert_allclose(one, pipe.encode("text", ["a photo", "two dogs"])["text_features"][:1], atol=1e-6)
        with pytest.raises(InputError, match="derived when 'input_ids' is given as strings"):
            pipe.run({"input_ids": reference["input_ids"].numpy(), "image": image})


@pytest.mark.slow
def test_clip_dual_encoder_split_and_parity(clip_export: Exported) -> None:
    result = clip_export.result
    m = result.manifest
    assert all(row.passed and row.max_abs_error <= PARITY_ATOL for row in result.verification)
    assert [c.name for c in m.components] == ["text_encoder", "image_encoder", "fusion_head"]
    assert [(o.name, o.kind) for o in m.outputs] == [("logits_per_image", "scores")]
    assert m.input("pixel_values").preprocess.size == (IMAGE_SIZE, IMAGE_SIZE)
    assert m.input("input_ids").preprocess.pad_id == 0  # from the transformers tokenizer's pad_token_id
    texts = ["a photo of a red circle", "two dogs in the park", "a bowl of fruit"]
    image = _images(3, 5)
    reference = {**encode(clip_export.hf, texts), "pixel_values": torch.from_numpy(image)}
    with torch.no_grad():  # the wrapper is CLIPModel's own logits_per_image
        expected = clip_export.clip(**reference).logits_per_image.numpy()
    np.testing.assert_allclose(_torch(clip_export.model, reference)["logits_per_image"], expected, atol=1e-6)
    with Pipeline(result.path, providers="cpu") as pipe:
        got = pipe.run({"text": texts, "image": image})["logits_per_image"]
        one = pipe.run({"text": texts, "image": image[:1]})["logits_per_image"]  # zero-shot: 1 image, 3 labels
    np.testing.assert_allclose(got, expected, atol=PARITY_ATOL, rtol=1e-3)
    assert got.shape == (3, 3)
    np.testing.assert_allclose(one, expected[:1], atol=PARITY_ATOL, rtol=1e-3)
    assert {i.name: i.shape[0] for i in m.inputs if i.name != "attention_mask"} == {
        "input_ids": "text_batch",
        "pixel_values": "image_batch",
    }


@pytest.mark.slow
def test_runtime_takes_strings_without_transformers_or_torch(bert_export: Exported) -> None:
    script = textwrap.dedent(
        f"""
        import json, sys
        sys.modules["transformers"] = None  # any import of it fails
        sys.modules["torch"] = None
        import numpy as np
        from mmedge.runtime import Pipeline
        image = np.zeros(({IMAGE_SIZE}, {IMAGE_SIZE}, 3), np.uint8)
        with Pipeline({str(bert_export.path)!r}, providers="cpu") as pipe:
            out = pipe.run({{"text": ["a photo", "two dogs playing"], "image": [image, image]}})
        print(json.dumps({{"shape": list(out["logits"].shape), "finite": bool(np.isfinite(out["logits"]).all())}}))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {
        "shape": [2, len(bert_export.model.labels)],
        "finite": True,
    }


@pytest.mark.parametrize(
    ("tokenizer", "match"),
    [
        pytest.param(object(), "tokenizers.Tokenizer or a transformers fast tokenizer", id="not-a-tokenizer"),
        pytest.param("no-padding", "has no padding id", id="no-pad-id"),
    ],
)
def test_tokenizer_errors(tokenizer: object, match: str) -> None:
    from mmedge.export._hf_tokenizer import text_setup

    if tokenizer == "no-padding":
        tokenizer = bert_tokenizer()
        tokenizer.no_padding()
    inputs = {"input_ids": torch.ones(1, 4, dtype=torch.int64), "attention_mask": torch.ones(1, 4, dtype=torch.int64)}
    with pytest.raises(ExportError, match=match):
        text_setup(tokenizer, {}, {}, inputs)


def test_mask_input_must_name_an_input(tiny_bundle: Path) -> None:
    path = tiny_bundle / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["inputs"][0]["preprocess"]["mask_input"] = "attention_mask"
    path.write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="mask_input 'attention_mask' is not an input of the bundle"):
        load_bundle(tiny_bundle)
