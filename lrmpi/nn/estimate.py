"""The estimate's products and weights (difference.py, modes 1..4): exact int8
products of a few digit planes, through the resolution-r product of quantized.py.
(docs/design.md, "Inference")
"""
from types import SimpleNamespace as NS

import numpy as np


def ops_product(node, x, weights, p, bits):
    """fl(Q_p(x) Q_p(W)^T) exactly rounded once: the resolution-p product of the node
    with these weights (no bias). One plane of a dense layer is one int8 product
    whose int32 sums float64 holds exactly, scaled by powers of two (exact in the
    normal range): half the time of the general path's accumulate and decode."""
    from lrmpi.nn.quantized import linear_at, quantize_samples
    if p == 1 and node.op == "linear" and len(x):
        from lrmpi.numerics import kernels
        D, e = quantize_samples(x, bits, 1)
        Wd, ew = weights.enc.digits[0], weights.enc.exps.astype(np.int64)
        s = e.astype(np.int64) - 2 * bits
        if D.shape[2] <= kernels.kmax(bits) and min(s.min(), ew.min()) > -900 and \
                max(s.max(), ew.max()) < 900:
            C = np.empty((D.shape[1], Wd.shape[0]), np.int32)
            kernels.igemm(D[0], np.ascontiguousarray(Wd), C, accumulate=False)
            out = C.astype(np.float64)
            out *= np.ldexp(1.0, s)[:, None]
            out *= np.ldexp(1.0, ew)[None, :]
            return out
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
        digits = w.enc.digits[first:first + p]
        return NS(enc=NS(digits=digits, exps=exps, planes=len(digits)), planes=len(digits),
                  gemm=NS(digits=w.gemm.digits[first:first + p], exps=exps), group=w.group)
