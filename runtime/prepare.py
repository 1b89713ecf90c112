"""Raw inputs (files, strings, arrays) → the tensors a bundle's graphs take, without opening a session.

What ``Pipeline.run`` does before anything runs, for callers that need the tensors themselves:
calibration and held-out data for ``mmedge quantize`` given as the files users have, preprocessed
exactly as the deployed bundle will preprocess them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from mmedge.bundle import Bundle, load_bundle
from mmedge.graph import Graph
from mmedge.runtime._inputs import InputRouter
from mmedge.runtime.limits import DEFAULT_LIMITS, InputLimits

__all__ = ["input_preparer"]


def input_preparer(
    bundle: str | os.PathLike[str] | Bundle, limits: InputLimits = DEFAULT_LIMITS
) -> Callable[[Mapping[str, Any]], dict[str, np.ndarray]]:
    """A function from one ``Pipeline.run`` inputs dict to every raw input tensor, batch axis included.

    Derived inputs (an attention mask from the same strings) and defaults are filled in; a value
    the bundle cannot take raises :class:`~mmedge.errors.InputError` naming every problem.
    """
    loaded = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    graph = Graph(loaded.manifest)
    router = InputRouter(loaded, graph, limits)

    def prepare(inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        return dict(router.resolve(inputs, graph.outputs).raw)

    return prepare
