"""A per-sample bound on |logits_r - logits_f| that follows the difference of the two
networks: resolution r (quantized.py) and the float model (the float64 evaluation
of the graph, ops.forward).

For every tensor t the pass carries, per sample, an estimate D[t] of
Delta_t = x_r[t] - x_f[t] (a float64 tensor; None means 0) and a rigorous radius
B[t] >= ||Delta_t - D[t]||_2. At the logits, |Delta_j| <= |D_j| + (a bound on
entry j of the error), and that is the logit's radius.

Linear / conv node z = h W^T + b (h the r-network's input, dh = h - Q_r(h) and
dW = W - Q_r(W) its truncations, both exact in float64):

    delta_z = z_r - z_f = (Delta - dh) W^T - Q_r(h) dW^T + rho,
    |rho| <= u (|C| + |z|) + gamma_(k+1) (|h_f| |W|^T + |b|)   (both roundings)

The estimate is delta_z's value with cheap products. Mode p (1..3): u~ = D - dh
and h to p digit planes, W and dW = W's planes r+1..r+p to p planes, both exact
int8 products rounded once (quantized.linear_at), P1 - P2. Mode "f64": the float
model's node evaluated on the estimate h - D (one float64 product). Mode 0: no
estimate (D = 0): the whole local error goes into the radius, as an operator-norm
bound does. The radius grows by S B_in (S >= ||W||_2) plus norms of what the
estimate leaves out (truncation residuals of u~, h, W and dW, the roundings).

Other nodes f: the estimate of x_f is w = x_r - D, and D_y = y_r - f(w), so
Delta_y - D_y = f(w) - f(x_f) (+ the roundings of f in both networks): B_y = L B_x
with f's Lipschitz constant in l2 (ReLU, clip: 1; leaky/PReLU: max(1, |alpha|);
max pooling: sqrt(overlap); average pooling: sqrt(overlap / smallest window)),
a sum adds radii, a concatenation takes the root of their squares, data movement
keeps them. Only B compounds through the depth; the estimate follows the
difference signed, so a ReLU whose input keeps its sign passes it whole or not at
all and errors of random sign cancel as they do in the networks themselves.
"""
import math

import numpy as np

from lrmpi.nn import ops
from lrmpi.nn.verified import U1, UP, gamma, norm_up, residual, sample_exps, up

EXACT = ("relu", "clip", "maxpool")             # f computed without rounding
ROUNDED = ("leakyrelu", "prelu", "affine")      # one rounding per element
POOLS = ("avgpool", "globalavgpool")            # a sum of K terms and a division
MOVES = ("flatten", "reshape", "pad")           # data movement: D moves with x


class DiffTracker:
    """The bound of one pass (resolution r, a batch of n samples). `plan` maps each
    linear node's output to its mode (0, 1..3 planes, or "f64"); `estimates(node)`
    returns the node's EstimateWeights (the planes of W and of W - Q_r(W))."""

    def __init__(self, graph, norms, estimates, r, bits, n, plan, level="tight"):
        self.graph, self.norms, self.estimates = graph, norms, estimates
        self.r, self.bits, self.plan, self.level = r, bits, plan, level
        self.D, self.B = {graph.input: None}, {graph.input: np.zeros(n)}
        self.logit_radius = None
        self.last = {}
        for i, nd in enumerate(graph.nodes):
            for t in nd.inputs:
                self.last[t] = i
        self.index = {nd.output: i for i, nd in enumerate(graph.nodes)}

    # --- bookkeeping ---
    def _done(self, node, D, B, per=None):
        B = up(B)
        self.D[node.output], self.B[node.output] = D, B
        if node.output == self.graph.output:
            glob = B[:, None] + (0.0 if D is None else np.abs(D))
            glob = up(np.broadcast_to(glob, (len(B), self.graph.outputs)))
            self.logit_radius = glob if per is None else np.minimum(up(per), glob)
        i = self.index[node.output]
        for t in node.inputs:
            if self.last.get(t) == i:
                self.D.pop(t, None)
                self.B.pop(t, None)

    # --- linear and conv nodes ---
    def linear(self, node, h, e, C, z):
        nn_ = self.norms.nodes[node.output]
        D, beta = self.D[node.inputs[0]], self.B[node.inputs[0]]
        mode = self.plan.get(node.output, 0)
        if mode != "f64":
            mode = max(0, min(mode, 53 // self.bits - self.r))  # W's planes float64 holds
        S = nn_.operator(self.level)
        g = gamma(nn_.k + 1)
        nh = norm_up(h)
        rootP = math.sqrt(nn_.positions) * UP
        out = node.output == self.graph.output and node.op == "linear"
        if mode == "f64":
            hf = h if D is None else h - D
            dz = z - ops.float_linear(node, hf)
            nhf = norm_up(hf)
            # (hf - h_f) W^T, the shadow's and the float model's roundings, dz's
            beta_z = (S * (beta + U1 * nhf) + g * (nn_.A * (2 * nhf * (1 + U1) + beta)
                                                   + 2 * nn_.bnorm * rootP)
                      + U1 * norm_up(dz))
            per = None
            if out:
                rows = nn_.rows[None, :]
                per = (np.abs(dz) * (1 + U1) + rows * (beta + U1 * nhf)[:, None]
                       + g * (rows * (2 * nhf * (1 + U1) + beta)[:, None]
                              + 2 * np.abs(node.params["b"])[None, :]))
            return self._done(node, dz, beta_z, per)
        r = self.r
        dh = residual(h, e, self.bits, r)
        ut = -dh if D is None else D - dh
        nut = norm_up(ut)
        dSr, drr = nn_.residual(r, self.level)
        nhf = nh + beta + (0.0 if D is None else norm_up(D))
        # the roundings of both networks (C rounded once, + b; the float model)
        rho = U1 * (norm_up(C) + norm_up(z)) + g * (nn_.A * nhf + nn_.bnorm * rootP)
        if mode == 0:
            beta_z = S * (beta + nut * (1 + U1)) + dSr * nh + rho
            per = None
            if out:
                rows = nn_.rows[None, :]
                per = (rows * (beta + nut * (1 + U1))[:, None] + drr[None, :] * nh[:, None]
                       + self._rho_rows(node, nn_, C, z, nhf))
            return self._done(node, None, beta_z, per)
        p = mode
        est = self.estimates(node)
        eu = sample_exps(ut)
        P1 = ops_product(node, ut, est.leading(p), p, self.bits)
        P2 = ops_product(node, h, est.residual(r, p), p, self.bits)
        dz = P1 - P2
        nres = norm_up(residual(ut, eu, self.bits, p))          # ut - Q_p(ut)
        dSp, drp = nn_.residual(p, self.level)                   # W - Q_p(W)
        dSrp, drrp = nn_.residual(r + p, self.level)             # dW - its p planes
        if p < r:    # Q_r(h) - Q_p(h): h's planes p+1..r (exact)
            nmid = norm_up(residual(h, e, self.bits, p) - dh)
        else:        # Q_p(h) - Q_r(h): planes r+1..p
            nmid = norm_up(dh - residual(h, e, self.bits, p))
        eta = (S * (U1 * nut + nres) + dSp * nut + dSrp * nh + (dSr + dSrp) * nmid
               + U1 * (norm_up(P1) + norm_up(P2) + norm_up(dz)))
        beta_z = S * beta + eta + rho
        per = None
        if out:
            rows = nn_.rows[None, :]
            per = (np.abs(dz) * (1 + U1) + rows * (beta + U1 * nut + nres)[:, None]
                   + drp[None, :] * nut[:, None] + drrp[None, :] * nh[:, None]
                   + (drr + drrp)[None, :] * nmid[:, None] + U1 * (np.abs(P1) + np.abs(P2))
                   + self._rho_rows(node, nn_, C, z, nhf))
        return self._done(node, dz, beta_z, per)

    @staticmethod
    def _rho_rows(node, nn_, C, z, nhf):
        """Per logit, the roundings of both networks at the output node."""
        return (U1 * (np.abs(C) + np.abs(z))
                + gamma(nn_.k + 1) * (nn_.rows[None, :] * nhf[:, None]
                                      + np.abs(node.params["b"])[None, :]))

    # --- every other node ---
    def other(self, node, args, y):
        op, ins = node.op, node.inputs
        if op in MOVES:
            D = self.D[ins[0]]
            if D is not None:
                D = ops.apply(_zero_padding(node), [D])
            return self._done(node, D, self.B[ins[0]] * 1.0)
        if op == "add":
            return self._add(node, args)
        if op == "concat":
            Ds = [self.D[t] for t in ins]
            D = None if all(d is None for d in Ds) else np.concatenate(
                [np.zeros_like(a) if d is None else d for d, a in zip(Ds, args)], axis=1)
            B = np.sqrt(sum(self.B[t] ** 2 for t in ins)) * (1 + 4 * 2.0**-53)
            return self._done(node, D, B)
        if op not in EXACT + ROUNDED + POOLS:
            raise ValueError(f"no difference bound for {op}")
        D, bx = self.D[ins[0]], self.B[ins[0]]
        L, K = _lipschitz(node, args[0])
        if D is None:      # the estimate is 0: w = x_r exactly, f(w) = y
            w, yw, Dy, nw = args[0], y, None, norm_up(args[0])
            rw = 0.0
        else:
            w = args[0] - D
            yw = ops.apply(node, [w])
            Dy = y - yw
            nw = norm_up(w)
            rw = U1 * nw          # w's rounding
        nDy = 0.0 if Dy is None else norm_up(Dy)
        lip = L * (bx + rw)       # f(w) - f(x_f)
        if op in EXACT:
            B = lip + U1 * nDy
        elif op in ROUNDED:       # f's rounding at w and at x_f
            B = U1 * nDy + U1 * (2 + U1) * norm_up(yw) + lip * (1 + U1)
        else:                     # pooling sums K terms: gamma_(K+1) of f(|.|) in both
            B = U1 * nDy + gamma(K + 1) * L * (nw * (2 + U1) + bx) + lip
        return self._done(node, Dy, B)

    def _add(self, node, args):
        Ds = [self.D[t] for t in node.inputs]
        Bs = [self.B[t] for t in node.inputs]
        g = gamma(len(args) - 1)
        nx = sum(norm_up(a) for a in args)
        parts = [d for d in Ds if d is not None]
        D, nd = None, 0.0
        if parts:
            D = parts[0].copy()
            for d in parts[1:]:
                D = D + d
            nd = sum(norm_up(d) for d in parts)
        # y_r, y_f and D each round their sum by gamma_(n-1) of the |terms|
        B = sum(Bs) + g * (2 * nx + 2 * nd + sum(Bs))
        return self._done(node, D, B)


def _zero_padding(node):
    if node.op != "pad":
        return node
    return type(node)(node.op, node.inputs, node.output, {**node.params, "value": 0.0})


def _lipschitz(node, x):
    """(L, K): the node's Lipschitz constant in l2, and the terms its sums add."""
    op, p = node.op, node.params
    if op in ("relu", "clip"):
        return 1.0, 0
    if op == "maxpool":
        return math.sqrt(ops.window_overlap(p)) * UP, 0
    if op == "leakyrelu":
        return max(1.0, abs(float(p["alpha"]))), 0
    if op == "prelu":
        return max(1.0, float(np.max(np.abs(p["slope"])))), 0
    if op == "affine":
        c = np.abs(np.asarray(p["c"], np.float64))
        if p["fn"] in ("add", "sub", "rsub") or not c.size:
            return 1.0, 0
        if p["fn"] == "mul":
            return float(c.max()), 0
        return float((1.0 / c).max()) * (1 + 2.0**-50), 0
    if op == "globalavgpool":
        K = x.shape[2] * x.shape[3]
        return up(1.0 / math.sqrt(K)), K
    K = p["kernel"][0] * p["kernel"][1]
    return up(math.sqrt(ops.window_overlap(p) / smallest_window(x.shape, p))), K


def smallest_window(shape, p):
    """The smallest divisor of an average-pooling window: K with count_include_pad,
    else the fewest real (not padded) elements in any window."""
    K = p["kernel"][0] * p["kernel"][1]
    if p.get("count_include_pad", 0):
        return K
    ones = np.ones((1, 1) + tuple(shape[2:]))
    counts = ops.pool(ones, {**p, "count_include_pad": 1}, "avg") * K
    return max(1.0, float(counts.min()))


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
        from types import SimpleNamespace as NS
        w = self._all()
        exps = (w.enc.exps - shift).astype(np.int32)
        return NS(enc=NS(digits=w.enc.digits[first:first + p], exps=exps),
                  gemm=NS(digits=w.gemm.digits[first:first + p], exps=exps), group=w.group)
