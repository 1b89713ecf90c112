"""The import contract of DESIGN.md holds, and the check catches a deliberately wrong import."""

from __future__ import annotations

import pytest
from guarantees._layers import LAYERS, Import, modules, unit, violations


def test_the_tree_keeps_the_layers_and_privacy() -> None:
    found = violations()
    assert not found, "imports that break DESIGN.md's layers:\n" + "\n".join(map(str, found))


def test_every_unit_has_a_layer() -> None:
    units = {unit(m) for m in modules()} - {""}
    assigned = {u.strip() for layer in LAYERS for u in layer.replace("|", ":").split(":")}
    assert units <= assigned, f"add {sorted(units - assigned)} to LAYERS"


@pytest.mark.parametrize(
    ("importer", "imported", "rule"),
    [
        pytest.param("mmedge.bundle", "mmedge.runtime.pipeline.Pipeline", "layers", id="contract-imports-runtime"),
        pytest.param("mmedge.quantize.api", "mmedge.runtime.Pipeline", "layers", id="stage-imports-runtime"),
        pytest.param("mmedge.export.api", "mmedge.quantize.quantize_bundle", "layers", id="stage-imports-stage"),
        pytest.param("mmedge.runtime.pipeline", "mmedge.bench.bench", "layers", id="runtime-imports-app"),
        pytest.param("mmedge.serve.app", "mmedge.runtime._inputs.InputRouter", "privacy", id="private-module"),
        pytest.param("mmedge.bench.api", "mmedge.export._split", "privacy", id="app-imports-stage-private"),
    ],
)
def test_a_wrong_import_is_caught(importer: str, imported: str, rule: str) -> None:
    found = violations(extra=(Import(importer, imported, 1),))
    assert [v.rule for v in found if v.importer == importer and v.line == 1] == [rule]


def test_allowed_imports_pass() -> None:
    allowed = (
        Import("mmedge.bench.api", "mmedge.runtime.Pipeline", 1),
        Import("mmedge.export._split", "mmedge.export._types.EncoderSpec", 1),
        Import("mmedge.runtime.pipeline", "mmedge.sessions.open_session", 1),
    )
    assert not [v for v in violations(extra=allowed) if v.line == 1 and v.importer in {i.importer for i in allowed}]
