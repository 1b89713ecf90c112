"""``mmedge export --tokenizer``: a tokenizer folder in, a bundle that takes strings out."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from serving import serving

from mmedge.bundle import TextPreprocess, load_bundle
from mmedge.cli import main
from mmedge.runtime import Pipeline, read_samples
from mmedge.serve import ServeOptions, create_app

USER_MODEL = '''
import torch
from torch import nn


class Net(nn.Module):
    """Token ids and a mask as transformers name them, pooled in forward."""

    def __init__(self, vocab_size: int = 16, hidden: int = 6) -> None:
        super().__init__()
        self.text_encoder = nn.Embedding(vocab_size, hidden)
        self.image_encoder = nn.Sequential(nn.Conv2d(3, hidden, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(2 * hidden, 3)

    def forward(self, input_ids, attention_mask, image):
        m = attention_mask.unsqueeze(-1).float()
        text = (self.text_encoder(input_ids) * m).sum(1) / m.sum(1).clamp(min=1.0)
        return self.head(torch.cat([text, self.image_encoder(image)], dim=1))


class Segments(Net):
    """BERT's three inputs: segment ids beside the ids and the mask."""

    def __init__(self) -> None:
        super().__init__()
        self.text_encoder = Text()

    def forward(self, input_ids, attention_mask, token_type_ids, image):
        m = attention_mask.unsqueeze(-1).float()
        text = (self.text_encoder(input_ids, token_type_ids) * m).sum(1) / m.sum(1).clamp(min=1.0)
        return self.head(torch.cat([text, self.image_encoder(image)], dim=1))


class Bert(Net):
    """The text encoder takes the ids, the mask and the segment ids, as a BERT does."""

    def __init__(self) -> None:
        super().__init__()
        self.text_encoder = MaskedText()

    def forward(self, input_ids, attention_mask, token_type_ids, image):
        return self.head(torch.cat([self.text_encoder(input_ids, attention_mask, token_type_ids), self.image_encoder(image)], 1))


class MaskedText(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.words, self.segments = nn.Embedding(16, 6), nn.Embedding(2, 6)
        self.mix = nn.Linear(6, 6)

    def forward(self, ids, mask, segments):
        m = mask.unsqueeze(-1).float()
        return (self.mix(self.words(ids) + self.segments(segments)) * m).sum(1) / m.sum(1).clamp(min=1.0)


class Text(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.words, self.segments = nn.Embedding(16, 6), nn.Embedding(2, 6)

    def forward(self, ids, segments):
        return self.words(ids) + self.segments(segments)
'''

CONFIG = """
[inputs.input_ids]
shape = [2, 6]
dtype = "int64"
high = 16
modality = "text"

[inputs.attention_mask]
shape = [2, 6]
dtype = "int64"
high = 2

[inputs.image]
shape = [2, 3, 8, 8]
modality = "image"
"""

WORDS = ("a", "bright", "dark", "cat", "dog", "sky", "sea", "red", "blue")


def _save_pretrained_folder(folder: Path) -> None:
    """What a fast tokenizer's save_pretrained writes: tokenizer.json without padding, the pad token beside it."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    vocab = {t: i for i, t in enumerate(("[PAD]", "[UNK]", "[CLS]", "[SEP]", *WORDS))}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    folder.mkdir()
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"pad_token": "[PAD]", "model_max_length": 6}))


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "tokmodels.py").write_text(USER_MODEL, encoding="utf-8")
    (tmp_path / "export.toml").write_text(CONFIG, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    _save_pretrained_folder(tmp_path / "tok")
    return tmp_path


def _export(project: Path, *extra: str, model: str = "Net") -> int:
    config = str(project / "export.toml")
    return main(["export", "--model", f"tokmodels:{model}", "--config", config, "--out", str(project / "b"), *extra])


def test_a_tokenizer_folder_makes_the_bundle_take_strings(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(0)
    assert _export(project, "--tokenizer", str(project / "tok")) == 0
    err = capsys.readouterr().err
    assert '--calibration samples.jsonl   # per line: {"input_ids": "a sentence", "image": [...]}' in err
    assert "-i input_ids='a sentence' -i image=image.npy" in err  # no preprocessing for the image: a tensor
    bundle = load_bundle(project / "b")
    pre = bundle.manifest.input("input_ids").preprocess
    assert isinstance(pre, TextPreprocess)
    assert (pre.tokenizer_file, pre.pad_id, pre.mask_input) == ("tokenizer.json", 0, "attention_mask")
    image = np.zeros((1, 3, 8, 8), np.float32)
    with Pipeline(project / "b", "cpu") as pipe:
        from_strings = pipe.run({"input_ids": ["a bright cat"], "image": image})["logits"]
        ids = np.array([[2, 4, 5, 7, 3, 0]], np.int64)  # [CLS] a bright cat [SEP] [PAD]
        mask = np.array([[1, 1, 1, 1, 1, 0]], np.int64)
        ready = pipe.run({"input_ids": ids, "attention_mask": mask, "image": image})["logits"]
    np.testing.assert_allclose(from_strings, ready, atol=1e-6)


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("missing", "no such file there"),
        ("empty-folder", "no tokenizer.json there"),
        ("not-json", "is not a tokenizers JSON file"),
    ],
)
def test_a_bad_tokenizer_is_a_typed_error(
    project: Path, capsys: pytest.CaptureFixture[str], where: str, message: str
) -> None:
    (project / "empty-folder").mkdir()
    (project / "not-json").mkdir()
    (project / "not-json" / "tokenizer.json").write_text("{not json")
    path = project / (where if where != "missing" else "nowhere.json")
    assert _export(project, "--tokenizer", str(path)) == 1
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    assert not (project / "b").exists()


def test_the_mask_s_hint_names_the_tokenizer_and_goes_once_it_is_given(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = project / "export.toml"
    config.write_text(CONFIG.replace("high = 2\n", 'high = 2\nmodality = "text"\n'), encoding="utf-8")
    assert _export(project, "--json") == 0
    warnings = json.loads(capsys.readouterr().out)["warnings"]
    (mask,) = [w for w in warnings if w.startswith("input 'attention_mask'")]
    assert "export with a tokenizer (--tokenizer, tokenizer=), which fills it from the same strings" in mask
    assert _export(project, "--json", "--force", "--tokenizer", str(project / "tok")) == 0
    warnings = json.loads(capsys.readouterr().out)["warnings"]
    assert not [w for w in warnings if "no preprocessing metadata" in w and "image" not in w]


@pytest.fixture
def segments(project: Path) -> Path:
    """The project's BERT-style model (ids, mask, segment ids, image) exported with the tokenizer to ``b``."""
    config = project / "export.toml"
    config.write_text(
        CONFIG + '\n[inputs.token_type_ids]\nshape = [2, 6]\ndtype = "int64"\nhigh = 2\n', encoding="utf-8"
    )
    torch.manual_seed(0)
    assert _export(project, "--tokenizer", str(project / "tok"), model="Segments") == 0
    return project


def test_segment_ids_default_to_zero_at_the_ids_length(segments: Path) -> None:
    project = segments
    spec = load_bundle(project / "b").manifest.input("token_type_ids")
    assert (spec.modality, spec.default) == ("other", 0.0)
    image = np.zeros((1, 3, 8, 8), np.float32)
    ids = np.array([[2, 4, 7, 3]], np.int64)  # 4 tokens, not the example's 6
    mask = np.ones_like(ids)
    with Pipeline(project / "b", "cpu") as pipe:
        omitted = pipe.run({"input_ids": ids, "attention_mask": mask, "image": image})["logits"]
        zeros = pipe.run({"input_ids": ids, "attention_mask": mask, "token_type_ids": 0 * ids, "image": image})
        from_strings = pipe.run({"input_ids": ["a cat"], "image": image})["logits"]
    np.testing.assert_allclose(omitted, zeros["logits"], atol=1e-6)
    np.testing.assert_allclose(from_strings, omitted, atol=1e-5)  # padding is masked out


def test_mmedge_run_takes_a_text_pair_as_the_text_given_twice(
    segments: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = tmp_path / "image.npy"
    np.save(image, np.zeros((1, 3, 8, 8), np.float32))
    with Pipeline(segments / "b", "cpu") as pipe:
        logits = pipe.run({"input_ids": ("a cat", "blue sky"), "image": np.load(image)})["logits"][0]
    args = ["-i", "input_ids=a cat", "-i", "input_ids=blue sky", "-i", f"image={image}", "--json", "--top-k", "1"]
    assert main(["run", str(segments / "b"), *args]) == 0
    (top,) = json.loads(capsys.readouterr().out)["outputs"]["logits"]["top_k"][0]
    probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    assert top["label"].endswith(str(int(np.argmax(probs))))
    assert top["probability"] == pytest.approx(float(probs.max()), rel=1e-5)


def test_a_text_pair_gets_the_tokenizer_s_segment_ids(segments: Path) -> None:
    from tokenizers import Tokenizer

    project = segments
    assert load_bundle(project / "b").manifest.input("input_ids").preprocess.type_ids_input == "token_type_ids"
    reference = Tokenizer.from_file(str(project / "tok" / "tokenizer.json"))
    reference.enable_truncation(6)
    reference.enable_padding(length=6, pad_id=0)
    encoding = reference.encode("a cat", "blue sky")  # 7 tokens: truncated longest-first to 6
    assert 1 in encoding.type_ids
    ready = {
        "input_ids": np.array([encoding.ids]),
        "attention_mask": np.array([encoding.attention_mask]),
        "token_type_ids": np.array([encoding.type_ids]),
    }
    image = np.zeros((1, 3, 8, 8), np.float32)
    with Pipeline(project / "b", "cpu") as pipe:
        want = pipe.run({**ready, "image": image})["logits"]
        as_tuple = pipe.run({"input_ids": ("a cat", "blue sky"), "image": image})["logits"]
        as_dict = pipe.run({"input_ids": [{"text": "a cat", "text_pair": "blue sky"}], "image": image})["logits"]
        no_segments = pipe.run({**ready, "token_type_ids": 0 * ready["token_type_ids"], "image": image})["logits"]
    np.testing.assert_allclose(as_tuple, want, atol=1e-6)
    np.testing.assert_allclose(as_dict, want, atol=1e-6)
    samples = project / "pairs.jsonl"  # as quantize --calibration and bench --inputs read them
    samples.write_text(
        json.dumps({"input_ids": {"text": "a cat", "text_pair": "blue sky"}, "image": image.tolist()}) + "\n",
        encoding="utf-8",
    )
    (read,) = read_samples(samples, project / "b")
    np.testing.assert_array_equal(read["token_type_ids"], ready["token_type_ids"])
    pair = {"text": "a cat", "text_pair": "blue sky"}
    with Pipeline(project / "b", "cpu") as pipe, serving(create_app(pipe, ServeOptions())) as url:
        body = {"inputs": {"input_ids": [pair, pair], "image": np.zeros((2, 3, 8, 8)).tolist()}}
        response = httpx.post(f"{url}/v1/predict", json=body, timeout=30)
        assert response.status_code == 200, response.text
        served = np.asarray(response.json()["outputs"]["logits"], np.float32)
        assert "text_pair" in json.dumps(httpx.get(f"{url}/openapi.json", timeout=30).json())
        body["inputs"]["input_ids"] = [{"text": "a cat", "pair": "blue sky"}, pair]  # a misspelt key
        refused = httpx.post(f"{url}/v1/predict", json=body, timeout=30)
        assert refused.status_code == 422
        assert '"text_pair"' in refused.json()["detail"]
    np.testing.assert_allclose(served, np.repeat(want, 2, axis=0), atol=1e-5)
    assert not np.allclose(no_segments, want, atol=1e-4)  # the segment ids reach the model


def test_a_text_encoder_taking_the_mask_and_segment_ids_is_split_whole(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The mask and segment ids are "other" inputs the runtime derives, yet they feed the text encoder."""
    config = project / "export.toml"
    config.write_text(
        CONFIG + '\n[inputs.token_type_ids]\nshape = [2, 6]\ndtype = "int64"\nhigh = 2\n', encoding="utf-8"
    )
    assert _export(project, "--json", "--tokenizer", str(project / "tok"), model="Bert") == 0
    warnings = json.loads(capsys.readouterr().out)["warnings"]
    assert not [w for w in warnings if "has the example length" in w]  # derived at the text's length: no note
    manifest = load_bundle(project / "b").manifest
    assert [c.name for c in manifest.components] == ["text_encoder", "image_encoder", "fusion_head"]
    assert {t.name for t in manifest.component("text_encoder").inputs} == {
        "input_ids",
        "attention_mask",
        "token_type_ids",
    }
    assert manifest.input("attention_mask").modality == "other"  # still derived from the strings


def test_the_config_names_the_tokenizer_relative_to_itself(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (project / "export.toml").write_text(CONFIG + '\n[export]\ntokenizer = "tok"\n', encoding="utf-8")
    monkeypatch.chdir(project.parent)  # not the config's folder
    assert _export(project) == 0
    assert load_bundle(project / "b").manifest.input("input_ids").preprocess.tokenizer_file == "tokenizer.json"


def test_a_truncation_length_other_than_the_example_s_is_said(project: Path) -> None:
    from tokenizers import Tokenizer

    from mmedge.export._hf_tokenizer import text_setup

    tok = Tokenizer.from_file(str(project / "tok" / "tokenizer.json"))
    tok.enable_truncation(4)  # as a tokenizer.json saved with truncation keeps it
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    inputs = {"input_ids": torch.zeros(2, 6, dtype=torch.int64), "image": torch.zeros(2, 3, 8, 8)}
    setup = text_setup(tok, {}, {"input_ids": "text"}, inputs)
    assert setup.preprocess["input_ids"].max_length == 4
    (note,) = setup.notes
    assert "padded or cut to 4 tokens, the tokenizer's truncation length (the example has 6)" in note
    tok.enable_truncation(6)
    assert text_setup(tok, {}, {"input_ids": "text"}, inputs).notes == ()


def test_a_list_of_tokenizers_is_refused(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "export.toml").write_text(CONFIG + '\n[export]\ntokenizer = ["tok", "tok"]\n', encoding="utf-8")
    assert _export(project) != 0
    assert "give one tokenizer.json or folder" in capsys.readouterr().err
