"""The process quantize's one-graph check times a contender in (``python -m``; see :mod:`mmedge.process_timing`)."""

from __future__ import annotations

import sys

from mmedge.process_timing import serve_contender
from mmedge.quantize.whole_graph import load_contender

if __name__ == "__main__":
    sys.exit(serve_contender(load_contender))
