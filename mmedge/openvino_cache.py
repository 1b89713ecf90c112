"""A machine-local cache for the one OpenVINO graph: composed once per input shape, compiled once.

Why: opening the one graph reads every component through OpenVINO's ONNX frontend and composes
them (weights copied into the process), then compiles each input shape. A graph saved as OpenVINO
IR at its fixed shape and compiled from that file with OpenVINO's model cache (``CACHE_DIR``)
skips both: OpenVINO hashes the file and imports the compiled model it kept, and the composed graph
is never built in memory. For ResNet-50 + BERT-width INT8 that cuts the open from about 1.0 s to
0.2 s and the peak memory by tens of MiB (``benchmarks/NOTES.md``). The cost is disk: per input
shape, the IR (about the size of the component files) and OpenVINO's compiled model (about the
same again).

An entry is named by a hash of everything the composed graph depends on (the component files'
bytes, the wiring and outputs among them, the input shapes, the OpenVINO version), so a changed
bundle or an upgraded OpenVINO never reads a stale one. Entries are written in a scratch folder
and renamed into place (weights first), so a reader never sees half of one; one that cannot be
written or read is rebuilt, with a warning, never an error.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mmedge.bundle import Manifest, sha256_file

__all__ = ["GRAPH_PREFIX", "GraphCache"]

log = logging.getLogger("mmedge.runtime")

# Composed graphs in a cache folder: <prefix><hash>.xml/.bin; OpenVINO's compiled models there are *.blob.
GRAPH_PREFIX = "mmedge-graph-"


class GraphCache:
    """Where the composed graph of ``components`` at one input-shape signature lives in ``folder``.

    ``digests``: the sha256 of each component's file where already known and checked (a bundle
    loaded with hash checks); the others are hashed here.
    """

    def __init__(
        self,
        folder: Path,
        manifest: Manifest,
        files: Mapping[str, Path],
        components: Sequence[str],
        digests: Mapping[str, str] | None = None,
    ) -> None:
        import openvino as ov

        self.folder = folder
        known = digests or {}
        h = hashlib.sha256()
        for part in (
            ov.get_version(),
            repr(tuple(components)),
            *(f"{c}={known.get(c) or sha256_file(files[c])}" for c in components),
            repr(tuple(e for c in components for e in manifest.edges_into(c))),
            repr(tuple(o for o in manifest.outputs if o.component in components)),
        ):
            h.update(part.encode() + b"\0")
        self._key = h.hexdigest()

    def path(self, signature: tuple[tuple[int, ...], ...]) -> Path:
        """The IR file of the graph at ``signature`` (one shape per input, in parameter order)."""
        digest = hashlib.sha256(f"{self._key}:{signature!r}".encode()).hexdigest()[:32]
        return self.folder / f"{GRAPH_PREFIX}{digest}.xml"

    def keep(self, model: Any, xml: Path) -> bool:
        """Save ``model`` as IR at ``xml`` (and its ``.bin``); False (with a warning) if it cannot."""
        import openvino as ov

        scratch = None
        try:
            scratch = Path(tempfile.mkdtemp(prefix=".scratch-", dir=self.folder))
            ov.save_model(model, str(scratch / "graph.xml"), compress_to_fp16=False)
            os.replace(scratch / "graph.bin", xml.with_suffix(".bin"))  # weights first: an .xml has its .bin
            os.replace(scratch / "graph.xml", xml)
            return True
        except Exception as e:  # noqa: BLE001 - a cache that cannot be written is skipped, never fatal
            log.warning(
                "not caching the OpenVINO graph in %s (%s); the next Pipeline composes it again", self.folder, e
            )
            return False
        finally:
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)
