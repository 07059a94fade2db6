"""The estimate's products and weights (difference.py, modes 1..4): exact int8
products of a few digit planes, through the resolution-r product of quantized.py.
(docs/design.md, "Inference")
"""
from types import SimpleNamespace as NS

import numpy as np


def ops_product(node, x, weights, p, bits):
    """fl(Q_p(x) Q_p(W)^T) exactly rounded once: the resolution-p product of the node
    with these weights (no bias)."""
    from lrmpi.nn.quantized import linear_at
    return linear_at(node, x, weights, p, bits)[1]


class EstimateWeights:
    """A node's weights as the estimate multiplies them: its leading p planes, and
    planes r+1..r+p (W - Q_r(W) to p planes, scaled by 2^-(bits r)). Encoded once
    with all the planes float64 holds, on the rank that uses them."""

    def __init__(self, node, bits):
        self.node, self.bits, self._w = node, bits, None

    def _all(self):
        if self._w is None:
            from lrmpi.nn.quantized import NodeWeights
            self._w = NodeWeights(self.node, self.bits, 53 // self.bits)
        return self._w

    def leading(self, p):
        return self._slice(0, p, 0)

    def residual(self, r, p):
        return self._slice(r, p, self.bits * r)

    def _slice(self, first, p, shift):
        w = self._all()
        exps = (w.enc.exps - shift).astype(np.int32)
        return NS(enc=NS(digits=w.enc.digits[first:first + p], exps=exps),
                  gemm=NS(digits=w.gemm.digits[first:first + p], exps=exps), group=w.group)
