"""Serving a Hugging Face bundle: the attention mask is derived from the text, never demanded."""

from __future__ import annotations

import numpy as np
import pytest
from hf._models import Exported

pytest.importorskip("fastapi", reason="serving needs the serve extra: pip install 'mmedge[serve]'")

import httpx
from serving import serving

from mmedge.runtime import Pipeline
from mmedge.serve import ServeOptions, app_for_bundle

TEXTS = ["a red car parked near the house", "two dogs"]


@pytest.mark.slow
def test_strings_alone_are_a_complete_request(bert_export: Exported) -> None:
    image = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    app = app_for_bundle(bert_export.path, ServeOptions(), providers="cpu", threads=1)
    with serving(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        schema = client.get("/openapi.json").json()
        response = client.post("/v1/predict", json={"inputs": {"text": TEXTS, "image": image.tolist()}})
    assert response.status_code == 200, response.text
    with Pipeline(bert_export.path, "cpu") as pipe:
        expected = pipe.run({"text": TEXTS, "image": image})["logits"]
    np.testing.assert_allclose(response.json()["outputs"]["logits"], expected, rtol=1e-4, atol=1e-5)
    body = schema["paths"]["/v1/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["inputs"]["required"] == ["input_ids", "image"]
