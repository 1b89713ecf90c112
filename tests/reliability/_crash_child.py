"""The process the crash-safety tests kill: ``export_model`` or ``quantize_bundle`` writing a bundle.

usage: python _crash_child.py export OUT
       python _crash_child.py quantize SRC OUT

Publishing is slowed down here (validating the staged bundle sleeps 1 s first), so the parent
can kill this process deterministically after the staged bundle is complete but before it is
renamed into place. Everything else is the real code path.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from mmedge.bundle import _load


def _slow_publish() -> None:
    load = _load.load_bundle

    def slow(path: Any, **kwargs: Any) -> Any:
        if ".partial-" in Path(path).name:
            time.sleep(1.0)
        return load(path, **kwargs)

    _load.load_bundle = slow  # what staged_bundle calls before renaming


def main(argv: list[str]) -> int:
    _slow_publish()
    if argv[0] == "export":
        from mmedge.export import export_model
        from mmedge.models import TextImageNet
        from mmedge.models.textimage import TextImageConfig

        model = TextImageNet(TextImageConfig(image_size=16, embed_dim=8, text_hidden=8, max_text_length=4))
        export_model(model, model.example_inputs(2), out=argv[1])
    else:
        from tinybundle import tiny_inputs

        from mmedge.quantize import quantize_bundle

        samples = [tiny_inputs(batch=2, seed=i) for i in range(5)]
        quantize_bundle(argv[1], argv[2], calibration=samples, min_agreement=0.0)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
