"""``benchmarks/run_standard.py`` judges an image encoder against ceilings measured on its own CPU only."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from run_standard import ceiling_lines


def _machine(cpu: str, flags: list[str]) -> dict[str, Any]:
    return {"cpu": cpu, "flags": flags}


def test_ceilings_of_another_cpu_are_not_applied() -> None:
    record = {
        "setup": {"model": "ResNetBertNet", "config": {"image_size": 224}},
        "report": {"machine": _machine("AMD EPYC", ["avx2", "avx512_vnni"]), "variants": []},
    }
    ceilings = {"machine": _machine("Intel(R) Xeon(R) Processor", ["amx_int8", "avx2"]), "networks": {}, "peak": {}}
    (line,) = ceiling_lines(record, ceilings)
    assert "measured on another CPU (Intel(R) Xeon(R) Processor)" in line
    assert "run `benchmarks/ceilings.py` here" in line
