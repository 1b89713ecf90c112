"""Integrations with other systems, one module each, imported explicitly (each needs its own extra):

* :mod:`mmedge.integrations.ray`: batch inference over Ray Datasets (``pip install 'mmedge[ray]'``).
"""

__all__: list[str] = []
