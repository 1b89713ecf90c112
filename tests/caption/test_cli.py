"""``mmedge run`` on a captioner prints the caption; generation never imports torch."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from PIL import Image
from torchfree import NO_TORCH, run_python

from mmedge.cli import main
from mmedge.runtime import Pipeline


@pytest.fixture(scope="module")
def image_files(trained, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("images")
    paths = [folder / f"{i}.png" for i in range(2)]
    for path, raw in zip(paths, trained.held_out.raw_images, strict=False):
        Image.fromarray(raw).save(path)
    return paths


@pytest.mark.slow
def test_run_prints_the_caption(trained, image_files: list[Path], capsys: pytest.CaptureFixture[str]) -> None:
    with Pipeline(trained.bundle, "cpu") as pipe:  # the caption the model gives (its accuracy: test_generate.py)
        (want,) = pipe.generate(trained.held_out.inputs["image"][:1]).text
    assert main(["run", str(trained.bundle), "-i", f"image={image_files[0]}"]) == 0
    err = capsys.readouterr().err
    assert f"caption: {want}\n" in err
    assert "decoder_step: CPU" in err


@pytest.mark.slow
def test_run_json_has_text_ids_and_scores_of_the_chosen_strategy(
    trained, image_files: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["-i", f"image={image_files[1]}", "--strategy", "beam", "--beam-size", "3", "--json"]
    assert main(["run", str(trained.bundle), *args]) == 0
    (caption,) = json.loads(capsys.readouterr().out)["captions"]
    with Pipeline(trained.bundle, "cpu") as pipe:
        want = pipe.generate(str(image_files[1]), strategy="beam", beam_size=3)
    assert caption["text"] == want.text[0]
    assert tuple(caption["token_ids"]) == want.token_ids[0]
    assert caption["score"] == pytest.approx(want.scores[0], abs=1e-6)


def test_generation_options_on_a_classifier_are_an_error(tiny_bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["-i", "text=dog", "-i", "image=x.png", "--strategy", "beam", "--max-len", "3"]
    assert main(["run", str(tiny_bundle), *args]) == 1
    assert "--strategy, --max-len only apply to bundles with a decoder" in capsys.readouterr().err


SCRIPT = NO_TORCH + textwrap.dedent(
    """
    import sys

    from mmedge.cli import main
    from mmedge.runtime import Pipeline

    bundle, image = sys.argv[1], sys.argv[2]
    with Pipeline(bundle, "cpu") as pipe:
        assert pipe.generate([image, image], strategy="beam", beam_size=2).text[0], "empty caption"
    assert main(["run", bundle, "-i", f"image={image}", "--json"]) == 0
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "torchaudio"))
    sys.exit(f"torch was imported: {loaded}" if loaded else 0)
    """
)


@pytest.mark.slow
def test_generation_never_imports_torch(trained, image_files: list[Path]) -> None:
    result = run_python(SCRIPT, str(trained.bundle), str(image_files[0]), timeout=120)
    assert result.returncode == 0, result.stderr
