"""onnxruntime's symbolic shape inference, taught the opset-18 reductions it does not type.

Opset 18 moved ``axes`` from an attribute to an input for every ``Reduce*`` operator. onnxruntime's
``SymbolicShapeInference`` reads that input for ``ReduceSum`` and ``ReduceMean`` only; for the
others it falls back to ONNX's one-node inference, which cannot see the axes' value and, with
``keepdims=0``, leaves the output without a rank. The next binary operator then fails
(``TypeError: object of type 'NoneType' has no len()``). ``torchaudio.transforms.AmplitudeToDB``
with ``top_db`` exports exactly that ``ReduceMax`` (the clamp's peak), so every log-mel encoder
using it lost symbolic shapes before quantization. The other reductions share ``ReduceSum``'s
rule (axes from the second input, ``keepdims``), so the inference here routes them to it.
"""

from __future__ import annotations

from collections.abc import Callable

import onnx

__all__ = ["AXES_INPUT_REDUCTIONS", "infer_shapes"]

AXES_INPUT_REDUCTIONS = (
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceMax",
    "ReduceMin",
    "ReduceProd",
    "ReduceSumSquare",
)


def infer_shapes(model: onnx.ModelProto, *, auto_merge: bool) -> onnx.ModelProto:
    """``SymbolicShapeInference.infer_shapes(model, auto_merge=auto_merge)`` with the opset-18 reductions typed.

    Raises what onnxruntime's inference raises, and ``RuntimeError`` when some shape stays unknown.
    """
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference, get_opset

    class _Inference(SymbolicShapeInference):
        def __init__(self, *args: object) -> None:
            super().__init__(*args)
            for op in AXES_INPUT_REDUCTIONS:
                self.dispatcher_[op] = self._with_axes_input(self.dispatcher_.get(op))

        def _with_axes_input(self, own: Callable[[onnx.NodeProto], None] | None) -> Callable[[onnx.NodeProto], None]:
            def infer(node: onnx.NodeProto) -> None:
                self._infer_ReduceSum(node)  # acts only where axes is an input (opset >= 13 for ReduceSum, 18 others)
                if own is not None:  # ReduceProd's own rule computes constant shape products
                    own(node)

            return infer

    if (get_opset(model) or 0) < 7:
        raise ValueError("symbolic shape inference needs ONNX opset 7 or newer")
    inference = _Inference(2**31 - 1, auto_merge, False, 0)
    complete = False
    inference._preprocess(model)
    while inference.run_:
        complete = inference._infer_impl()
    inference._update_output_from_vi()
    if not complete:
        raise RuntimeError("Incomplete symbolic shape inference")
    return inference.out_mp_
