"""Serving a captioner: ``POST /v1/generate`` gives Pipeline.generate's captions over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("fastapi", reason="serving needs the serve extra: pip install 'mmedge[serve]'")

import httpx
from serving import serving

from mmedge.runtime import Pipeline
from mmedge.serve import ServeOptions, app_for_bundle


@pytest.fixture(scope="module")
def client(trained) -> Iterator[httpx.Client]:
    app = app_for_bundle(trained.bundle, ServeOptions(), providers="cpu", threads=1)
    with serving(app) as url, httpx.Client(base_url=url, timeout=60) as c:
        yield c


@pytest.mark.parametrize("query", ["", "?strategy=beam&beam_size=3&max_len=5"], ids=["greedy", "beam"])
def test_generate_returns_the_pipelines_captions(trained, client: httpx.Client, query: str) -> None:
    images = trained.held_out.inputs["image"][:3]
    response = client.post(f"/v1/generate{query}", json={"inputs": {"image": images.tolist()}})
    assert response.status_code == 200, response.text
    options = {"strategy": "beam", "beam_size": 3, "max_len": 5} if query else {}
    with Pipeline(trained.bundle, "cpu", threads=1) as pipe:
        expected = pipe.generate(images, **options)
    got = response.json()["captions"]
    assert [c["text"] for c in got] == list(expected.text)
    assert [tuple(c["token_ids"]) for c in got] == list(expected.token_ids)


def test_the_api_describes_generation_and_has_no_predict_route(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    assert "/v1/predict" not in spec["paths"]
    generate = spec["paths"]["/v1/generate"]["post"]
    assert [p["name"] for p in generate["parameters"]] == ["strategy", "beam_size", "max_len"]
    assert generate["requestBody"]["content"]["application/json"]["schema"]["properties"]["inputs"]["required"] == [
        "image"
    ]
    assert client.get("/v1/model").json()["generate"] is True
    assert client.post("/v1/predict", json={"inputs": {}}).status_code == 404


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("?strategy=sample", "strategy must be one of"),
        ("?beam_size=0", "beam_size must be from 1 to 64"),
        ("?max_len=ten", "max_len must be an integer"),
        ("?temperature=2", "unknown query parameter(s) ['temperature']"),
    ],
)
def test_bad_generation_options_are_422(trained, client: httpx.Client, query: str, message: str) -> None:
    image = trained.held_out.inputs["image"][:1].tolist()
    response = client.post(f"/v1/generate{query}", json={"inputs": {"image": image}})
    assert response.status_code == 422
    assert message in response.json()["detail"]


def test_concurrent_generate_requests_are_batched_and_each_gets_its_own_captions(trained, client: httpx.Client) -> None:
    images = trained.held_out.inputs["image"][:6]
    with Pipeline(trained.bundle, "cpu", threads=1) as pipe:
        expected = [pipe.generate(images[i : i + 1]).text[0] for i in range(len(images))]

    def caption(i: int) -> str:
        response = client.post("/v1/generate", json={"inputs": {"image": images[i : i + 1].tolist()}})
        assert response.status_code == 200, response.text
        return response.json()["captions"][0]["text"]

    with ThreadPoolExecutor(len(images)) as pool:
        assert list(pool.map(caption, range(len(images)))) == expected
    metrics = client.get("/metrics").text
    assert 'mmedge_batch_requests_count{task="generate"}' in metrics  # one label, whatever the options
