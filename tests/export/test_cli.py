"""``mmedge export``: a user's model class + checkpoint + TOML config in, a verified bundle out."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from safetensors.torch import save_file

from mmedge.bundle import TextPreprocess, load_bundle, sha256_file
from mmedge.cli import main

USER_MODEL = '''
import torch
from torch import nn


class Net(nn.Module):
    """A user's own model: not from mmedge, built from keyword arguments."""

    def __init__(self, hidden: int = 4, vocab_size: int = 20) -> None:
        super().__init__()
        self.text_encoder = nn.Embedding(vocab_size, hidden)
        self.image_encoder = nn.Sequential(nn.Conv2d(3, hidden, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(2 * hidden, 3)
        self.labels = ("cat", "dog", "bird")

    def forward(self, text, image):
        return self.head(torch.cat([self.text_encoder(text).mean(1), self.image_encoder(image)], dim=1))
'''

CONFIG = """
[model]
hidden = 6

[inputs.text]
shape = [2, 5]
dtype = "int64"
high = 20
modality = "text"

[inputs.text.preprocess]
max_length = 5
pad_id = 0

[inputs.image]
shape = [2, 3, 8, 8]
modality = "image"

[encoders]
text = "text_encoder"
image = "image_encoder"
"""


@pytest.fixture
def user_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A package on sys.path with the user's model, a config, and a trained checkpoint."""
    (tmp_path / "usermodels.py").write_text(USER_MODEL, encoding="utf-8")
    (tmp_path / "export.toml").write_text(CONFIG, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    from usermodels import Net

    torch.manual_seed(123)
    trained = Net(hidden=6)
    save_file(trained.state_dict(), str(tmp_path / "trained.safetensors"))
    torch.save(trained.state_dict(), tmp_path / "trained.pt")
    return tmp_path


def test_export_user_model_with_checkpoint_and_config(user_project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = user_project / "bundle"
    ckpt = user_project / "trained.safetensors"
    args = [
        "export",
        "--model",
        "usermodels:Net",
        "--checkpoint",
        str(ckpt),
        "--config",
        str(user_project / "export.toml"),
    ]
    assert main([*args, "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["exporters"] == {"text_encoder": "dynamo", "image_encoder": "dynamo", "fusion_head": "dynamo"}
    assert summary["checkpoint"]["sha256"] == sha256_file(ckpt)
    assert summary["auto_split"] is False
    assert all(r["passed"] for r in summary["verification"])
    m = load_bundle(out).manifest
    assert (m.model.name, m.model.class_path, m.model.checkpoint_sha256) == ("Net", "usermodels:Net", sha256_file(ckpt))
    assert m.input("text").preprocess == TextPreprocess(max_length=5, pad_id=0)
    assert m.input("text").example_shape == (2, 5)
    assert m.outputs[0].labels == ("cat", "dog", "bird")
    # the bundle holds the checkpoint's weights, not the freshly initialised ones
    from usermodels import Net

    trained = Net(hidden=6)
    trained.load_state_dict(torch.load(user_project / "trained.pt", weights_only=True))
    ids = torch.randint(0, 20, (1, 9))
    session = ort.InferenceSession(str(out / "text_encoder.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"text": ids.numpy()})[0]
    np.testing.assert_allclose(got, trained.text_encoder(ids).detach().numpy(), atol=1e-6)


def test_notes_print_their_square_brackets(user_project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["export", "--model", "usermodels:Net", "--config", str(user_project / "export.toml"),
         "--out", str(user_project / "b")]
    )  # fmt: skip
    assert code == 0
    err = capsys.readouterr().err
    assert "add [inputs.image.preprocess] to export.toml: size = [8, 8]" in err  # not eaten as rich markup


def test_checkpoint_that_does_not_fit_fails_with_the_keys(
    user_project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the config builds hidden=6; a checkpoint of a hidden=4 model does not fit
    from usermodels import Net

    save_file(Net(hidden=4).state_dict(), str(user_project / "small.safetensors"))
    code = main(
        ["export", "--model", "usermodels:Net", "--checkpoint", str(user_project / "small.safetensors"),
         "--config", str(user_project / "export.toml"), "--out", str(user_project / "b")]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1
    assert "ERROR checkpoint small.safetensors does not fit Net" in err
    assert "text_encoder.weight: checkpoint [20, 4] vs model [20, 6]" in err
    assert not (user_project / "b").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(
            ["--model", "NoSuchNet"], "give package.module:ClassName, or one of TextImageNet", id="unknown-reference"
        ),
        pytest.param(["--model", "no_such_pkg.mod:Net"], "cannot import 'no_such_pkg.mod'", id="unknown-module"),
        pytest.param(["--model", "usermodels:Missing"], "usermodels has no class 'Missing'", id="unknown-class"),
        pytest.param(["--model", "usermodels:Net", "--encoder", "text"], "write MODALITY=PATH", id="bad-encoder-flag"),
        pytest.param(["--model", "usermodels:Net"], "Net has no example_inputs(batch) method", id="no-inputs"),
    ],
)
def test_cli_errors_are_one_line_with_the_fix(
    user_project: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert main(["export", *argv, "--out", str(user_project / "b")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ERROR ")
    assert message in err


def test_config_errors_name_the_section(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[model]\nimage_size = 32\n[exprot]\nopset = 18\n", encoding="utf-8")
    assert main(["export", "--model", "CaptionNet", "--config", str(config), "--out", str(tmp_path / "b")]) == 1
    assert "unknown top-level section ['exprot']" in capsys.readouterr().err


def test_reference_model_by_name_with_dataclass_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "caption.toml"
    config.write_text(
        textwrap.dedent(
            """
            [model]  # fields of CaptionConfig
            image_size = 32
            channels = [4, 8]
            grid = 2
            feature_dim = 16
            embed_dim = 8
            hidden = 16

            [export]
            batch = 1
            """
        ),
        encoding="utf-8",
    )
    out = tmp_path / "caption"
    argv = [
        "export",
        "--model",
        "CaptionNet",
        "--config",
        str(config),
        "--encoder",
        "image=image_encoder",
        "--teacher-forced",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "Verification vs PyTorch" in err
    assert f"wrote {out}" in " ".join(err.split())
    m = load_bundle(out).manifest
    assert [c.name for c in m.components] == ["image_encoder", "fusion_head"]
    assert m.input("image").example_shape == (1, 3, 32, 32)


def test_captioner_exports_as_a_generative_bundle(tmp_path: Path) -> None:
    config = tmp_path / "caption.toml"
    config.write_text("[model]\nimage_size = 32\nchannels = [4, 8]\nfeature_dim = 16\nembed_dim = 8\nhidden = 16\n")
    out = tmp_path / "captioner"
    assert main(["export", "--model", "CaptionNet", "--config", str(config), "--out", str(out)]) == 0
    m = load_bundle(out).manifest
    assert [c.name for c in m.components] == ["image_encoder", "decoder_init", "decoder_step"]
    assert m.generation is not None
