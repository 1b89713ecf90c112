"""OpenAPI fragments derived from the bundle's manifest, so the spec says what this model takes.

Request bodies are parsed by hand (one route accepts JSON and multipart), so FastAPI cannot infer
them; these schemas document exactly what :mod:`mmedge.serve._inputs` accepts: for each input a
batch tensor (full rank, fixed dims pinned), one raw item (one rank lower), text as strings, and
in multipart bodies image/audio as uploaded files.
"""

from __future__ import annotations

from typing import Any

from mmedge.bundle import InputSpec, Manifest, TensorSpec, required_inputs
from mmedge.decoding import STRATEGIES
from mmedge.serve._inputs import MAX_BEAM_SIZE, MAX_GENERATED

__all__ = [
    "CAPTIONS",
    "ERRORS",
    "GENERATION_PARAMETERS",
    "form_schema",
    "input_schema",
    "output_schema",
    "request_body",
]

_ERROR = {
    "content": {
        "application/json": {
            "schema": {"type": "object", "required": ["detail"], "properties": {"detail": {}}},
        }
    }
}
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "The body cannot be parsed (not JSON, broken multipart), or the Host is not served", **_ERROR},
    401: {"description": "The server needs an API key: 'Authorization: Bearer <key>'", **_ERROR},
    403: {"description": "A cross-origin request from an origin not allowed", **_ERROR},
    408: {"description": "The request body did not arrive within the body timeout", **_ERROR},
    413: {
        "description": "Over a size limit (body bytes, items, image pixels, audio seconds, decoded bytes)",
        **_ERROR,
    },
    415: {"description": "Unsupported content type; send application/json or multipart/form-data", **_ERROR},
    422: {"description": "The inputs do not fit the model (names, dtypes, shapes, values)", **_ERROR},
    429: {
        "description": "Too many requests in progress, or their memory budget is full (retry after Retry-After)",
        **_ERROR,
    },
    503: {"description": "OverloadedError (retry after the Retry-After header) or shutting down", **_ERROR},
}


CAPTIONS: dict[str, Any] = {
    "description": "One caption per item: its text, token ids (after <bos>) and total log-probability",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["model", "captions"],
                "properties": {
                    "model": {"type": "string"},
                    "captions": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["text", "token_ids", "score"],
                            "properties": {
                                "text": {"type": "string"},
                                "token_ids": {"type": "array", "items": {"type": "integer"}},
                                "score": {"type": "number"},
                            },
                        },
                    },
                },
            }
        }
    },
}
GENERATION_PARAMETERS: list[dict[str, Any]] = [
    {
        "name": "strategy",
        "in": "query",
        "schema": {"type": "string", "enum": list(STRATEGIES), "default": "greedy"},
        "description": "greedy decoding or beam search",
    },
    {
        "name": "beam_size",
        "in": "query",
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_BEAM_SIZE, "default": 4},
        "description": "hypotheses per item (beam search)",
    },
    {
        "name": "max_len",
        "in": "query",
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_GENERATED},
        "description": "most tokens per caption (default: the bundle's)",
    },
]


def _nested(rank: int, leaf: dict[str, Any], dims: tuple[Any, ...] = (), max_rows: int | None = None) -> dict:
    """A JSON schema for a ``rank``-deep nested array; int entries of ``dims`` pin that axis's length."""
    schema = leaf
    for axis in reversed(range(rank)):
        schema = {"type": "array", "items": schema, "minItems": 1}
        dim = dims[axis] if axis < len(dims) else None
        if isinstance(dim, int):
            schema["minItems"] = schema["maxItems"] = dim
        elif axis == 0 and max_rows is not None:
            schema["maxItems"] = max_rows
    return schema


def _leaf(dtype: str) -> dict[str, Any]:
    """A JSON number schema bounded by the dtype's range (values outside it are refused)."""
    import numpy as np

    if dtype == "bool":
        return {"type": "boolean"}
    if dtype.startswith(("int", "uint")):
        info = np.iinfo(dtype)
        return {"type": "integer", "minimum": int(info.min), "maximum": int(info.max)}
    top = float(np.finfo(dtype).max)
    return {"type": "number", "minimum": -top, "maximum": top}


# One raw image item: uint8 pixels or floats in [0, 1].
_PIXEL = {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 255}, {"type": "number", "minimum": 0, "maximum": 1}]}


def input_schema(spec: InputSpec, max_rows: int) -> dict[str, Any]:
    """Every JSON form one input accepts."""
    rank = len(spec.shape)
    forms: list[dict[str, Any]] = [
        {**_nested(rank, _leaf(spec.dtype), spec.shape, max_rows), "title": f"batch of {spec.dtype} tensors"}
    ]
    if spec.modality == "text":
        one = {"type": "string", "minLength": 1}
        pair = {
            "type": "object",
            "properties": {"text": one, "text_pair": one},
            "required": ["text", "text_pair"],
            "additionalProperties": False,
            "title": "one text pair (a question and its passage): one sequence with segment ids",
        }
        forms += [
            {**one, "title": "one text"},
            pair,
            {"type": "array", "items": {"anyOf": [one, pair]}, "minItems": 1, "maxItems": max_rows},
            {**_nested(1, {"type": "integer", "minimum": 0}), "title": "one list of token ids"},
        ]
    elif spec.modality == "image" and rank == 4:
        forms.append({**_nested(3, _PIXEL), "title": "one HWC image (uint8 pixels or floats in [0, 1])"})
    elif spec.spectral:  # the runtime computes the features from waves
        forms += [
            {**_nested(1, _leaf(spec.dtype)), "title": "one waveform at the bundle's sample rate"},
            {
                **_nested(2, _leaf(spec.dtype), max_rows=max_rows),
                "title": "waveforms of one length, one per row (a batch)",
            },
        ]
    elif rank > 1:
        title = "one waveform at the bundle's sample rate" if spec.modality == "audio" else "one item"
        forms.append({**_nested(rank - 1, _leaf(spec.dtype)), "title": title})
    return {"anyOf": forms, "description": f"{spec.modality} input, model tensor {spec.dtype} {list(spec.shape)}"}


def _json_schema(specs: tuple[InputSpec, ...], max_rows: int) -> dict[str, Any]:
    inputs = {
        "type": "object",
        "properties": {s.name: input_schema(s, max_rows) for s in specs},
        "required": [s.name for s in required_inputs(specs)],
        "additionalProperties": False,
    }
    return {"type": "object", "required": ["inputs"], "properties": {"inputs": inputs}}


def form_schema(specs: tuple[InputSpec, ...], max_rows: int) -> dict[str, Any]:
    """Multipart fields: image/audio as files, text as strings (repeat a field for a batch), and
    any other input as one field holding a JSON nested array."""
    properties: dict[str, Any] = {}
    for s in specs:
        if s.modality in ("image", "audio"):
            one = {"type": "string", "format": "binary", "description": f"an {s.modality} file"}
        elif s.modality == "text":
            one = {"type": "string", "minLength": 1, "description": "a text"}
        else:
            properties[s.name] = {"type": "string", "description": f"a JSON nested array ({s.dtype} {list(s.shape)})"}
            continue
        properties[s.name] = {"type": "array", "items": one, "minItems": 1, "maxItems": max_rows}
    return {
        "type": "object",
        "properties": properties,
        "required": [s.name for s in required_inputs(specs)],
        "additionalProperties": False,
    }


def request_body(specs: tuple[InputSpec, ...], max_rows: int) -> dict[str, Any]:
    """The ``requestBody`` of an inference route."""
    return {
        "required": True,
        "content": {
            "application/json": {"schema": _json_schema(specs, max_rows)},
            "multipart/form-data": {"schema": form_schema(specs, max_rows)},
        },
    }


def output_schema(manifest: Manifest, tensors: tuple[TensorSpec, ...], *, labels: bool) -> dict[str, Any]:
    """The 200 response of an inference route: outputs as nested arrays, plus argmax labels."""
    outputs = {t.name: _nested(len(t.shape), {"type": ["number", "null"]}) for t in tensors}
    properties: dict[str, Any] = {
        "model": {"type": "string", "const": manifest.model.name},
        "outputs": {"type": "object", "properties": outputs, "required": list(outputs)},
    }
    if labels:
        properties["labels"] = {
            "type": "object",
            "description": "for logits outputs with labels: the top label of each row",
            "additionalProperties": {"type": "array", "items": {"type": "string"}},
        }
    return {
        "description": "Outputs, batch-major (always with the batch axis); NaN/Inf are null",
        "content": {
            "application/json": {
                "schema": {"type": "object", "required": ["model", "outputs"], "properties": properties}
            }
        },
    }
