"""The bundle contract: a directory of ONNX files described by a versioned ``manifest.json``.

The manifest is the only thing stages share (export → quantize → runtime → mobile), so it is
typed here as frozen dataclasses (``_types``), parsed (``_parse``) and checked thoroughly on load
(``_validate``, ``_integrity``, ``_load``): format version, unique names, one edge per input, no
cycles, files present and confined to the bundle, sha256 of every file, external weights only in
hashed assets, and the ONNX graphs' IO against the manifest, in linear time. Writes are staged in
a sibling directory and renamed into place (``_publish``), so a crash never leaves a half-written
bundle where a complete one is expected.
"""

from mmedge.bundle._deploy import MONOLITHIC_ASSET, deploy_assets, deploy_bytes, directory_bytes, write_sized
from mmedge.bundle._hashing import sha256_file
from mmedge.bundle._integrity import check_io, verify_component_file
from mmedge.bundle._load import load_bundle
from mmedge.bundle._order import wiring_stages
from mmedge.bundle._parse import manifest_from_dict, manifest_to_dict
from mmedge.bundle._publish import check_replaceable, scratch_directory, staged_bundle, write_manifest
from mmedge.bundle._types import (
    AUDIO_FEATURES,
    BATCH,
    CROP_ROUNDINGS,
    DTYPES,
    FORMAT_VERSION,
    FORMATS,
    INTERPOLATIONS,
    MANIFEST_NAME,
    MAX_ITEM_ELEMENTS,
    MAX_MANIFEST_BYTES,
    MODALITIES,
    OPENVINO_BUILD_PREFIX,
    OUTPUT_KINDS,
    PRECISIONS,
    RANKED_KINDS,
    RAW_INPUTS,
    ROLES,
    Asset,
    AudioPreprocess,
    Bundle,
    Component,
    Dim,
    Edge,
    GenerationSpec,
    ImagePreprocess,
    InputSpec,
    Manifest,
    ModelInfo,
    OutputSpec,
    Preprocess,
    TensorSpec,
    TextPreprocess,
    Verification,
    derived_inputs,
    has_batch_axis,
    is_batch_symbol,
    modality_batch,
    openvino_build_asset,
    own_items,
    required_inputs,
)
from mmedge.bundle.vocab import vocab_size

__all__ = [
    "AUDIO_FEATURES",
    "BATCH",
    "CROP_ROUNDINGS",
    "DTYPES",
    "FORMATS",
    "FORMAT_VERSION",
    "INTERPOLATIONS",
    "MANIFEST_NAME",
    "MAX_ITEM_ELEMENTS",
    "MAX_MANIFEST_BYTES",
    "MODALITIES",
    "MONOLITHIC_ASSET",
    "OPENVINO_BUILD_PREFIX",
    "OUTPUT_KINDS",
    "PRECISIONS",
    "RANKED_KINDS",
    "RAW_INPUTS",
    "ROLES",
    "Asset",
    "AudioPreprocess",
    "Bundle",
    "Component",
    "Dim",
    "Edge",
    "GenerationSpec",
    "ImagePreprocess",
    "InputSpec",
    "Manifest",
    "ModelInfo",
    "OutputSpec",
    "Preprocess",
    "TensorSpec",
    "TextPreprocess",
    "Verification",
    "check_io",
    "check_replaceable",
    "deploy_assets",
    "deploy_bytes",
    "derived_inputs",
    "directory_bytes",
    "has_batch_axis",
    "is_batch_symbol",
    "load_bundle",
    "manifest_from_dict",
    "manifest_to_dict",
    "modality_batch",
    "openvino_build_asset",
    "own_items",
    "required_inputs",
    "scratch_directory",
    "sha256_file",
    "staged_bundle",
    "verify_component_file",
    "vocab_size",
    "wiring_stages",
    "write_manifest",
    "write_sized",
]
