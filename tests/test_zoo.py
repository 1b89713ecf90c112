"""The model zoo's fast subset: three rows of ``benchmarks/zoo.py`` through every stage.

The full zoo (``benchmarks/results/zoo.md``) is too slow for the suite; these rows cover a
keyword-only forward with a raw LSTM tuple and a mel front-end, a Hugging Face encoder taking
(ids, mask), and a raw ``nn.GRU`` on float frames beside a ViT.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from _zoo_models import BY_NAME, ROWS
from _zoo_run import AGREEMENT, run_row

FAST = ("kwonly_cnn_lstm_mel", "bert_mel_gated", "vit_rawgru_frames_gated")


def test_zoo_has_enough_distinct_rows() -> None:
    assert len(ROWS) >= 24
    assert len(BY_NAME) == len(ROWS)


@pytest.mark.parametrize("name", [pytest.param(n, id=n) for n in FAST])
def test_zoo_row_exports_runs_and_quantizes(name: str, tmp_path: Path) -> None:
    rec = run_row(BY_NAME[name], tmp_path, tmp_path / "result.json", n_samples=16, threads=2, speed_check=False)
    stages = rec["stages"]
    assert stages["export"]["ok"], stages["export"]
    assert stages["export"]["parity_two_shapes"], stages["export"]["failed_checks"]
    assert stages["run"]["ok"], stages["run"]
    assert stages["run"]["fp32_vs_torch_max_abs"] < 1e-3
    quantize = stages["quantize"]
    assert quantize["ok"], quantize
    assert quantize["int8"], "no component became INT8"
    assert all(o["agreement"] >= AGREEMENT for o in quantize["outputs"]), quantize["outputs"]
    assert stages["mobile"]["ok"], stages["mobile"]
    assert 0 < stages["mobile"]["ep_share"]["NNAPI"] <= 1
