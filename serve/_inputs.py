"""Request bodies → the inputs ``Pipeline.run`` takes, in a form the micro-batcher can merge.

Every value becomes either a batch-major numpy tensor (merged by concatenation) or a list of raw
items (merged end to end), each with its row count. The meaning of a value is exactly the
runtime's: a numeric array with the input's full rank is the model tensor; one rank lower is a
single raw item (token ids, an HWC image, a waveform at the bundle's rate); strings are text.
Uploaded files are decoded here (Pillow, soundfile), but only after every file of the request has
been measured from its header and the request's decoded size fits both
:attr:`RequestLimits.max_decoded_bytes` and the server's memory budget (the ``admit`` callback):
a decompression bomb, an hour of audio or a batch of big photos is refused before any is decoded.
A JSON body is costed the same way before it is parsed, by counting its values.

Problems raise :class:`RequestError` with the HTTP status to answer (400 unreadable body,
413 over a limit, 422 valid syntax but unusable values).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from mmedge.bundle import ImagePreprocess, InputSpec, Manifest, required_inputs
from mmedge.decoding import STRATEGIES
from mmedge.runtime.preprocess import decode_reduced
from mmedge.runtime.text import is_text
from mmedge.runtime.validate import batch_problems

__all__ = [
    "IMAGE_FORMATS",
    "ParsedInputs",
    "RequestError",
    "RequestLimits",
    "from_form",
    "from_json",
    "json_bytes",
    "resolve",
]

# Decoders for untrusted uploads: common raster formats only (no EPS/PDF, which shell out).
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP")
# What decoded inputs occupy: Pillow keeps a pixel in up to 4 bytes (RGB is stored as RGBX), a
# sound file is read as float32 samples, and a parsed JSON value is a Python object (a float is
# 24 bytes, plus 8 for its slot in a list; 64 bounds a small dict or list too).
IMAGE_BYTES_PER_PIXEL = 4
AUDIO_BYTES_PER_SAMPLE = 4
JSON_BYTES_PER_VALUE = 64

Admit = Callable[[int], None]  # reserves a request's decoded bytes server-wide, or raises


class RequestError(Exception):
    """A client mistake, with the HTTP status that says which kind."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class RequestLimits:
    """What one HTTP request may carry (the runtime's own per-call limits are ``InputLimits``)."""

    max_rows: int = 64  # items per request, over all of its inputs' batch axis
    max_image_pixels: int = 16_000_000  # width x height of one uploaded image
    max_audio_seconds: float = 600.0  # duration of one uploaded sound file
    max_decoded_bytes: int = 64 * 2**20  # all of a request's inputs once decoded, measured before (decoded_bytes)


def json_bytes(text: bytes | str) -> int:
    """An upper bound on the memory ``json.loads(text)`` takes, from a count of its separators."""
    data = text.encode("utf-8", "replace") if isinstance(text, str) else text
    values = 1 + sum(data.count(c) for c in (b",", b"[", b"{", b":"))
    return len(data) + values * JSON_BYTES_PER_VALUE


def _within_budget(size: int, limits: RequestLimits) -> None:
    if size > limits.max_decoded_bytes:
        raise RequestError(
            413,
            f"the request's inputs would take {size / 2**20:.1f} MiB decoded, over the limit of "
            f"{limits.max_decoded_bytes / 2**20:g} MiB per request (--max-decoded-mb); send fewer or smaller items",
        )


@dataclass(frozen=True)
class ParsedInputs:
    """Inputs keyed by the bundle's input names, and the number of rows they hold."""

    values: dict[str, Any]
    rows: int


def resolve(manifest: Manifest, key: str, allowed: tuple[InputSpec, ...]) -> InputSpec:
    """The input a request field names: an input name, or a modality with exactly one input."""
    by_name = {s.name: s for s in allowed}
    if key in by_name:
        return by_name[key]
    same_modality = [s for s in allowed if s.modality == key]
    if len(same_modality) == 1:
        return same_modality[0]
    names = ", ".join(by_name) or "none"
    raise RequestError(422, f"unknown input {key!r}; this endpoint takes: {names}")


def from_json(
    body: bytes, manifest: Manifest, allowed: tuple[InputSpec, ...], limits: RequestLimits, admit: Admit | None = None
) -> ParsedInputs:
    """Parse ``{"inputs": {name: value}}``, after costing it (:func:`json_bytes`) against the budgets."""
    cost = json_bytes(body)
    _within_budget(cost, limits)
    if admit is not None:
        admit(cost)
    try:
        data = json.loads(body)
    except RecursionError as e:
        raise RequestError(400, "the JSON body is nested too deeply") from e
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, an integer of over 4300 digits
        raise RequestError(400, f"the body is not valid JSON ({_short(e)})") from e
    if not isinstance(data, dict) or not isinstance(data.get("inputs"), dict):
        raise RequestError(422, 'expected a JSON object {"inputs": {"<input name>": value, ...}}')
    values: dict[str, tuple[Any, int]] = {}
    for key, raw in data["inputs"].items():
        spec = resolve(manifest, key, allowed)
        if spec.name in values:
            raise RequestError(422, f"input {spec.name!r} is given twice (by name and by modality)")
        values[spec.name] = _json_value(spec, raw)
    return _finish(values, allowed, limits)


def _short(e: Exception, limit: int = 200) -> str:
    """An exception's message, cut so that a huge echoed value cannot flood responses or logs."""
    text = str(e)
    return text if len(text) <= limit else text[:limit] + "..."


def _json_value(spec: InputSpec, raw: Any) -> tuple[Any, int]:
    """One JSON value as (tensor or raw item list, rows)."""
    what = f"input {spec.name!r}"
    texts = _texts(raw) if spec.modality == "text" else None
    if texts is not None:
        return texts, len(texts)
    if spec.modality == "text" and any(isinstance(v, dict) for v in (raw if isinstance(raw, list) else [raw])):
        raise RequestError(
            422, f'{what}: a text pair is {{"text": "...", "text_pair": "..."}}, both strings and no other keys'
        )
    array = _numeric(raw, what, spec)
    if isinstance(array, list):  # ragged token id lists: one raw item each
        return array, len(array)
    rank = len(spec.shape)
    if array.ndim == rank:
        return _cast(array, spec.dtype, what), array.shape[0]
    if spec.spectral and array.ndim in (1, 2):  # waves the runtime turns into the features: one, or one per row
        waves = [_raw_item(spec, row, what) for row in (array if array.ndim == 2 else [array])]
        return waves, len(waves)
    if array.ndim == rank - 1:
        return [_raw_item(spec, array, what)], 1
    raise RequestError(
        422,
        f"{what}: expected a nested array of rank {rank} (a batch of {spec.dtype} {list(spec.shape)}) or "
        f"{rank - 1} (one item), found rank {array.ndim}",
    )


def _texts(raw: Any) -> list[Any] | None:
    """Text items: a string or a text pair ``{"text": ..., "text_pair": ...}``, or a list of them; else None."""
    if is_text(raw):
        return [raw]
    if isinstance(raw, list) and raw and all(is_text(v) for v in raw):
        return list(raw)
    return None


def _numeric(raw: Any, what: str, spec: InputSpec) -> np.ndarray | list[np.ndarray]:
    if isinstance(raw, bool) or not isinstance(raw, list | int | float):
        raise RequestError(422, f"{what}: expected a nested array of numbers, found {type(raw).__name__}")
    try:
        array = np.asarray(raw)
    except ValueError as e:  # ragged nesting
        if spec.modality == "text" and isinstance(raw, list) and all(isinstance(r, list) for r in raw):
            return [_id_list(r, what) for r in raw]
        raise RequestError(422, f"{what}: the nested arrays have uneven lengths or are too deep ({e})") from e
    if array.dtype.kind not in "iuf":
        raise RequestError(
            422, f"{what}: expected numbers only, found {array.dtype.name} values (mixed types or integers too large)"
        )
    if array.size == 0:
        raise RequestError(422, f"{what}: is empty; pass at least one value")
    return array


def _id_list(raw: list, what: str) -> np.ndarray:
    """One token id list of a ragged batch."""
    try:
        array = np.asarray(raw)
    except ValueError as e:
        raise RequestError(422, f"{what}: each item of a ragged batch must be a flat list of token ids") from e
    if array.ndim != 1 or array.dtype.kind not in "iu" or array.size == 0:
        raise RequestError(422, f"{what}: each item of a ragged batch must be a non-empty flat list of token ids")
    return _cast(array, "int64", what)


def _cast(array: np.ndarray, dtype: str, what: str) -> np.ndarray:
    """JSON numbers to the tensor dtype, refusing lossy conversions."""
    target = np.dtype(dtype)
    if target.kind in "iub" and array.dtype.kind == "f":
        raise RequestError(422, f"{what}: expected integers ({dtype}), found fractional numbers")
    if target.kind in "iu" and array.size:
        info = np.iinfo(target)
        if array.min() < info.min or array.max() > info.max:
            raise RequestError(422, f"{what}: values must fit {dtype} [{info.min}, {info.max}]")
    if target.kind == "f" and array.size:
        top = float(np.abs(array).max())
        if top > float(np.finfo(target).max):
            raise RequestError(422, f"{what}: values must fit {dtype}, found magnitude {top:g}")
    return array.astype(target)


def _raw_item(spec: InputSpec, array: np.ndarray, what: str) -> np.ndarray:
    """One item without the batch axis, typed the way the runtime reads that modality."""
    if spec.modality == "text":
        return _cast(array, "int64", what)
    if spec.modality == "image" and array.dtype.kind in "iu" and array.size and array.min() >= 0 and array.max() <= 255:
        return array.astype(np.uint8)
    if spec.modality in ("image", "audio"):
        return _cast(array, "float32", what)
    return _cast(array, spec.dtype, what)


def from_form(
    form: Mapping[str, list[Any]],
    manifest: Manifest,
    allowed: tuple[InputSpec, ...],
    limits: RequestLimits,
    admit: Admit | None = None,
) -> ParsedInputs:
    """Parse multipart fields: files for image/audio inputs, strings for text, JSON arrays otherwise.

    ``form`` maps each field name to all its values (a repeated field is a batch); file values
    are ``(filename, bytes)`` pairs. Every file is measured from its header first; nothing is
    decoded unless the whole request fits ``limits`` and ``admit`` accepts its decoded size.
    """
    fields: dict[str, tuple[InputSpec, list[Any]]] = {}
    for key, items in form.items():
        spec = resolve(manifest, key, allowed)
        if spec.name in fields:
            raise RequestError(422, f"input {spec.name!r} is given twice (by name and by modality)")
        fields[spec.name] = (spec, items)
    cost = sum(_field_cost(spec, items, limits) for spec, items in fields.values())
    _within_budget(cost, limits)
    if admit is not None:
        admit(cost)
    values = {name: _form_value(spec, items) for name, (spec, items) in fields.items()}
    return _finish(values, allowed, limits)


def _field_cost(spec: InputSpec, items: list[Any], limits: RequestLimits) -> int:
    """Bytes one field's values take decoded, from file headers and JSON separators (422/413 if unusable)."""
    what = f"input {spec.name!r}"
    files = [i for i in items if isinstance(i, tuple)]
    if files and len(files) != len(items):
        raise RequestError(422, f"{what}: mixes uploaded files and plain fields; send one kind")
    if not files:
        return sum(json_bytes(i) for i in items)
    if spec.modality == "image":
        return sum(_image_bytes(data, f"{what} file {name!r}", limits) for name, data in files)
    if spec.modality == "audio":
        return sum(_audio_bytes(data, f"{what} file {name!r}", limits) for name, data in files)
    raise RequestError(422, f"{what}: is {spec.modality}; send it as a field, not a file")


def _form_value(spec: InputSpec, items: list[Any]) -> tuple[Any, int]:
    what = f"input {spec.name!r}"
    if items and isinstance(items[0], tuple):  # files (already measured, all of one kind)
        if spec.modality == "image":
            decoded = [_image(data, f"{what} file {name!r}", spec) for name, data in items]
        else:
            decoded = [_audio(data, f"{what} file {name!r}") for name, data in items]
        return decoded, len(decoded)
    if spec.modality == "text":
        return list(items), len(items)
    if len(items) != 1:
        raise RequestError(422, f"{what}: send one JSON array field (a batch is a nested array)")
    try:
        raw = json.loads(items[0])
    except RecursionError as e:
        raise RequestError(422, f"{what}: the JSON array field is nested too deeply") from e
    except ValueError as e:  # JSONDecodeError, an integer of over 4300 digits
        raise RequestError(422, f"{what}: expected a file upload or a JSON array field ({_short(e)})") from e
    return _json_value(spec, raw)


def _open_image(data: bytes, what: str) -> Any:
    """A lazily decoded Pillow image (only its header is read)."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as e:
        raise RequestError(415, "this server cannot read image files: install Pillow (mmedge[files])") from e
    try:
        return Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise RequestError(413, f"{what}: the image is too large ({e})") from e
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise RequestError(422, f"{what}: not a readable image ({_short(e)})") from e


def _image_bytes(data: bytes, what: str, limits: RequestLimits) -> int:
    """The decoded size of an uploaded image, from its header; 413 over the pixel limit."""
    width, height = _open_image(data, what).size
    if width * height > limits.max_image_pixels:
        raise RequestError(
            413, f"{what}: {width}x{height} pixels is over the limit of {limits.max_image_pixels:,} pixels"
        )
    return width * height * IMAGE_BYTES_PER_PIXEL


def _image(data: bytes, what: str, spec: InputSpec) -> Any:
    """Decode an uploaded image (already measured), a JPEG at the reduced scale the model's size allows."""
    image = _open_image(data, what)
    if isinstance(spec.preprocess, ImagePreprocess):
        decode_reduced(image, spec.preprocess)
    try:
        image.load()
    except (OSError, ValueError, SyntaxError) as e:  # truncated or corrupt pixel data
        raise RequestError(422, f"{what}: the image data is corrupt ({_short(e)})") from e
    return image


def _sound_file(data: bytes, what: str) -> Any:
    try:
        import soundfile
    except ImportError as e:
        raise RequestError(415, "this server cannot read sound files: install soundfile (mmedge[files])") from e
    try:
        return soundfile.SoundFile(io.BytesIO(data))
    except (RuntimeError, TypeError, ValueError) as e:  # LibsndfileError is a RuntimeError
        raise RequestError(422, f"{what}: not a readable sound file ({_short(e)})") from e


def _audio_bytes(data: bytes, what: str, limits: RequestLimits) -> int:
    """The decoded size of an uploaded sound file, from its header; 413 over the duration limit."""
    with _sound_file(data, what) as f:
        seconds = f.frames / f.samplerate if f.samplerate else float("inf")
        if seconds > limits.max_audio_seconds:
            raise RequestError(
                413, f"{what}: {seconds:.1f} s of audio is over the limit of {limits.max_audio_seconds:g} s"
            )
        return f.frames * f.channels * AUDIO_BYTES_PER_SAMPLE


def _audio(data: bytes, what: str) -> Any:
    """Decode an uploaded sound file (already measured)."""
    from mmedge.runtime.preprocess import Audio

    with _sound_file(data, what) as f:
        try:
            wave = f.read(dtype="float32", always_2d=True)
        except (RuntimeError, TypeError, ValueError) as e:
            raise RequestError(422, f"{what}: not a readable sound file ({_short(e)})") from e
        rate = f.samplerate
    if wave.shape[0] == 0:
        raise RequestError(422, f"{what}: the sound file has no samples")
    return Audio(np.ascontiguousarray(wave.T), int(rate))


def _finish(values: dict[str, tuple[Any, int]], allowed: tuple[InputSpec, ...], limits: RequestLimits) -> ParsedInputs:
    if not values:
        raise RequestError(422, f"no inputs given; this endpoint takes: {', '.join(s.name for s in allowed)}")
    rows = {name: n for name, (_, n) in values.items()}
    largest = max(rows.values())
    if largest > limits.max_rows:
        raise RequestError(413, f"{largest} items in one request is over the limit of {limits.max_rows}")
    missing = [s.name for s in required_inputs(allowed) if s.name not in values]
    if missing:
        raise RequestError(422, f"missing required input(s): {', '.join(missing)}")
    specs = {s.name: s for s in allowed}
    problems = batch_problems({name: (str(specs[name].shape[0]), n) for name, n in rows.items()})
    if problems:
        raise RequestError(422, "; ".join(problems))
    return ParsedInputs({name: v for name, (v, _) in values.items()}, largest)


MAX_BEAM_SIZE = 64  # bounds on one /v1/generate request's work
MAX_GENERATED = 512


def generation_options(query: Mapping[str, str]) -> dict[str, Any]:
    """``Pipeline.generate`` options from the query string: strategy, beam_size, max_len (422 if bad)."""
    unknown = sorted(set(query) - {"strategy", "beam_size", "max_len"})
    if unknown:
        raise RequestError(
            422, f"unknown query parameter(s) {unknown}; /v1/generate takes strategy, beam_size, max_len"
        )
    strategy = query.get("strategy", "greedy")
    if strategy not in STRATEGIES:
        raise RequestError(422, f"strategy must be one of {list(STRATEGIES)}, found {strategy!r}")
    numbers = {}
    for name, default, low, high in (("beam_size", 4, 1, MAX_BEAM_SIZE), ("max_len", None, 1, MAX_GENERATED)):
        text = query.get(name)
        if text is None:
            numbers[name] = default
            continue
        try:
            value = int(text)
        except ValueError:
            raise RequestError(422, f"{name} must be an integer, found {text!r}") from None
        if not low <= value <= high:
            raise RequestError(422, f"{name} must be from {low} to {high}, found {value}")
        numbers[name] = value
    return {"strategy": strategy, **numbers}
