"""Contenders timed in processes of their own: quantize's one-graph workers start, time and stop;
a failure inside a worker comes back as its mmedge.errors type, a worker that dies as an error
with its stderr, and no worker is left running."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tinybundle import tiny_inputs

from mmedge.bundle import load_bundle, manifest_to_dict
from mmedge.errors import MMEdgeError, QuantizationError
from mmedge.process_timing import close_all, process_rounds, start_contenders
from mmedge.worker_process import WorkerProcess

pytest.importorskip("openvino")


def _configs(tiny_bundle: Path, tmp_path: Path) -> dict[str, dict[str, object]]:
    from mmedge.quantize import whole_graph

    manifest = load_bundle(tiny_bundle).manifest
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(manifest_to_dict(manifest)), encoding="utf-8")
    plan = {
        "manifest": str(path),
        "files": {c.name: str(tiny_bundle / c.file) for c in manifest.components},
        "components": [c.name for c in manifest.components],
        "threads": 1,
    }
    return {
        whole_graph.SPLIT: {**plan, "kind": whole_graph.SPLIT, "openvino": ["image_encoder"]},
        whole_graph.WHOLE: {**plan, "kind": whole_graph.WHOLE},
    }


def test_the_split_plan_and_the_one_graph_are_timed_in_processes_of_their_own(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    from mmedge.quantize.whole_graph import WORKER_MODULE

    configs = _configs(tiny_bundle, tmp_path)
    workers = start_contenders(WORKER_MODULE, configs, tiny_inputs(batch=1, seed=3), tmp_path)
    try:
        pids = {w._proc.pid for w in workers.values()}
        assert len(pids) == 2
        cold = process_rounds(workers, turns=3)
        busy = process_rounds(workers, runs=4, skip=1)
        for rounds in (cold, busy):
            for _ in range(2):
                times = next(rounds)
                assert set(times) == set(configs)
                assert all(np.isfinite(ms) and ms > 0 for ms in times.values())
    finally:
        close_all(workers)
    assert all(w._proc.poll() is not None for w in workers.values())


def test_a_contender_that_cannot_load_is_its_error_and_no_worker_is_left(
    tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mmedge import process_timing
    from mmedge.quantize.whole_graph import WHOLE, WORKER_MODULE

    started: list[WorkerProcess] = []

    class Recorded(WorkerProcess):
        def __init__(self, *args: object, **kwargs: object) -> None:
            started.append(self)
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(process_timing, "WorkerProcess", Recorded)
    configs = _configs(tiny_bundle, tmp_path)
    (tmp_path / "broken.onnx").write_bytes(b"not an onnx file")
    configs[WHOLE]["files"] = {**configs[WHOLE]["files"], "image_encoder": str(tmp_path / "broken.onnx")}  # type: ignore[dict-item]
    with pytest.raises(QuantizationError, match="the timing process of 'one graph': composing the components"):
        start_contenders(WORKER_MODULE, configs, tiny_inputs(batch=1, seed=3), tmp_path)
    assert len(started) == 2  # the split plan's worker started first, and was closed again
    assert all(w._proc.poll() is not None for w in started)


def test_a_worker_that_dies_is_an_error_with_its_stderr(tmp_path: Path) -> None:
    with pytest.raises(MMEdgeError, match=r"(?s)the worker exited with code 1.*No module named"):
        WorkerProcess("mmedge.no_such_module", {}, what="the worker", scratch=tmp_path)
