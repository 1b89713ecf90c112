"""README.md runs as written: every fenced block and every command line in it, on small models.

Blocks and commands are read from README.md itself (nothing is copied here), so an edit that breaks
one fails here, and a new command or block that no test runs fails
``test_every_readme_command_and_block_is_exercised``. What is substituted, and why:

- the reference ``TriModalNet`` (ResNet-18; ~50 s to export on 2 cores) by ``my_pkg.tri:TinyTriModal``
  where the Python API block benchmarks against it, and its export line stops before the export
  itself (the name, checkpoint and options are resolved; the export path is the one the
  ``my_pkg.model:MyNet`` line runs in full, and ``tests/export/test_reference_models.py`` exports
  the reference models);
- ``--port 8000`` by ``--port 0 --json`` (a free port, announced), ``--host 0.0.0.0`` by loopback
  (tests listen on loopback only), and ``...`` by the inputs the command line before it gives.

The commands run in two working directories as a user would: ``mypkg/`` for the ``my_pkg``
lines (``export.toml`` and ``my.pt`` beside them), ``api/`` where the Python API block wrote
``bundle/``, ``bundle-int8/`` and ``captioner/`` from a model with text, image and audio
preprocessing, which the ``run``, ``inspect``, ``mobile`` and ``serve`` lines then use.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import shutil
import ssl
import subprocess
import sys
import time
import tomllib
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from serving import serve_process

from mmedge.bundle import load_bundle
from mmedge.cli import main
from mmedge.errors import ProviderError
from mmedge.export import load_config
from mmedge.export._config import example_inputs
from mmedge.quantize import AccuracyWarning

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
KEY = "readme-test-key-0123456789"

MY_PKG_MODEL = '''
"""The user's model the README's commands name: forward(text, image), text through an nn.Embedding."""

import torch
from torch import nn


class TextEncoder(nn.Module):
    def __init__(self, vocab: int = 1000, dim: int = 16) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        return self.embed(text).mean(1)


class MyNet(nn.Module):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.text_encoder = TextEncoder()
        self.backbone = nn.Sequential(
            nn.Conv2d(3, 16, 7, stride=4),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(16 + 32, num_classes)

    def forward(self, text: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.text_encoder(text), self.backbone(image)], dim=1))
'''

TRI_MODEL = '''
"""The Python API block's model: text, image and audio encoders and a head, with the preprocessing,
vocabulary and labels a bundle records (strings, image and sound files work as inputs)."""

import torch
from torch import nn

from mmedge.bundle import AudioPreprocess, ImagePreprocess, TextPreprocess

VOCAB = ("<pad>", "<unk>", "a", "bright", "dark", "cat", "dog", "bird")
IMAGE_SIZE, SAMPLE_RATE, SECONDS = 32, 16000, 0.1


class TextEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(len(VOCAB), 8)

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        return self.embed(text).mean(1)


class AudioEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 8, 33, stride=8)
        self.pool = nn.AdaptiveAvgPool1d(1)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.pool(torch.relu(self.conv(audio.unsqueeze(1)))).flatten(1)


class TinyTriModal(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.vocab = VOCAB
        self.labels = ("cat", "dog", "bird")
        self.preprocess = {
            "text": TextPreprocess(max_length=8, pad_id=0, unk_id=1),
            "image": ImagePreprocess(size=(IMAGE_SIZE, IMAGE_SIZE)),
            "audio": AudioPreprocess(sample_rate=SAMPLE_RATE, max_seconds=SECONDS),
        }
        self.text_encoder = TextEncoder()
        self.image_encoder = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )
        self.audio_encoder = AudioEncoder()
        self.head = nn.Linear(24, len(self.labels))

    def forward(self, text: torch.Tensor, image: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        features = [self.text_encoder(text), self.image_encoder(image), self.audio_encoder(audio)]
        return self.head(torch.cat(features, dim=1))
'''

TINY_TRI = "my_pkg.tri:TinyTriModal"

# Every README command line, by the start that identifies it (a command no entry matches, or an
# entry that matches no command, fails the coverage test).
INSTALL_DEMO = "python3 -m venv .venv && .venv/bin/pip install -c constraints.txt"
INSTALL_TEST = "python3 -m venv .venv && .venv/bin/pip install -q"
EXPORT_MINE = "mmedge export --model my_pkg.model:MyNet"
EXPORT_REFERENCE = "mmedge export --model TriModalNet"
DOCTOR = "mmedge doctor --model my_pkg.model:MyNet"
QUANTIZE = "mmedge quantize bundle/"
RUN = "mmedge run bundle-int8/ -i image=cat.png -i audio=meow.wav"
RUN_PROVIDERS = "mmedge run bundle-int8/ -i image=cat.png ... --providers"
BENCH = "mmedge bench bundle-int8/"
MOBILE = "mmedge mobile bundle-int8/"
INSPECT = "mmedge inspect bundle-int8/"
SERVE = "mmedge serve bundle-int8/ --port"
SERVE_OFF_LOOPBACK = "MMEDGE_API_KEY=$KEY mmedge serve bundle-int8/ --host"
COMMANDS = (
    INSTALL_DEMO,
    INSTALL_TEST,
    EXPORT_MINE,
    EXPORT_REFERENCE,
    DOCTOR,
    QUANTIZE,
    RUN,
    RUN_PROVIDERS,
    BENCH,
    MOBILE,
    INSPECT,
    SERVE,
    SERVE_OFF_LOOPBACK,
)
TOML_AFTER = "`export.toml` describes"
PYTHON_AFTER = "## Python API"
TREE_AFTER = "## The bundle"


# ---------------------------------------------------------------------------------------------
# reading README.md


def fenced_blocks() -> list[tuple[str, int, str]]:
    """(language, offset in README.md, body) of every fenced block."""
    text = README.read_text(encoding="utf-8")
    return [(m.group(1), m.start(), m.group(2)) for m in FENCE.finditer(text)]


def readme_block(language: str, after: str) -> str:
    """The first ```language block of README.md that follows the text ``after``."""
    start = README.read_text(encoding="utf-8").index(after)
    found = [body for lang, at, body in fenced_blocks() if lang == language and at > start]
    assert found, f"README.md has no ```{language} block after {after!r}"
    return found[0]


def command_lines() -> list[str]:
    """Every command in README.md's bash blocks: continuation lines joined, comments dropped."""
    commands = []
    for language, _, body in fenced_blocks():
        if language != "bash":
            continue
        current = ""
        for raw in body.splitlines():
            line = raw.strip()
            if not current and (not line or line.startswith("#")):
                continue
            current = f"{current} {line.removesuffix(chr(92)).strip()}".strip()
            if not line.endswith("\\"):
                commands.append(current)
                current = ""
    return commands


def readme_command(prefix: str) -> tuple[dict[str, str], list[str]]:
    """(environment assignments, arguments after ``mmedge``) of the README command starting with ``prefix``."""
    for line in command_lines():
        if line.startswith(prefix):
            words = shlex.split(line, comments=True)
            env = {}
            while "=" in words[0] and words[0] != "mmedge":
                name, _, value = words.pop(0).partition("=")
                env[name] = os.path.expandvars(value)
            assert words[0] == "mmedge", line
            return env, words[1:]
    raise AssertionError(f"README.md has no command line starting with {prefix!r}")


def substituted(argv: list[str], old: list[str], new: list[str]) -> list[str]:
    """``argv`` with the run of words ``old`` replaced by ``new`` (which must be there)."""
    for i in range(len(argv) - len(old) + 1):
        if argv[i : i + len(old)] == old:
            return [*argv[:i], *new, *argv[i + len(old) :]]
    raise AssertionError(f"{old} is not in the README command {argv}")


# ---------------------------------------------------------------------------------------------
# the working directories


@contextmanager
def working_in(folder: Path) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        yield


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A root with ``my_pkg`` (importable here and by the benchmark's worker processes), a
    ``mypkg/`` working directory with ``export.toml`` and ``my.pt``, and an empty ``api/``."""
    root = tmp_path_factory.mktemp("readme")
    package = root / "my_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("", encoding="utf-8")
    (package / "model.py").write_text(MY_PKG_MODEL, encoding="utf-8")
    (package / "tri.py").write_text(TRI_MODEL, encoding="utf-8")
    mine, api = root / "mypkg", root / "api"
    mine.mkdir()
    api.mkdir()
    (mine / "export.toml").write_text(readme_block("toml", TOML_AFTER), encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(root))
        mp.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])))
        mp.setenv("KEY", KEY)
        from my_pkg.model import MyNet

        torch.manual_seed(0)
        torch.save(MyNet(**load_config(mine / "export.toml").model).state_dict(), mine / "my.pt")
        yield root
        for name in [m for m in sys.modules if m == "my_pkg" or m.startswith("my_pkg.")]:
            del sys.modules[name]


@pytest.fixture(scope="module")
def mypkg(project: Path) -> Path:
    """``mypkg/`` after the README's export line for ``my_pkg.model:MyNet`` ran there."""
    folder = project / "mypkg"
    with working_in(folder):
        _, argv = readme_command(EXPORT_MINE)
        assert main(argv) == 0
    return folder


def _write_image(path: Path, seed: int) -> None:
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def _write_sound(path: Path, seed: int) -> None:
    import soundfile

    wave = np.random.default_rng(seed).uniform(-0.5, 0.5, 3200).astype(np.float32)
    soundfile.write(str(path), wave, 16000)


@pytest.fixture(scope="module")
def api(project: Path) -> tuple[Path, dict]:
    """``api/`` after the Python API block ran there, and the block's variables."""
    from my_pkg.tri import IMAGE_SIZE, SAMPLE_RATE, SECONDS, VOCAB, TinyTriModal

    from mmedge.models import CaptionConfig, CaptionNet

    folder = project / "api"
    torch.manual_seed(0)
    model = TinyTriModal().eval()
    torch.save(model.state_dict(), folder / "ckpt.pt")
    for name, seed in (("dog.png", 1), ("cat.png", 2), ("street.png", 3)):
        _write_image(folder / name, seed)
    for name, seed in (("bark.wav", 4), ("meow.wav", 5)):
        _write_sound(folder / name, seed)
    rng = np.random.default_rng(0)

    def sample(seed: int) -> dict[str, np.ndarray]:
        r = np.random.default_rng(seed)
        return {
            "text": r.integers(2, len(VOCAB), (1, 8)).astype(np.int64),
            "image": r.standard_normal((1, 3, IMAGE_SIZE, IMAGE_SIZE)).astype(np.float32),
            "audio": r.uniform(-1, 1, (1, round(SAMPLE_RATE * SECONDS))).astype(np.float32),
        }

    first = sample(0)
    namespace = {
        "model": model,
        "t": torch.from_numpy(first["text"]),
        "x": torch.from_numpy(first["image"]),
        "a": torch.from_numpy(first["audio"]),
        "samples": [sample(i) for i in range(1, 13)],
        "heldout": [sample(i) for i in range(100, 106)],
        "y": [int(v) for v in rng.integers(0, 3, 6)],
        "img": rng.integers(0, 256, (40, 30, 3), dtype=np.uint8),
        "caption_model": CaptionNet(
            CaptionConfig(image_size=IMAGE_SIZE, channels=(8, 16), grid=2, feature_dim=16, embed_dim=8, hidden=16)
        ).eval(),
    }
    code = readme_block("python", PYTHON_AFTER)
    assert 'torch_model="TriModalNet"' in code
    code = code.replace('torch_model="TriModalNet"', f'torch_model="{TINY_TRI}"')
    with working_in(folder), warnings.catch_warnings():
        # an untrained model's near-tied logits can miss the 99% agreement target; the report says so
        warnings.simplefilter("ignore", AccuracyWarning)
        for statement in ast.parse(code).body:
            source = ast.get_source_segment(code, statement) or ""
            compiled = compile(ast.Module([statement], []), "README.md", "exec")
            if '"coreml"' in source and not _has_provider("CoreMLExecutionProvider"):
                # on this machine strict=True must fail loudly, naming the missing provider
                with pytest.raises(ProviderError, match=r"(?i)coreml"):
                    exec(compiled, namespace)
                continue
            exec(compiled, namespace)
    return folder, namespace


def _has_provider(name: str) -> bool:
    import onnxruntime

    return name in onnxruntime.get_available_providers()


# ---------------------------------------------------------------------------------------------
# coverage of the README


def test_every_readme_command_and_block_is_exercised() -> None:
    lines = command_lines()
    for line in lines:
        matches = [c for c in COMMANDS if line.startswith(c)]
        assert len(matches) == 1, f"README command {line!r} is run by no test here (or by several): {matches}"
    for command in COMMANDS:
        assert any(line.startswith(command) for line in lines), f"no README command starts with {command!r}"
    text = README.read_text(encoding="utf-8")
    covered = {
        ("toml", text.index(TOML_AFTER)),
        ("python", text.index(PYTHON_AFTER)),
        ("", text.index(TREE_AFTER)),
    }
    for language, at, body in fenced_blocks():
        if language == "bash":
            continue
        first_after = [anchor for lang, anchor in covered if lang == language and anchor < at]
        assert first_after, f"README ```{language} block {body[:60]!r} is run by no test here"
        anchor = max(first_after)
        assert not any(lang == language and anchor < other < at for lang, other, _ in fenced_blocks()), (
            f"README ```{language} block {body[:60]!r} is run by no test here (only the first after its heading is)"
        )


def test_install_commands_name_what_the_project_provides() -> None:
    """The install lines cannot run offline; what they name must exist: constraints, extras, the command."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    extras = set(pyproject["project"]["optional-dependencies"])
    assert "mmedge" in pyproject["project"]["scripts"]
    text = README.read_text(encoding="utf-8")
    named = {e for group in re.findall(r"mmedge\[([\w,]+)\]", text) for e in group.split(",")}
    named |= {e for group in re.findall(r'"\.\[([\w,]+)\]"', text) for e in group.split(",")}
    assert named, "README.md names no extras"
    assert named <= extras, f"README.md names extras pyproject.toml lacks: {sorted(named - extras)}"
    for prefix in (INSTALL_DEMO, INSTALL_TEST):
        line = next(c for c in command_lines() if c.startswith(prefix))
        for part in line.split("&&"):
            words = shlex.split(part)
            if "-c" in words:
                assert (ROOT / words[words.index("-c") + 1]).is_file()
            if words[0].endswith("bin/mmedge"):
                with pytest.raises(SystemExit) as done:
                    main([*words[1:], "--help"])
                assert done.value.code == 0


def test_bundle_tree_lists_what_export_writes(api: tuple[Path, dict]) -> None:
    folder, _ = api
    tree = readme_block("", TREE_AFTER)
    listed = re.findall(r"^\s+(\S+\.(?:json|onnx|txt))\b", tree, re.MULTILINE)
    assert "manifest.json" in listed
    written = {p.name for p in (folder / "bundle").iterdir()}
    assert set(listed) <= written, f"README's bundle tree lists files export did not write: {set(listed) - written}"


# ---------------------------------------------------------------------------------------------
# the my_pkg lines


def test_export_toml_block_gives_every_input(project: Path) -> None:
    from my_pkg.model import MyNet

    config = load_config(project / "mypkg" / "export.toml")
    tensors = example_inputs(MyNet(**config.model), config, batch=1)
    assert set(tensors) == set(config.inputs) == {"text", "image"}
    # no `high` in the README: the bound is the vocabulary of the nn.Embedding that reads the text
    assert config.inputs["text"].high is None
    assert int(tensors["text"].max()) < 1000


def test_export_command_runs_as_written(mypkg: Path) -> None:
    _, argv = readme_command(EXPORT_MINE)
    manifest = load_bundle(mypkg / "bundle").manifest
    assert {i.name for i in manifest.inputs} == {"text", "image"}
    assert {c.name for c in manifest.components} == {"text_encoder", "image_encoder", "fusion_head"}
    assert "--monolithic" in argv
    assert any(a.name == "monolithic" for a in manifest.assets)


def test_doctor_command_runs_as_written(mypkg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, argv = readme_command(DOCTOR)
    with working_in(mypkg):
        assert main(argv) == 0, capsys.readouterr().err
    assert "export should work" in capsys.readouterr().err


def _write_samples(folder: Path, n: int, seed: int) -> None:
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        np.savez(
            folder / f"{i:03d}.npz",
            text=rng.integers(0, 1000, (1, 16)).astype(np.int64),
            image=rng.standard_normal((1, 3, 224, 224)).astype(np.float32),
        )


def test_quantize_and_bench_commands_run_as_written(mypkg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write_samples(mypkg / "samples", 8, seed=0)
    _write_samples(mypkg / "heldout", 4, seed=1)
    with working_in(mypkg):
        assert main(readme_command(QUANTIZE)[1]) == 0, capsys.readouterr().err
        assert not (mypkg / "bundle-int8" / "model.onnx").exists()  # a deploy bundle: no monolithic baseline
        load_bundle(mypkg / "bundle-int8")
        _, bench = readme_command(BENCH)
        assert "--config" in bench  # MyNet needs num_classes: the PyTorch baseline is built from export.toml
        assert main([*bench, "--iterations", "3", "--warmup", "1", "--no-profile", "--json"]) == 0, (
            capsys.readouterr().err
        )
    variants = [v["name"] for v in json.loads(capsys.readouterr().out)["variants"]]
    assert variants == ["split INT8", "split FP32", "monolithic FP32", "PyTorch eager FP32"]  # via --compare bundle/
    assert (mypkg / "bench" / "bench.json").is_file()


def test_reference_model_export_line_resolves_the_model_and_checkpoint(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Everything the line names up to the export itself (which the my_pkg line runs in full)."""
    from mmedge.export import api as export_api
    from mmedge.models import TriModalNet

    folder = project / "reference"
    folder.mkdir(exist_ok=True)
    torch.manual_seed(1)
    weights = TriModalNet().state_dict()
    torch.save(weights, folder / "ckpt.pt")
    reached: dict = {}

    class ReachedError(Exception):
        pass

    def stop(model: torch.nn.Module, inputs: dict, encoders: object, **options: object) -> None:
        reached.update(model=model, inputs=inputs, options=options)
        raise ReachedError

    monkeypatch.setattr(export_api, "export_model", stop)
    _, argv = readme_command(EXPORT_REFERENCE)
    with working_in(folder), pytest.raises(ReachedError):
        main(argv)
    assert type(reached["model"]) is TriModalNet
    loaded = reached["model"].state_dict()
    assert loaded.keys() == weights.keys()
    assert all(torch.equal(value, weights[name]) for name, value in loaded.items())  # ckpt.pt was loaded
    assert set(reached["inputs"]) == {"text", "image", "audio"}
    assert reached["options"]["out"] == "bundle/"


# ---------------------------------------------------------------------------------------------
# the Python API block and the lines that use its bundles


def test_python_api_block_runs_as_written(api: tuple[Path, dict]) -> None:
    folder, ns = api
    assert ns["result"].verification
    assert ns["out"]
    assert all(np.isfinite(v).all() for v in ns["out"].values())
    embedding = ns["emb"]
    assert all(np.isfinite(v).all() for v in (embedding.values() if isinstance(embedding, dict) else [embedding]))
    assert ns["pipe"].providers_used
    bench_report = ns["report"]  # the block's last `report =` is the benchmark's
    assert [v.name for v in bench_report.variants] == [
        "split INT8",
        "split FP32",
        "monolithic FP32",  # from bundle/: the INT8 bundle carries no model.onnx
        "PyTorch eager FP32",
    ]
    assert not (folder / "bundle-int8" / "model.onnx").exists()
    assert len(ns["gen"].text) == 1
    assert isinstance(ns["gen"].text[0], str)


def test_run_commands_run_as_written(api: tuple[Path, dict], capsys: pytest.CaptureFixture[str]) -> None:
    folder, _ = api
    _, argv = readme_command(RUN)
    with working_in(folder):
        assert main([*argv, "--json"]) == 0, capsys.readouterr().err
        predicted = json.loads(capsys.readouterr().out)
        assert predicted
        _, with_providers = readme_command(RUN_PROVIDERS)
        inputs = argv[1 : argv.index("--json")] if "--json" in argv else argv[1:]
        given = with_providers[1 : with_providers.index("...")]
        assert inputs[: len(given)] == given
        argv = substituted(with_providers, [*given, "..."], inputs)
        code = main(argv)
    err = capsys.readouterr().err
    if _has_provider("CUDAExecutionProvider"):
        assert code == 0, err
    else:  # --strict: the image encoder's CUDA cannot be had here, and that is an error, not a quiet CPU run
        assert code == 1
        assert "ERROR" in err
        assert "CUDA" in err


def test_inspect_and_mobile_commands_run_as_written(api: tuple[Path, dict], capsys: pytest.CaptureFixture[str]) -> None:
    folder, _ = api
    with working_in(folder):
        assert main(readme_command(INSPECT)[1]) == 0, capsys.readouterr().err
        shown = capsys.readouterr()
        assert "image_encoder" in shown.out + shown.err
        assert main(readme_command(MOBILE)[1]) == 0, capsys.readouterr().err
    mobile = load_bundle(folder / "bundle-android")
    assert {c.format for c in mobile.manifest.components} == {"ort"}
    assert not (folder / "bundle-android" / "model.onnx").exists()


@contextmanager
def server(argv: list[str], env: dict[str, str], cwd: Path) -> Iterator[str]:
    """``mmedge serve`` as a process on loopback; yields the URL it announced; always stops it."""
    with serve_process(argv, env, cwd) as (announced, _):
        yield announced["url"]


def _post(url: str, files: dict, **options: object) -> httpx.Response:
    deadline = time.monotonic() + 30
    while True:
        try:
            return httpx.post(f"{url}/v1/predict", files=files, timeout=30, **options)
        except httpx.TransportError:
            assert time.monotonic() < deadline, "the server never answered"
            time.sleep(0.1)


def _request_files(folder: Path) -> dict:
    return {
        "image": ("cat.png", (folder / "cat.png").read_bytes(), "image/png"),
        "audio": ("meow.wav", (folder / "meow.wav").read_bytes(), "audio/wav"),
        "text": (None, "a bright cat"),
    }


def test_serve_command_runs_as_written(api: tuple[Path, dict]) -> None:
    folder, _ = api
    env, argv = readme_command(SERVE)
    argv = substituted(argv, ["--port", "8000"], ["--port", "0"])  # a free port
    with server(argv, env, folder) as url:
        assert url.startswith("http://127.0.0.1:")
        response = _post(url, _request_files(folder))
    assert response.status_code == 200, response.text
    assert "logits" in json.dumps(response.json())


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a certificate")
def test_off_loopback_serve_command_runs_as_written_on_loopback(api: tuple[Path, dict]) -> None:
    folder, _ = api
    env, argv = readme_command(SERVE_OFF_LOOPBACK)
    assert env == {"MMEDGE_API_KEY": KEY}
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "key.pem", "-out", "cert.pem"]
        + ["-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
        timeout=60,
        cwd=folder,
    )
    argv = substituted(argv, ["--host", "0.0.0.0"], ["--host", "127.0.0.1", "--port", "0"])  # loopback only
    with server(argv, env, folder) as url:
        assert url.startswith("https://127.0.0.1:")
        trusted = ssl.create_default_context(cafile=str(folder / "cert.pem"))
        host = {"Host": "api.example.com"}  # the --allowed-host name a client of the real server sends
        refused = _post(url, _request_files(folder), verify=trusted, headers=host)
        answered = _post(
            url, _request_files(folder), verify=trusted, headers={**host, "Authorization": f"Bearer {KEY}"}
        )
    assert refused.status_code == 401
    assert answered.status_code == 200, answered.text
