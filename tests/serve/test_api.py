"""The HTTP API through a real uvicorn server on 127.0.0.1: results equal Pipeline's, errors are 4xx."""

from __future__ import annotations

import dataclasses
import io
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile
from PIL import Image
from tinybundle import LABELS, tiny_inputs

from mmedge.runtime import Pipeline
from mmedge.serve import BatchPolicy, RequestLimits, ServeOptions, create_app

RTOL, ATOL = 1e-5, 1e-6


def as_json(inputs: Mapping[str, np.ndarray]) -> dict[str, Any]:
    return {"inputs": {k: v.tolist() for k, v in inputs.items()}}


def png(width: int = 12, height: int = 10, seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def wav(seconds: float = 0.02, rate: int = 8000, seed: int = 0) -> bytes:
    wave = np.random.default_rng(seed).uniform(-0.5, 0.5, int(seconds * rate)).astype(np.float32)
    buffer = io.BytesIO()
    soundfile.write(buffer, wave, rate, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


def assert_outputs(got: Mapping[str, Any], expected: Mapping[str, np.ndarray]) -> None:
    assert set(got) == set(expected)
    for name, value in expected.items():
        np.testing.assert_allclose(np.asarray(got[name], np.float32), value, rtol=RTOL, atol=ATOL)


# ---------------------------------------------------------------------------------------------
# results


def test_predict_json_tensors_equal_pipeline_run(client: httpx.Client, pipeline: Pipeline) -> None:
    inputs = tiny_inputs(batch=3)
    response = client.post("/v1/predict", json=as_json(inputs))
    assert response.status_code == 200, response.text
    body = response.json()
    expected = pipeline.run(inputs)
    assert_outputs(body["outputs"], expected)
    assert body["labels"]["logits"] == [LABELS[i] for i in expected["logits"].argmax(axis=1)]
    assert body["model"] == "tiny"


def test_predict_json_strings_with_tensors_equal_pipeline_run(client: httpx.Client, pipeline: Pipeline) -> None:
    inputs = tiny_inputs(batch=2)
    body = as_json(inputs)
    body["inputs"]["text"] = ["bright cat", "dark unknownword sea"]
    response = client.post("/v1/predict", json=body)
    assert response.status_code == 200, response.text
    assert_outputs(response.json()["outputs"], pipeline.run({**inputs, "text": ["bright cat", "dark unknownword sea"]}))


def test_predict_json_single_raw_items_equal_pipeline_run(client: httpx.Client, pipeline: Pipeline) -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (9, 11, 3)).astype(np.uint8)  # one HWC image, resized by the runtime
    wave = rng.uniform(-1, 1, 100).astype(np.float32)  # one waveform at the bundle's rate, padded
    body = {"inputs": {"text": [2, 4, 5], "image": image.tolist(), "audio": wave.tolist()}}
    response = client.post("/v1/predict", json=body)
    assert response.status_code == 200, response.text
    expected = pipeline.run({"text": np.array([2, 4, 5]), "image": image, "audio": wave})
    assert_outputs(response.json()["outputs"], expected)


def test_predict_multipart_files_equal_pipeline_run(client: httpx.Client, pipeline: Pipeline, tmp_path: Path) -> None:
    images, sounds = [png(seed=s) for s in (0, 1)], [wav(seed=s) for s in (0, 1)]
    files = [("image", (f"{i}.png", data, "image/png")) for i, data in enumerate(images)]
    files += [("audio", (f"{i}.wav", data, "audio/wav")) for i, data in enumerate(sounds)]
    response = client.post("/v1/predict", data={"text": ["bright cat", "dog sky"]}, files=files)
    assert response.status_code == 200, response.text
    paths = {}
    for kind, blobs, suffix in (("image", images, "png"), ("audio", sounds, "wav")):
        paths[kind] = [tmp_path / f"{kind}{i}.{suffix}" for i in range(2)]
        for path, data in zip(paths[kind], blobs, strict=True):
            path.write_bytes(data)
    expected = pipeline.run({"text": ["bright cat", "dog sky"], "image": paths["image"], "audio": paths["audio"]})
    assert_outputs(response.json()["outputs"], expected)


@pytest.mark.parametrize("modality", ["text", "image", "audio"])
def test_encode_equals_pipeline_encode(client: httpx.Client, pipeline: Pipeline, modality: str) -> None:
    value = tiny_inputs(batch=2)[modality]
    response = client.post(f"/v1/encode/{modality}", json={"inputs": {modality: value.tolist()}})
    assert response.status_code == 200, response.text
    assert_outputs(response.json()["outputs"], pipeline.encode(modality, value))


def test_model_summary_describes_the_bundle(client: httpx.Client) -> None:
    summary = client.get("/v1/model").json()
    assert [i["name"] for i in summary["inputs"]] == ["text", "image", "audio"]
    assert summary["outputs"] == [{"name": "logits", "kind": "logits", "labels": list(LABELS)}]
    assert summary["encode"] == ["audio", "image", "text"]
    assert summary["batching"]["enabled"] is True
    assert summary["component_timing"] is True
    assert all(c["providers"] == ["CPUExecutionProvider"] for c in summary["components"])


def test_healthz_and_openapi(client: httpx.Client) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
    spec = client.get("/openapi.json").json()
    assert {"/v1/predict", "/v1/encode/image", "/healthz", "/v1/model", "/metrics"} <= set(spec["paths"])
    body = spec["paths"]["/v1/predict"]["post"]["requestBody"]["content"]
    assert set(body) == {"application/json", "multipart/form-data"}
    image = body["application/json"]["schema"]["properties"]["inputs"]["properties"]["image"]["anyOf"][0]
    assert image["items"]["minItems"] == image["items"]["maxItems"] == 3  # the fixed channel dim is in the spec


def test_metrics_count_requests_and_time_each_component(client: httpx.Client) -> None:
    assert client.post("/v1/predict", json=as_json(tiny_inputs(batch=1))).status_code == 200
    client.post("/v1/predict", content=b"nope", headers={"content-type": "application/json"})
    text = client.get("/metrics").text
    assert re.search(r'mmedge_requests_total\{route="/v1/predict",status="200"\} [1-9]', text)
    assert re.search(r'mmedge_requests_total\{route="/v1/predict",status="400"\} [1-9]', text)
    steps = ("text_encoder", "image_encoder", "audio_encoder", "fusion_head", "preprocess", "execute", "pipeline")
    for component in steps:
        assert re.search(rf'mmedge_component_seconds_count\{{component="{component}"\}} [1-9]', text), component
    assert 'mmedge_request_seconds_bucket{le="0.0005",route="/v1/predict"}' in text


# ---------------------------------------------------------------------------------------------
# client mistakes


def _valid() -> dict[str, Any]:
    return as_json(tiny_inputs(batch=2))


def _with(**changes: Any) -> dict[str, Any]:
    body = _valid()
    body["inputs"].update(changes)
    return {k: v for k, v in body["inputs"].items() if v is not None}


@pytest.mark.parametrize(
    ("content", "status", "message"),
    [
        pytest.param(b"{not json", 400, "not valid JSON", id="not-json"),
        pytest.param(b"[" * 100_000, 400, "nested too deeply", id="deep-nesting"),
        pytest.param({"text": [1]}, 422, '{"inputs"', id="no-inputs-key"),
        pytest.param({"inputs": _with(audio=None)}, 422, "missing required input(s): audio", id="missing-input"),
        pytest.param({"inputs": _with(video=[[1.0]])}, 422, "unknown input 'video'", id="unknown-input"),
        pytest.param({"inputs": _with(text=[[0.5, 1.5]] * 2)}, 422, "expected integers", id="float-token-ids"),
        pytest.param({"inputs": _with(text=[[1, 2], [3, 99]])}, 422, "token ids must be [0, 8)", id="id-out-of-range"),
        pytest.param({"inputs": _with(image=[[[[1.0, 2.0], [3.0]]]])}, 422, "uneven lengths", id="ragged"),
        pytest.param({"inputs": _with(image=[[[[1e39] * 8] * 8] * 3] * 2)}, 422, "must fit float32", id="overflow"),
        pytest.param(
            {"inputs": _with(audio=np.zeros((3, 160)).tolist())}, 422, "different batch sizes", id="batch-mismatch"
        ),
        pytest.param({"inputs": _with(image=[[[["x"]]]])}, 422, "numbers only", id="strings-in-tensor"),
        pytest.param({"inputs": _with(image=np.zeros((2, 3, 8, 9)).tolist())}, 422, "dim 3", id="wrong-shape"),
        pytest.param({"inputs": _with(text=[""] * 2)}, 422, "empty text", id="empty-text"),
        pytest.param({"inputs": _with(audio=[])}, 422, "is empty", id="empty-array"),
        pytest.param({"inputs": {"text": ["cat"] * 65}}, 413, "over the limit of 64", id="too-many-items"),
    ],
)
def test_bad_json_is_a_clear_4xx(client: httpx.Client, content: Any, status: int, message: str) -> None:
    if isinstance(content, bytes):
        response = client.post("/v1/predict", content=content, headers={"content-type": "application/json"})
    else:
        response = client.post("/v1/predict", json=content)
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param({"image": ("x.png", b"not an image")}, "not a readable image", id="corrupt-image"),
        pytest.param({"image": ("x.png", png()[:60])}, "image", id="truncated-image"),
        pytest.param({"audio": ("x.wav", b"RIFF....WAVE")}, "not a readable sound file", id="corrupt-audio"),
        pytest.param({"text": ("t.txt", b"cat")}, "send it as a field", id="text-as-file"),
    ],
)
def test_bad_multipart_files_are_422(client: httpx.Client, change: dict[str, Any], message: str) -> None:
    files = {"image": ("i.png", png()), "audio": ("a.wav", wav())} | change
    data = {} if "text" in change else {"text": "cat"}
    response = client.post("/v1/predict", data=data, files=files)
    assert response.status_code == 422, response.text
    assert message in response.json()["detail"]


def test_unsupported_content_type_and_unknown_route(client: httpx.Client) -> None:
    response = client.post("/v1/predict", content=b"a=1", headers={"content-type": "text/plain"})
    assert response.status_code == 415
    assert "application/json or multipart/form-data" in response.json()["detail"]
    assert client.post("/v1/encode/video", json={"inputs": {}}).status_code == 404


@pytest.fixture(scope="module")
def strict_url(pipeline: Pipeline, serve_app: Callable) -> Iterator[str]:
    limits = RequestLimits(max_rows=2, max_image_pixels=100, max_audio_seconds=0.01)
    with serve_app(create_app(pipeline, ServeOptions(limits=limits, max_body_bytes=4096))) as url:
        yield url


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"json": {"inputs": {"text": "cat " * 2000}}}, "limit is 4,096 bytes", id="body-bytes"),
        pytest.param(
            {
                "content": iter([b'{"inputs": {"text": "'] + [b"cat "] * 2000 + [b'"}}']),
                "headers": {"content-type": "application/json"},
            },
            "limit is 4,096 bytes",
            id="chunked-body-bytes",
        ),
        pytest.param({"files": {"image": ("big.png", png(11, 10))}}, "over the limit of 100 pixels", id="image-pixels"),
        pytest.param({"files": {"audio": ("long.wav", wav(0.1))}}, "over the limit of 0.01 s", id="audio-seconds"),
        pytest.param({"json": {"inputs": {"text": ["a", "b", "c"]}}}, "over the limit of 2", id="items"),
    ],
)
def test_limits_answer_413(strict_url: str, kwargs: dict[str, Any], message: str) -> None:
    response = httpx.post(f"{strict_url}/v1/predict", timeout=30, **kwargs)
    assert response.status_code == 413, response.text
    assert message in response.json()["detail"]


# ---------------------------------------------------------------------------------------------
# batching and back-pressure


def test_concurrent_requests_are_batched_and_each_gets_its_own_rows(pipeline: Pipeline, serve_app: Callable) -> None:
    options = ServeOptions(batch=BatchPolicy(max_batch=32, max_wait_ms=200))
    requests = [tiny_inputs(batch=1 + i % 3, seed=i) for i in range(8)]
    with serve_app(create_app(pipeline, options)) as url, ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda x: httpx.post(f"{url}/v1/predict", json=as_json(x), timeout=30), requests))
        metrics = httpx.get(f"{url}/metrics").text
    for inputs, response in zip(requests, responses, strict=True):
        assert response.status_code == 200, response.text
        assert_outputs(response.json()["outputs"], pipeline.run(inputs))
    calls = float(re.search(r'mmedge_batch_requests_count\{task="predict"\} (\S+)', metrics).group(1))
    merged = float(re.search(r'mmedge_batch_requests_sum\{task="predict"\} (\S+)', metrics).group(1))
    assert merged == 8
    assert calls < 8  # at least one pipeline call served several requests


class GatedPipeline:
    """The real pipeline, held at a gate, to fill the queue deterministically."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.inner = pipeline
        self.manifest = pipeline.manifest
        self.gate = threading.Event()

    def run(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        self.gate.wait(timeout=20)
        return self.inner.run(inputs)

    def encode(self, name: str, x: Any) -> dict[str, np.ndarray]:
        self.gate.wait(timeout=20)
        return self.inner.encode(name, x)


def test_full_queue_answers_503_with_retry_after(pipeline: Pipeline, serve_app: Callable) -> None:
    gated = GatedPipeline(pipeline)
    options = ServeOptions(batch=BatchPolicy(max_batch=1, max_wait_ms=0, max_queue=1))
    body = {"inputs": {"text": tiny_inputs(1)["text"].tolist()}}
    with serve_app(create_app(gated, options)) as url, ThreadPoolExecutor(2) as pool:
        try:
            held = [pool.submit(httpx.post, f"{url}/v1/encode/text", json=body, timeout=30) for _ in range(2)]
            deadline = time.monotonic() + 15  # a loaded CI machine took over 2 s to queue the second
            while httpx.get(f"{url}/healthz").json()["queued"] < 1:  # one running, one queued
                assert time.monotonic() < deadline, "the second request was never queued"
                threading.Event().wait(0.02)
            refused = httpx.post(f"{url}/v1/encode/text", json=body, timeout=30)
        finally:
            gated.gate.set()  # never leave a request hanging on the gate
        finished = [f.result() for f in held]
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "1"
    assert "max_queue" in refused.json()["detail"]
    assert [r.status_code for r in finished] == [200, 200]


def test_unbatchable_bundle_serves_with_batching_off_and_says_why(pipeline: Pipeline, serve_app: Callable) -> None:
    fixed = GatedPipeline(pipeline)  # advertised with a fixed batch of 1, as mobile bundles are
    fixed.gate.set()
    text, *others = pipeline.manifest.inputs
    fixed.manifest = dataclasses.replace(
        pipeline.manifest, inputs=(dataclasses.replace(text, shape=(1, "seq")), *others)
    )
    with serve_app(create_app(fixed, ServeOptions())) as url:
        summary = httpx.get(f"{url}/v1/model").json()
    batching = summary["batching"]
    assert summary["component_timing"] is False  # a caller-built Pipeline has no trace hook wired
    assert batching["enabled"] is False
    assert batching["max_batch"] == 1
    assert "text" in batching["note"]


def test_a_request_at_a_new_batch_size_never_waits_for_a_compile(
    tiny_dir: Path, pipeline: Pipeline, serve_app: Callable, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Served as one OpenVINO graph, a request of a batch size not compiled yet is answered while
    that size compiles (here: held until the answer came) and the next one runs on it."""
    pytest.importorskip("openvino")
    from mmedge import openvino_graph
    from mmedge.serve import app_for_bundle

    gate, compiled = threading.Event(), []
    real = openvino_graph.OpenVINOGraph._compiled_model

    def held(graph: Any, signature: tuple) -> Any:
        if signature[0][0] == 4:
            assert gate.wait(10), "the request waited for the compile"
        compiled.append(signature[0][0])
        return real(graph, signature)

    monkeypatch.setattr(openvino_graph.OpenVINOGraph, "_compiled_model", held)
    x = tiny_inputs(batch=4, seed=4)
    app = app_for_bundle(tiny_dir, ServeOptions(), providers="openvino", threads=1)
    with serve_app(app) as url:
        first = httpx.post(f"{url}/v1/predict", json=as_json(x), timeout=30)
        gate.set()
        assert first.status_code == 200, first.text
        assert_outputs(first.json()["outputs"], pipeline.run(x))
        deadline = time.monotonic() + 30
        while 4 not in compiled and time.monotonic() < deadline:
            time.sleep(0.05)
        second = httpx.post(f"{url}/v1/predict", json=as_json(x), timeout=30)
        assert_outputs(second.json()["outputs"], pipeline.run(x))
    assert compiled.count(4) == 1


def test_an_uploaded_photo_is_decoded_as_the_same_file_given_by_path(
    client: httpx.Client, pipeline: Pipeline, tmp_path: Path
) -> None:
    """A 1080p JPEG for an 8×8 model decodes at a reduced scale (``decode_reduced``) in both: the
    server's answer is the Pipeline's for the file's path."""
    y, x = np.mgrid[0:1080, 0:1920]
    pixels = np.stack([(x * 255 // 1919), (y * 255 // 1079), (x + y) % 256], axis=-1).astype(np.uint8)
    path = tmp_path / "photo.jpg"
    Image.fromarray(pixels).save(path, quality=90)
    files = [("image", ("photo.jpg", path.read_bytes(), "image/jpeg")), ("audio", ("a.wav", wav(seed=0), "audio/wav"))]
    response = client.post("/v1/predict", data={"text": ["bright cat"]}, files=files)
    assert response.status_code == 200, response.text
    (tmp_path / "a.wav").write_bytes(wav(seed=0))
    expected = pipeline.run({"text": ["bright cat"], "image": [path], "audio": [tmp_path / "a.wav"]})
    assert_outputs(response.json()["outputs"], expected)
