"""The cheap bound (difference.py's mode 0 everywhere with the cheap norms): it reads
no tensor. Norms of x_r come from the planes' exponents (|h| < 2^e per sample) and
carried upper bounds M; the estimate is 0, so the whole local error goes into the
radius, as an operator-norm bound does. A base of difference.DiffTracker (its
bookkeeping: _done, _numel, _shape, _size, B, M, r, bits, norms, graph)."""
import math

import numpy as np

from lrmpi.nn.lipschitz import lipschitz, offset_norm
from lrmpi.nn.operators import MOVEMENT
from lrmpi.nn.verified import U1, UP, gamma

EXACT = ("relu", "clip", "maxpool")             # f computed without rounding
ROUNDED = ("leakyrelu", "prelu", "affine")      # one rounding per element
POOLS = ("avgpool", "globalavgpool")            # a sum of K terms and a division
MOVES = ("pad",) + MOVEMENT                      # data movement: D moves with x (L = 1,
# or lipschitz.py's sqrt(repeats) of a gather that takes an entry more than once)


class CheapBound:
    """DiffTracker's fast mode (`self.fast`): linear and other nodes from shapes,
    exponents and carried norms. `self._sum` adds named terms (difference._sum)."""

    def _linear_fast(self, node, nn_, h, e, C, z, beta, S, g, rootP):
        """Mode 0 without reading h or z: |h_i| < 2^e and |dh_i| < 2^(e - bits r) per
        sample, ||C|| <= ||Q_r(W)|| ||Q_r(h)||, ||Q_r(W)|| <= S + dS_r."""
        root = math.sqrt(self._numel(node.inputs[0])) * UP
        nh = np.ldexp(root, e)
        ndh = np.ldexp(root, e - self.bits * self.r)
        dSr, drr = nn_.residual(self.r, self.level)
        nC = (1 + U1) * (S + dSr) * nh
        nz = (1 + U1) * (nC + nn_.bnorm * rootP)
        nf = nh + beta
        beta_z = self._sum({"carried": S * beta, "r_rounding": U1 * (nC + nz),
                            "float_rounding": g * (nn_.A * nf + nn_.bnorm * rootP),
                            "input_truncation": S * ndh, "weight_truncation": dSr * nh})
        per = None
        if node.output == self.graph.output and node.op == "linear":
            rows = nn_.rows[None, :]
            per = self._sum({"carried": rows * beta[:, None],
                             "r_rounding": U1 * (np.abs(C) + np.abs(z)),
                             "float_rounding": g * (rows * nf[:, None]
                                                    + np.abs(node.params["b"])[None, :]),
                             "input_truncation": rows * ndh[:, None],
                             "weight_truncation": drr[None, :] * nh[:, None]})
        return self._done(node, None, beta_z, per, M=nz)

    def _other_fast(self, node, args, y):
        """Every other node with no estimate (D = 0), from carried norm bounds M."""
        op, p, ins = node.op, node.params, node.inputs
        Ms = [self._size(t, a) for t, a in zip(ins, args)]
        Bs = [self.B[t] for t in ins]
        if op == "add":
            g = gamma(len(args) - 1)
            B = self._sum({"carried": sum(Bs), "op_rounding": g * (2 * sum(Ms) + sum(Bs))})
            return self._done(node, None, B, M=(1 + g) * sum(Ms))
        if op == "concat":
            B = np.sqrt(sum(b * b for b in Bs)) * (1 + 4 * 2.0**-53)
            return self._done(node, None, self._sum({"carried": B}),
                              M=np.sqrt(sum(m * m for m in Ms)) * (1 + 4 * 2.0**-53))
        M, bx = Ms[0], Bs[0]
        if op in MOVES:   # a pad adds its constant entries to x's norm
            extra, L = 0.0, lipschitz(node, self._shape(ins[0]))[0]
            if op == "pad":
                extra = abs(float(p.get("value", 0.0))) * math.sqrt(
                    max(0, self._numel(node.output) - self._numel(ins[0]))) * UP
            return self._done(node, None, self._sum({"carried": L * bx}), M=L * M + extra)
        if op not in EXACT + ROUNDED + POOLS:
            raise ValueError(f"no difference bound for {op}")
        L, K = lipschitz(node, self._shape(ins[0]))
        terms = {"carried": L * bx}
        if op in ("relu", "maxpool"):
            My = L * M
        elif op == "clip":   # |clip(x)| <= max(|x|, lo if lo > 0, -hi if hi < 0)
            c = max(p.get("lo", 0.0), -p.get("hi", 0.0), 0.0)
            My = M + c * math.sqrt(self._numel(node.output)) * UP
        elif op in ROUNDED:
            My = (1 + U1) * (L * M + offset_norm(node, self._shape(ins[0])))
            terms["op_rounding"] = U1 * (2 + U1) * My + U1 * L * bx
        else:                # pooling
            terms["op_rounding"] = gamma(K + 1) * L * (M * (2 + U1) + bx)
            My = (1 + gamma(K + 1)) * L * M
        return self._done(node, None, self._sum(terms), M=My)
