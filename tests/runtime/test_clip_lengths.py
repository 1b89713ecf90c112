"""Audio recipes that keep each clip's length (``AudioPreprocess(pad=False)``), for encoders that pool
over time without a mask (wav2vec2-style): zero padding to ``max_seconds`` would change what they
compute for every shorter clip, so a clip runs at its own length and a batch of mixed lengths runs
clip by clip, each giving what it gives alone (and what PyTorch gives on the unpadded clip)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from mmedge.bundle import AudioPreprocess
from mmedge.errors import InputError
from mmedge.export import export_model
from mmedge.runtime import Audio, Pipeline

RATE = 16000


class _Pooled(nn.Module):
    """Conv features mean-pooled over time: every padded frame moves the mean."""

    def __init__(self) -> None:
        super().__init__()
        self.audio_encoder = nn.Sequential(nn.Conv1d(1, 8, 400, 160), nn.GELU())
        self.head = nn.Linear(8, 3)

    def forward(self, input_values: Tensor) -> Tensor:
        return self.head(self.audio_encoder(input_values[:, None]).mean(dim=-1))


def _clip(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.4 * np.sin(2 * np.pi * (200 + 100 * seed) * t) + 0.05 * rng.normal(size=t.size)).astype(np.float32)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path, Path]:
    torch.manual_seed(0)
    model = _Pooled().eval()
    out = tmp_path_factory.mktemp("clips")
    example = {"input_values": torch.randn(2, 4 * RATE) * 0.1}
    paths = []
    for pad in (False, True):
        pre = AudioPreprocess(sample_rate=RATE, max_seconds=4.0, pad=pad)
        paths.append(export_model(model, example, preprocess={"input_values": pre}, out=out / f"pad-{pad}").path)
    return model, paths[0], paths[1]


def _torch(model: nn.Module, clip: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(clip)[None]).numpy()


def test_a_clip_runs_at_its_own_length_and_a_mixed_batch_clip_by_clip(bundles: tuple[nn.Module, Path, Path]) -> None:
    model, kept, _ = bundles
    clips = [_clip(1.5, 0), _clip(6.0, 1), _clip(2.5, 2)]  # the 6-s clip is cut at max_seconds (4 s)
    with Pipeline(kept) as pipeline:
        alone = [pipeline.run({"input_values": Audio(c, RATE)})["logits"] for c in clips]
        batch = pipeline.run({"input_values": [Audio(c, RATE) for c in clips]})["logits"]
    np.testing.assert_allclose(batch, np.concatenate(alone), atol=1e-6)
    for clip, got in zip(clips, alone, strict=True):
        np.testing.assert_allclose(got, _torch(model, clip[: 4 * RATE]), atol=1e-5)


def test_padded_recipes_pad_and_differ_from_the_unpadded_clip(bundles: tuple[nn.Module, Path, Path]) -> None:
    """What keeping lengths fixes: the padded bundle computes the model on 1.5 s of sound and 2.5 s of zeros."""
    model, _, padded = bundles
    clip = _clip(1.5, 0)
    with Pipeline(padded) as pipeline:
        got = pipeline.run({"input_values": Audio(clip, RATE)})["logits"]
    np.testing.assert_allclose(got, _torch(model, np.pad(clip, (0, int(2.5 * RATE)))), atol=1e-5)
    assert np.abs(got - _torch(model, clip)).max() > 1e-2


def test_encode_refuses_a_batch_of_mixed_lengths_and_names_the_way_out(bundles: tuple[nn.Module, Path, Path]) -> None:
    _, kept, _ = bundles
    with Pipeline(kept) as pipeline:
        same = pipeline.encode("audio", [Audio(_clip(1.0, 0), RATE), Audio(_clip(1.0, 1), RATE)])
        assert next(iter(same.values())).shape[0] == 2  # one length: one batch
        with pytest.raises(InputError, match=r"keep their own lengths .* encode\(\) them one at a time"):
            pipeline.encode("audio", [Audio(_clip(1.0, 0), RATE), Audio(_clip(2.0, 1), RATE)])


def test_quantize_calibrates_and_measures_on_clips_of_their_own_lengths(
    bundles: tuple[nn.Module, Path, Path], tmp_path: Path
) -> None:
    """Samples of different lengths (each a batch of one, at its length): the report compares them
    sample by sample instead of stacking rows of different widths."""
    from mmedge.quantize import quantize_bundle
    from mmedge.runtime import input_preparer

    _, kept, _ = bundles
    prepare = input_preparer(kept)
    samples = [prepare({"input_values": Audio(_clip(1.0 + 0.3 * i, i % 4), RATE)}) for i in range(10)]
    assert len({s["input_values"].shape for s in samples}) == 10
    report = quantize_bundle(kept, tmp_path / "int8", calibration=samples[:6], holdout=samples[6:])
    assert report.agreement >= 0.99
    if report.whole_graph is not None:  # OpenVINO installed: one graph would compile a shape per clip length
        assert "keeps each clip's length" in report.whole_graph.why
        assert not report.whole_graph.chosen
        assert report.whole_graph.timing.rounds == 0  # not timed: it could not be deployed
    assert all(o.min_cosine > 0.99 for c in report.components for o in c.outputs)


def test_bench_times_the_largest_of_clips_of_different_lengths(
    bundles: tuple[nn.Module, Path, Path], tmp_path: Path
) -> None:
    """A samples file of clips at their own lengths cannot be one batch: the latency is the longest clip's."""
    import json

    import soundfile

    from mmedge.bench import bench

    _, kept, _ = bundles
    lines = []
    for i, seconds in enumerate((1.0, 3.0, 2.0)):
        soundfile.write(tmp_path / f"clip{i}.wav", _clip(seconds, i), RATE)
        lines.append(json.dumps({"input_values": f"clip{i}.wav"}))
    (tmp_path / "samples.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    report = bench(kept, inputs=tmp_path / "samples.jsonl", iterations=3, warmup=1, batch_sizes=(1,), profile=False)
    assert report.settings.inputs.endswith("the largest of 3 samples of different shapes (line 2)")
    with pytest.raises(InputError, match="samples differ in shape after preprocessing"):
        bench(kept, inputs=tmp_path / "samples.jsonl", agreement_inputs=tmp_path / "samples.jsonl", torch_model="x")


def test_a_mobile_bundle_fixes_the_length_and_says_clips_are_padded_there(
    bundles: tuple[nn.Module, Path, Path], tmp_path: Path
) -> None:
    from mmedge.mobile import package_mobile

    _, kept, _ = bundles
    report = package_mobile(kept, tmp_path / "mobile", target="android")
    assert report.fixed_dims["samples"] == 4 * RATE
    assert "clips are padded to it here" in report.fixed_dim_origin["samples"]
