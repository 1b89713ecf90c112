"""Per-component EP policy, strict placement (no CPU fallback) and partition warnings."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from tinybundle import tiny_inputs

from mmedge.bundle import load_bundle
from mmedge.errors import ConfigError, PartitionWarning, ProviderError
from mmedge.runtime import Pipeline
from mmedge.runtime.policy import component_plans
from mmedge.sessions import count_partitions

CPU, AZURE, COREML = "CPUExecutionProvider", "AzureExecutionProvider", "CoreMLExecutionProvider"
KNOWN = (CPU, AZURE, COREML, "CUDAExecutionProvider")


def test_each_component_takes_its_name_then_its_modality_then_the_default(tiny_bundle: Path) -> None:
    manifest = load_bundle(tiny_bundle).manifest
    policy = {"image": "coreml", "image_encoder": "cpu", "text": AZURE, "*": "auto"}
    plans = component_plans(policy, manifest, fallback=True, available=(CPU, AZURE), known=KNOWN)
    assert {c: p.names for c, p in plans.items()} == {
        "text_encoder": (AZURE, CPU),  # its modality
        "image_encoder": (CPU,),  # its name wins over its modality
        "audio_encoder": (CPU,),  # "*": auto, and this build has nothing better
        "fusion_head": (CPU,),
    }
    assert plans["text_encoder"] is not plans["image_encoder"]


def test_a_policy_key_naming_nothing_in_the_bundle_is_an_error(tiny_bundle: Path) -> None:
    with pytest.raises(ConfigError, match=r"providers keys \['imgae'\] name no component or modality"):
        Pipeline(tiny_bundle, providers={"imgae": "cpu", "*": "auto"})


def test_pipeline_runs_with_a_policy_and_reports_it_per_component(tiny_bundle: Path) -> None:
    with Pipeline(tiny_bundle, providers={"text": [AZURE], "*": "cpu"}, threads=1) as pipe:
        assert pipe.run(tiny_inputs())["logits"].shape == (2, 3)
        used = pipe.providers_used
    assert used["text_encoder"].registered == (AZURE, CPU)
    assert any("AzureExecutionProvider is registered but took none" in n for n in used["text_encoder"].fallbacks)
    assert used["image_encoder"].registered == (CPU,)


def test_strict_with_a_provider_that_cannot_take_a_node_raises_naming_them(tiny_bundle: Path) -> None:
    with pytest.raises(
        ProviderError, match=r"component 'image_encoder' cannot run fully on AzureExecutionProvider"
    ) as e:
        Pipeline(tiny_bundle, providers={"image": [AZURE], "*": "cpu"}, strict=True)
    assert "4 node(s) would run on the CPU: Conv, Relu, GlobalAveragePool, Flatten" in str(e.value)


def test_strict_on_the_cpu_alone_is_satisfied(tiny_bundle: Path) -> None:
    with Pipeline(tiny_bundle, "cpu", strict=True, threads=1) as pipe:
        assert pipe.run(tiny_inputs())["logits"].shape == (2, 3)


@pytest.mark.parametrize(
    ("subgraphs", "expected"),
    [
        pytest.param([(CPU, 1)] * 4, {CPU: 1}, id="cpu-nodes-one-piece"),
        pytest.param([(COREML, 5), (CPU, 1), (CPU, 1), (COREML, 3), (CPU, 1)], {COREML: 2, CPU: 2}, id="interleaved"),
        pytest.param([(COREML, 2), (COREML, 2)], {COREML: 2}, id="fused-pieces-stay-apart"),
        pytest.param([], {}, id="nothing-recorded"),
    ],
)
def test_count_partitions(subgraphs: list, expected: dict) -> None:
    assert count_partitions(subgraphs) == expected


def _fake_assignment(pieces: int):
    """ORT's record for a graph an accelerator takes in ``pieces`` fused pieces with CPU nodes between."""

    def info(_session: object) -> list:
        subgraphs = []
        for i in range(pieces):
            subgraphs.append(SimpleNamespace(ep_name=AZURE, get_nodes=lambda: [object(), object()]))
            if i < pieces - 1:
                subgraphs.append(SimpleNamespace(ep_name=CPU, get_nodes=lambda: [object()]))
        return subgraphs

    return info


def test_too_many_partitions_warn_with_the_component_and_the_count(
    tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnxruntime as ort

    monkeypatch.setattr(ort.InferenceSession, "get_provider_graph_assignment_info", _fake_assignment(4))
    pipe = Pipeline(tiny_bundle, providers={"image": [AZURE], "*": "cpu"}, max_partitions=3, lazy=True)
    with pytest.warns(
        PartitionWarning, match=r"'image_encoder': AzureExecutionProvider takes the graph in 4 partitions"
    ):
        pipe.encode("image", tiny_inputs()["image"])
    assert pipe.providers_used["image_encoder"].partitions == {AZURE: 4, CPU: 3}
    pipe.close()
    with Pipeline(tiny_bundle, providers={"image": [AZURE], "*": "cpu"}, max_partitions=4, lazy=True) as quiet:
        quiet.encode("image", tiny_inputs()["image"])  # within the limit: no warning (pytest turns one into an error)
