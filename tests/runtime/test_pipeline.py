"""Pipeline on the tiny bundle: parity with plain onnxruntime, batching, encode/caching, defaults,
loading options, IO binding, concurrency."""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from tinybundle import LABELS, tiny_inputs

from mmedge import sessions as session_module
from mmedge.bundle import Manifest
from mmedge.errors import InputError, MMEdgeError
from mmedge.runtime import ComponentPlacement, Pipeline
from mmedge.schedule import HELPER_NICE, share_threads

ATOL = 1e-5
RTOL = 1e-5


def test_run_matches_onnxruntime_by_hand(pipe: Pipeline, by_hand: Callable) -> None:
    x = tiny_inputs(batch=3, seq=5, samples=200)
    out = pipe.run(x)
    assert list(out) == ["logits"]
    assert out["logits"].shape == (3, len(LABELS))
    np.testing.assert_allclose(out["logits"], by_hand(x), rtol=RTOL, atol=ATOL)


def test_batch_equals_stacked_single_items(pipe: Pipeline) -> None:
    x = tiny_inputs(batch=4)
    batched = pipe.run(x)["logits"]
    singles = [pipe.run({k: v[i : i + 1] for k, v in x.items()})["logits"][0] for i in range(4)]
    np.testing.assert_allclose(batched, np.stack(singles), rtol=RTOL, atol=ATOL)


def test_raw_batch_equals_raw_single_items(pipe: Pipeline) -> None:
    rng = np.random.default_rng(1)
    texts = ["bright cat", "a dark sea under the sky", "dog"]
    images = [rng.integers(0, 256, (h, 12, 3), dtype=np.uint8) for h in (8, 16, 30)]
    waves = [rng.standard_normal(n).astype(np.float32) * 0.1 for n in (90, 160, 400)]
    batched = pipe.run({"text": texts, "image": images, "audio": waves})["logits"]
    singles = [
        pipe.run({"text": t, "image": i, "audio": w})["logits"][0] for t, i, w in zip(texts, images, waves, strict=True)
    ]
    np.testing.assert_allclose(batched, np.stack(singles), rtol=RTOL, atol=ATOL)


def _rename_text_input(m: Manifest) -> Manifest:
    """Raw input 'text' becomes 'input_ids' (the encoder's own input keeps its name)."""
    inputs = tuple(dataclasses.replace(i, name="input_ids") if i.name == "text" else i for i in m.inputs)
    wiring = tuple(dataclasses.replace(e, output="input_ids") if e.output == "text" else e for e in m.wiring)
    return dataclasses.replace(m, inputs=inputs, wiring=wiring)


def test_inputs_are_accepted_by_name_or_by_modality(edited_bundle: Callable[..., Path]) -> None:
    x = tiny_inputs(batch=2)
    with Pipeline(edited_bundle(edit=_rename_text_input), "cpu") as p:
        by_modality = p.run(x)["logits"]
        by_name = p.run({"input_ids": x["text"], "image": x["image"], "audio": x["audio"]})["logits"]
        with pytest.raises(InputError, match="'input_ids' is given twice"):
            p.run({**x, "input_ids": x["text"]})
    np.testing.assert_array_equal(by_modality, by_name)


def test_encode_outputs_feed_run_as_a_cache(pipe: Pipeline) -> None:
    x = tiny_inputs(batch=2)
    image = pipe.encode("image", x["image"])
    assert list(image) == ["image_features"]
    assert image["image_features"].shape == (2, 4)
    by_component = pipe.encode("image_encoder", x["image"])
    np.testing.assert_array_equal(image["image_features"], by_component["image_features"])
    cached = pipe.run({"text": x["text"], "audio": x["audio"], **image})
    qualified = pipe.run(
        {"text": x["text"], "audio": x["audio"], "image_encoder.image_features": image["image_features"]}
    )
    np.testing.assert_allclose(cached["logits"], pipe.run(x)["logits"], rtol=RTOL, atol=ATOL)
    np.testing.assert_array_equal(cached["logits"], qualified["logits"])


def test_all_encoders_cached_runs_only_the_head(pipe: Pipeline) -> None:
    x = tiny_inputs(batch=2)
    features = {k: v for m in ("text", "image", "audio") for k, v in pipe.encode(m, x[m]).items()}
    np.testing.assert_allclose(pipe.run(features)["logits"], pipe.run(x)["logits"], rtol=RTOL, atol=ATOL)


def test_encode_accepts_a_dict_and_rejects_the_head(pipe: Pipeline) -> None:
    x = tiny_inputs(batch=1)
    np.testing.assert_array_equal(
        pipe.encode("text", {"text": x["text"]})["text_features"], pipe.encode("text", x["text"])["text_features"]
    )
    with pytest.raises(InputError, match="not an encoder"):
        pipe.encode("fusion_head", {})
    with pytest.raises(InputError, match="nothing to encode named 'video'"):
        pipe.encode("video", x["image"])


def test_omitted_input_with_a_default_is_filled(edited_bundle: Callable[..., Path]) -> None:
    bundle = edited_bundle("audio", default=0.0)
    x = tiny_inputs(batch=2)
    with Pipeline(bundle, "cpu") as p:
        omitted = p.run({"text": x["text"], "image": x["image"]})["logits"]
        zeros = p.run({**x, "audio": np.zeros((2, 160), np.float32)})["logits"]
    np.testing.assert_array_equal(omitted, zeros)


def test_lazy_loading_creates_sessions_on_first_use(tiny_bundle: Path) -> None:
    with Pipeline(tiny_bundle, "cpu", lazy=True) as p:
        assert p.providers_used == {}
        p.encode("image", tiny_inputs(batch=1)["image"])
        assert list(p.providers_used) == ["image_encoder"]
        p.run(tiny_inputs(batch=1))
        assert set(p.providers_used) == {"text_encoder", "image_encoder", "audio_encoder", "fusion_head"}


def test_providers_used_reports_nodes_per_provider(pipe: Pipeline) -> None:
    placement = pipe.providers_used["image_encoder"]
    assert placement == ComponentPlacement(
        component="image_encoder",
        requested=("CPUExecutionProvider",),
        registered=("CPUExecutionProvider",),
        nodes={"CPUExecutionProvider": 4},  # Conv, Relu, GlobalAveragePool, Flatten
        partitions={"CPUExecutionProvider": 1},  # in one piece
    )


@pytest.mark.parametrize("level", ["all", "extended", "basic", "disable"])
def test_graph_optimization_levels_give_the_same_outputs(tiny_bundle: Path, level: str, by_hand: Callable) -> None:
    x = tiny_inputs(batch=2)
    with Pipeline(tiny_bundle, "cpu", graph_optimization=level) as p:
        np.testing.assert_allclose(p.run(x)["logits"], by_hand(x), rtol=RTOL, atol=ATOL)


def test_optimized_models_are_saved(tiny_bundle: Path, tmp_path: Path) -> None:
    with Pipeline(tiny_bundle, "cpu", optimized_model_dir=tmp_path / "opt"):
        pass
    assert sorted(p.name for p in (tmp_path / "opt").iterdir()) == [
        f"{c}.optimized.onnx" for c in ("audio_encoder", "fusion_head", "image_encoder", "text_encoder")
    ]


ENCODERS = {"text_encoder", "image_encoder", "audio_encoder"}


def test_encoders_are_probed_and_run_concurrently(tiny_bundle: Path, by_hand: Callable) -> None:
    with Pipeline(tiny_bundle, "cpu", threads=6) as p:
        plan = p.schedule
        assert plan.concurrent == ENCODERS
        assert set(plan.costs_ms) == ENCODERS
        assert all(ms > 0 for ms in plan.costs_ms.values())
        assert plan.threads == {**share_threads(plan.costs_ms, 6), "fusion_head": 6}
        for name, n in plan.threads.items():  # the sessions were opened with the planned threads
            assert p._sessions[name].session.get_session_options().intra_op_num_threads == n
        x = tiny_inputs(batch=2)
        np.testing.assert_allclose(p.run(x)["logits"], by_hand(x), rtol=RTOL, atol=ATOL)
        if sys.platform.startswith("linux"):  # helper threads yield to the costliest encoder's
            own = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
            helper = p._pool.submit(lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id())).result()
            assert helper == min(own + HELPER_NICE, 19)


@pytest.mark.parametrize(
    ("costs", "budget", "expected"),
    [
        pytest.param({"img": 3.0, "aud": 1.1, "txt": 0.3}, 2, {"img": 2, "aud": 1, "txt": 1}, id="2-cores"),
        pytest.param({"img": 8.0, "aud": 1.5, "txt": 0.5}, 16, {"img": 15, "aud": 2, "txt": 1}, id="16-cores"),
        pytest.param({"a": 1.0, "b": 1.0}, 16, {"a": 9, "b": 8}, id="balanced"),
        pytest.param({"a": 0.0, "b": 0.0}, 4, {"a": 3, "b": 2}, id="unmeasurable"),
    ],
)
def test_the_costliest_encoder_keeps_the_budget_and_others_get_a_cost_share(
    costs: dict[str, float], budget: int, expected: dict[str, int]
) -> None:
    assert share_threads(costs, budget) == expected


@pytest.mark.parametrize(
    ("threads", "lazy"),
    [pytest.param(1, False, id="1-thread"), pytest.param(4, True, id="lazy")],
)
def test_one_thread_or_lazy_runs_encoders_one_after_another(tiny_bundle: Path, threads: int, lazy: bool) -> None:
    with Pipeline(tiny_bundle, "cpu", threads=threads, lazy=lazy) as p:
        assert p.run(tiny_inputs())["logits"].shape == (2, 3)
        assert set(p.schedule.threads.values()) == {threads}
        assert p.schedule.concurrent == frozenset()
        assert p._pool is None


def test_encoders_that_cannot_be_probed_run_one_after_another(
    tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: object, feeds: object) -> None:
        raise InputError("component 'x' failed on inputs (...)")

    monkeypatch.setattr(session_module.ComponentSession, "run", broken)
    with Pipeline(tiny_bundle, "cpu", threads=4) as p:
        assert p.schedule.concurrent == frozenset()
        assert set(p.schedule.threads.values()) == {4}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"threads": 0}, "threads must be a positive int", id="threads-0"),
        pytest.param({"graph_optimization": "max"}, "graph_optimization must be one of", id="bad-level"),
    ],
)
def test_bad_options_are_refused(tiny_bundle: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Pipeline(tiny_bundle, "cpu", **kwargs)


def test_closed_pipeline_refuses_to_run(tiny_bundle: Path) -> None:
    with Pipeline(tiny_bundle, "cpu", lazy=True) as p:
        pass
    with pytest.raises(MMEdgeError, match="closed"):
        p.run(tiny_inputs(batch=1))


def test_io_binding_path_matches_plain_run(
    tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch, by_hand: Callable
) -> None:
    """The device path (bind inputs, keep outputs as OrtValues, feed them to the head) run on CPU memory."""
    monkeypatch.setattr(session_module, "binding_device", lambda registered, options: ("cpu", 0))
    x = tiny_inputs(batch=2)
    with Pipeline(tiny_bundle, "cpu") as p:
        assert all(pl.io_binding for pl in p.providers_used.values())
        np.testing.assert_allclose(p.run(x)["logits"], by_hand(x), rtol=RTOL, atol=ATOL)
        features = p.encode("image", x["image"])
        assert isinstance(features["image_features"], np.ndarray)


def test_eight_threads_get_the_same_outputs_as_sequential_calls(tiny_bundle: Path) -> None:
    calls = [tiny_inputs(batch=1 + i % 3, seq=3 + i % 4, samples=100 + i, seed=i) for i in range(24)]
    with Pipeline(tiny_bundle, "cpu", threads=2, lazy=True) as p:
        expected = [p.run(x)["logits"] for x in calls]
        start = threading.Barrier(8)

        def work(worker: int) -> list[np.ndarray]:
            start.wait()
            return [p.run(calls[(worker + j) % len(calls)])["logits"] for j in range(len(calls))]

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(work, range(8)))
    for worker, outs in enumerate(results):
        for j, out in enumerate(outs):
            np.testing.assert_array_equal(out, expected[(worker + j) % len(calls)])


def test_lazy_sessions_are_created_once_under_concurrency(tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[str] = []
    real = session_module.open_session

    def counting(bundle, name, *args):
        opened.append(name)
        return real(bundle, name, *args)

    monkeypatch.setattr("mmedge.runtime.pipeline.open_session", counting)
    x = tiny_inputs(batch=1)
    with Pipeline(tiny_bundle, "cpu", lazy=True) as p, ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: p.run(x), range(16)))
    assert sorted(opened) == ["audio_encoder", "fusion_head", "image_encoder", "text_encoder"]
