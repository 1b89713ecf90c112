"""Package a bundle for phones: ``mmedge mobile`` and :func:`package_mobile` (bundle → device bundle).

Fixes the shapes a device runs at, converts each component to ``.ort``, writes a reduced-operator
config for a minimal onnxruntime build, checks every converted file against its source, and
reports per target (android, ios, generic) which mobile execution providers could take each
component's nodes. A stage like quantize: it reads and writes only the bundle contract.
"""

from mmedge.mobile.api import TARGETS, MobileComponentReport, MobileReport, package_mobile, parse_fixed_shapes

__all__ = ["TARGETS", "MobileComponentReport", "MobileReport", "package_mobile", "parse_fixed_shapes"]
