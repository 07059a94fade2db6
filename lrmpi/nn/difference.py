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

The estimate is delta_z's value with cheap products. Mode p (1..4): u~ = D - dh
to p digit planes and W to p planes (P1), h to min(p, r) planes and dW = W's planes
r+1..r+p to p planes (P2; for p > r that is Q_r(h) itself, whose planes past r are
zeros), both exact int8 products rounded once (quantized.linear_at), P1 - P2. Mode "f64": the float
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
The invariants: docs/design.md, "Inference".
"""
import math
import time

import numpy as np

from lrmpi.nn import ops
from lrmpi.nn.graph import LINEAR_OPS
from lrmpi.nn.difference_cheap import EXACT, MOVES, POOLS, ROUNDED, CheapBound
from lrmpi.nn.difference_relu import ReluWithReader
from lrmpi.nn.estimate import ops_product
from lrmpi.nn.lipschitz import lipschitz
from lrmpi.nn.operators import maxpool_taps
from lrmpi.nn.verified import (U1, UP, gamma, linear_inputs, maxpool_difference, norm_up,
                                relu_difference, residual, residual_norm, up)

ARRAYS = frozenset(("h", "C", "z", "y"))        # the hook's arrays (nn-interface)


class DiffTracker(CheapBound, ReluWithReader):
    """The bound of one pass (resolution r, a batch of n samples). `plan` maps each
    linear node's output to its mode (0, 1..3 planes, or "f64"); `estimates(node)`
    returns the node's EstimateWeights (the planes of W and of W - Q_r(W))."""

    def __init__(self, graph, norms, estimates, r, bits, n, plan, level="tight",
                 product=None, buffers=None):
        self.graph, self.norms, self.estimates = graph, norms, estimates
        # buffers.get(key, shape, dtype): arrays reused from one batch to the next (fresh
        # memory is slow to first touch); a pass's arrays live until the next pass of the
        # same buffers, so passes that share them run one after the other
        self.buffers = buffers
        # product(node, x, weights, p, key): the estimate's products through the fused
        # kernels (fused.FusedModel.product), None where they do not take the node
        self.product = product
        self.r, self.bits, self.plan, self.level = r, bits, plan, level
        self.n = n
        self.D, self.B, self.N = {graph.input: None}, {graph.input: np.zeros(n)}, {}
        # the cheap bound (mode 0 everywhere, cheap norms) reads no tensor: norms of
        # x_r come from the planes' exponents (|h| < 2^e) and carried upper bounds M
        self.fast = level == "cheap" and all(m == 0 for m in plan.values())
        self.M = {}
        self._pre = {}   # node -> linear_inputs' values, made before its pass (before_linear)
        self._deferred, self.readers = {}, {}   # difference_relu.ReluWithReader
        for nd in graph.nodes:
            for t in nd.inputs:
                self.readers.setdefault(t, []).append(nd)
        self.logit_radius = self.logit_estimate = None
        self.seconds = 0.0   # this thread's CPU time in the bound (cost accounting)
        self.last = {}
        for i, nd in enumerate(graph.nodes):
            for t in nd.inputs:
                self.last[t] = i
        self.index = {nd.output: i for i, nd in enumerate(graph.nodes)}
        out = next((nd for nd in graph.nodes if nd.output == graph.output), None)
        logits = frozenset(("C", "z")) if out is not None and out.op == "linear" else \
            frozenset()
        # what the hook reads (nn-interface: the fused pass materialises only these
        # float64 arrays; None comes for the others): the cheap bound reads shapes and
        # carried norms, and the logits' C and z; the difference bound reads a linear
        # node's h and z (C only at the logits), every other node's arguments and result
        self._wants = {}
        for nd in graph.nodes:
            mine = logits if nd is out else frozenset()
            self._wants[nd.output] = mine if self.fast else \
                (frozenset(("h", "z")) | mine if nd.op in LINEAR_OPS else ARRAYS)

    @staticmethod
    def _sum(terms):   # for CheapBound's methods: the terms as this module adds them
        return _sum(terms)

    def wants(self, node):
        return self._wants.get(node.output, ARRAYS)

    # --- bookkeeping ---
    def _out(self, node, name):
        """Where node's array `name` goes: a reused buffer, or None (fresh)."""
        if self.buffers is None:
            return None
        return lambda shape: self.buffers.get(("bound", node.output, name), shape, np.float64)

    def _numel(self, t):
        """Entries of tensor t per sample (its shape, not its values: the fast mode)."""
        return math.prod(self.graph.shapes[t])

    def _shape(self, t):
        return (self.n,) + tuple(self.graph.shapes[t])

    def _norm(self, t):
        """||D[t]||, computed once."""
        if t not in self.N:
            self.N[t] = norm_up(self.D[t])
        return self.N[t]

    def _size(self, t, x):
        """An upper bound on ||x_r[t]|| per sample: carried (fast mode) or measured."""
        if t not in self.M:
            self.M[t] = norm_up(x)
        return self.M[t]

    def _done(self, node, D, B, per=None, nD=None, M=None):
        B = up(np.zeros(self.n) + B)
        self.D[node.output], self.B[node.output] = D, B
        if nD is not None:
            self.N[node.output] = nD
        if M is not None:
            self.M[node.output] = up(np.zeros(self.n) + M)
        if node.output == self.graph.output:
            if D is not None:   # logits (K, 1, ..., 1) of a conv or a pool: K scores
                D = D.reshape(len(D), -1)
            glob = B[:, None] + (0.0 if D is None or "estimate" in DROPPED else np.abs(D))
            glob = up(np.broadcast_to(glob, (len(B), self.graph.outputs)))
            self.logit_radius = glob if per is None else np.minimum(up(per), glob)
            self.logit_estimate = D
        i = self.index[node.output]
        for t in node.inputs:
            if self.last.get(t) == i:
                for d in (self.D, self.B, self.N, self.M):
                    d.pop(t, None)

    # --- the hook (quantized forward passes call it at every node) ---
    def before_linear(self, node, h, e):
        """Before a linear/conv node's pass (nn-interface, optional for a pass): (u~, p,
        W's planes r+1..r+p) if the pass can make the estimate's products itself, u~'s
        and h's p planes against W's planes 1..p and those (fused.FusedModel), else
        None; linear() then gets estimate=(fl(P1 - P2), the seconds it took) or makes
        them."""
        t = time.thread_time()
        mode, pre = self._mode(node), None
        self._resolve(node, e)
        if not self.fast and mode != "f64" and mode > 0 and node.output != self.graph.output:
            if node.output not in self._pre:
                self._pre[node.output] = linear_inputs(h, self.D[node.inputs[0]], e, self.bits,
                                                       self.r, min(mode, self.r),
                                                       self._out(node, "ut"))
            pre = (self._pre[node.output][0], mode, self.estimates(node).residual(self.r, mode))
        self.seconds += time.thread_time() - t
        return pre

    def linear(self, node, h, e, C, z, estimate=None):
        t = time.thread_time()
        self._resolve(node, e)
        self._linear(node, h, e, C, z, estimate)
        self.seconds += time.thread_time() - t + (estimate[1] if estimate else 0.0)

    def _mode(self, node):
        """The plan's mode for the node, within W's planes float64 holds."""
        mode = self.plan.get(node.output, 0)
        return mode if mode == "f64" else max(0, min(mode, 53 // self.bits - self.r))

    def other(self, node, args, y):
        t = time.thread_time()
        self._other(node, args, y)
        self.seconds += time.thread_time() - t

    # --- linear and conv nodes ---
    def _linear(self, node, h, e, C, z, estimate=None):
        nn_ = self.norms.nodes[node.output]
        D, beta = self.D[node.inputs[0]], self.B[node.inputs[0]]
        mode = self._mode(node)
        S, g = nn_.operator(self.level), gamma(nn_.k + 1)
        rootP = math.sqrt(nn_.positions) * UP
        if self.fast:
            return self._linear_fast(node, nn_, h, e, C, z, beta, S, g, rootP)
        nz = norm_up(z)
        nC = nz * (1 + U1) + nn_.bnorm * rootP             # C + b = z / (1 + delta)
        rows = nn_.rows[None, :]
        bias = np.abs(node.params["b"])[None, :]
        out = node.output == self.graph.output and node.op == "linear"
        if mode == "f64":
            hf = h if D is None else h - D
            # one sample at a time: BLAS's blocking (so its rounding) may depend on the
            # batch's size, and a sample's bound must not
            dz = z - np.concatenate([ops.float_linear(node, hf[i:i + 1])
                                     for i in range(len(hf))])
            nhf = norm_up(hf)
            rh = 0.0 if D is None else U1 * nhf  # hf's rounding
            nf = nhf + rh + beta                  # >= ||h_f||
            beta_z = _sum({"carried": S * beta, "estimate_rounding": S * rh + U1 * norm_up(dz),
                           "shadow": g * (nn_.A * nhf + nn_.bnorm * rootP),
                           "float_rounding": g * (nn_.A * nf + nn_.bnorm * rootP)})
            per = None if not out else _sum({
                "estimate": np.abs(dz), "carried": rows * beta[:, None],
                "estimate_rounding": U1 * np.abs(dz) + rows * np.reshape(rh, (-1, 1)),
                "shadow": g * (rows * nhf[:, None] + bias),
                "float_rounding": g * (rows * nf[:, None] + bias)})
            return self._done(node, dz, beta_z, per)
        r = self.r
        # ut = D - dh (dh = h - Q_r(h)), the norms of h and ut, and of h's planes
        # between p and r: one fused pass over h and D (verified.linear_inputs)
        pre = self._pre.pop(node.output, None)
        # P2 multiplies h's first min(p, r) planes: for p >= r that is Q_r(h) itself
        # (its planes past r are zeros: Q_p(Q_r(h)) = Q_r(h), the r-network's own
        # input), so no plane of h is left out (mid = 0)
        ut, nh, nut, eu, nmid = pre if pre is not None else \
            linear_inputs(h, D, e, self.bits, r, min(mode, r), self._out(node, "ut"))
        dSr, drr = nn_.residual(r, self.level)
        nf = nh + beta + (0.0 if D is None else self._norm(node.inputs[0]))  # >= ||h_f||
        common = {"carried": S * beta, "r_rounding": U1 * (nC + nz),
                  "float_rounding": g * (nn_.A * nf + nn_.bnorm * rootP)}
        common_rows = None if not out else {
            "carried": rows * beta[:, None], "r_rounding": U1 * (np.abs(C) + np.abs(z)),
            "float_rounding": g * (rows * nf[:, None] + bias)}
        if mode == 0:   # the operator-norm bound, with the tensors' own norms
            beta_z = _sum({**common, "input_truncation": S * nut * (1 + U1),
                           "weight_truncation": dSr * nh})
            per = None if not out else _sum({
                **common_rows, "input_truncation": rows * (nut * (1 + U1))[:, None],
                "weight_truncation": drr[None, :] * nh[:, None]})
            return self._done(node, None, beta_z, per)
        p = mode
        est = self.estimates(node)
        # p > r: P2's input is Q_r(h) = h - dh (exact), which p planes hold exactly
        hq = h if p <= r else h - residual(h, e, self.bits, r)
        if estimate is not None:   # made by the pass (before_linear): never the logits
            dz = estimate[0]
        elif out:   # the logits' terms read P1 and P2
            P1 = self._product(node, ut, est.leading(p), p, ("leading", p))
            P2 = self._product(node, hq, est.residual(r, p), p, ("residual", r, p),
                               of_input=p <= r)
            dz = P1 - P2
        else:     # fl(P1 - P2), by the kernel where it can (the same bits)
            P1 = self._product(node, ut, est.leading(p), p, ("leading", p))
            dz = self._product(node, hq, est.residual(r, p), p, ("residual", r, p),
                               of_input=p <= r, minus=P1)
        nres = residual_norm(ut, eu, self.bits, p)                     # ut - Q_p(ut)
        dSp, drp = nn_.residual(p, self.level)                         # W - Q_p(W)
        dSrp, drrp = nn_.residual(r + p, self.level)                   # dW - its p planes
        if dSr + dSrp == 0.0:
            nmid = np.zeros(len(h))   # (nmid is 0 when p == r: no planes between)
        beta_z = _sum({**common, "estimate_input": S * nres, "estimate_weights": dSp * nut,
                       "estimate_residual_weights": dSrp * nh,
                       "estimate_h_planes": (dSr + dSrp) * nmid,
                       # ||P1|| <= ||Q_p W|| ||u~||, ||P2|| <= ||Q_p dW|| ||h||, dz their sum
                       "estimate_rounding": U1 * (S * nut + 3 * ((S + dSp) * nut
                                                                 + (dSr + dSrp) * nh))})
        per = None if not out else _sum({
            **common_rows, "estimate": np.abs(dz),
            "estimate_input": rows * nres[:, None], "estimate_weights": drp[None, :] * nut[:, None],
            "estimate_residual_weights": drrp[None, :] * nh[:, None],
            "estimate_h_planes": (drr + drrp)[None, :] * nmid[:, None],
            "estimate_rounding": U1 * (rows * nut[:, None] + np.abs(P1) + np.abs(P2)
                                       + np.abs(dz))})
        return self._done(node, dz, beta_z, per)

    def _product(self, node, x, weights, p, key, of_input=False, minus=None):
        """fl(Q_p(x) Q_p(W')^T), or fl(minus - that): the same bits whichever computes
        it (`of_input`: x is the node's input h, whose planes the pass may have)."""
        out = None if self.product is None else \
            self.product(node, x, weights, p, key, of_input=of_input, minus=minus)
        if out is None:
            out = ops_product(node, x, weights, p, self.bits)
            out = out if minus is None else np.subtract(minus, out, out=out)
        return out

    # --- every other node ---
    def _other(self, node, args, y):
        op, ins = node.op, node.inputs
        if self.fast:
            return self._other_fast(node, args, y)
        if op in MOVES:   # L = 1, or sqrt(repeats) of a selection that repeats entries
            D, L = self.D[ins[0]], lipschitz(node, args[0].shape)[0]
            if D is not None:
                D = ops.apply(ops.zero_padding(node), [D])
            return self._done(node, D, _sum({"carried": L * self.B[ins[0]]}))
        if op == "add":
            return self._add(node, args)
        if op == "concat":
            Ds = [self.D[t] for t in ins]
            D = None if all(d is None for d in Ds) else np.concatenate(
                [np.zeros_like(a) if d is None else d for d, a in zip(Ds, args)], axis=1)
            B = np.sqrt(sum(self.B[t] ** 2 for t in ins)) * (1 + 4 * 2.0**-53)
            return self._done(node, D, _sum({"carried": B}))
        if op not in EXACT + ROUNDED + POOLS:
            raise ValueError(f"no difference bound for {op}")
        D, bx = self.D[ins[0]], self.B[ins[0]]
        L, K = lipschitz(node, args[0].shape)
        if D is None:      # the estimate is 0: w = x_r exactly, f(w) = y
            w, yw, Dy, nDy, nw, rw = args[0], y, None, None, None, 0.0
            terms = {"carried": L * bx}
        else:              # w = x_r - D estimates x_f, D_y = y_r - f(w)
            if op == "relu" and self._fuses(node):   # with its reader's input pass
                self._deferred[node.output] = (node, args[0], D, y, bx, L)
                return None
            if op == "relu":   # one fused pass (verified.relu_difference); w is not kept
                w, yw = None, None
                Dy, nw, nDy = relu_difference(args[0], D, y, self._out(node, "Dy"))
            elif op == "maxpool" and args[0].ndim == 4:   # the same (maxpool_difference)
                w, yw = None, None
                taps = maxpool_taps(node.params, *y.shape[2:])
                Dy, nw, nDy = maxpool_difference(args[0], D, y, taps, self._out(node, "Dy"))
            else:
                w = args[0] - D
                nw, yw = norm_up(w), ops.apply(node, [w])
                Dy = y - yw
                nDy = norm_up(Dy)
            rw = U1 * nw                                             # w's rounding
            terms = {"carried": L * bx, "estimate_rounding": L * rw + U1 * nDy}
        if op in ROUNDED:  # one rounding of f at w and at x_f
            terms["op_rounding"] = U1 * (2 + U1) * norm_up(yw) + U1 * L * (bx + rw)
        elif op in POOLS:  # a sum of K terms: gamma_(K+1) of f(|.|), at w and at x_f
            nw = norm_up(w) if nw is None else nw
            terms["op_rounding"] = gamma(K + 1) * L * (nw * (2 + U1) + bx)
        return self._done(node, Dy, _sum(terms), nD=nDy)

    def _add(self, node, args):
        Ds = [self.D[t] for t in node.inputs]
        Bs = [self.B[t] for t in node.inputs]
        g = gamma(len(args) - 1)
        parts = [d for d in Ds if d is not None]
        D, nd = None, 0.0
        if parts:
            buf = self._out(node, "D")
            D = parts[0] if len(parts) > 1 else parts[0].copy()
            for d in parts[1:]:   # left to right, as D + d + ..., into the reused buffer
                D = np.add(D, d, out=None if buf is None else buf(D.shape))
            nd = sum(norm_up(d) for d in parts)
        # y_r and y_f round their sums by gamma_(n-1) of the |terms|, and so does D
        nx = sum(norm_up(a) for a in args)
        return self._done(node, D, _sum({"carried": sum(Bs),
                                         "op_rounding": g * (2 * nx + nd + sum(Bs)),
                                         "estimate_rounding": g * nd}))


# The terms of the bound, by what each covers (the mutation test drops each in turn):
TERMS = ("carried",                    # the radius carried in, times the Lipschitz constant
         "estimate",                   # |D| at the logits
         "input_truncation",           # mode 0: ||D - dh|| through W
         "weight_truncation",          # mode 0: W - Q_r(W) on h
         "estimate_input",             # u~ beyond its p planes, through W
         "estimate_weights",           # W beyond its p planes, on u~
         "estimate_residual_weights",  # W - Q_r(W) beyond its p planes, on h
         "estimate_h_planes",          # h's planes between p and r, on W - Q_r(W)
         "estimate_rounding",          # the estimate's own float operations
         "r_rounding",                 # C rounded once, + b
         "float_rounding",             # the float model's products and sums
         "op_rounding",                # the roundings of other nodes in both networks
         "shadow")                     # mode f64: the float64 estimate's rounding
DROPPED = frozenset()  # names of terms to leave out: only the mutation test sets it


def _sum(terms):
    """A bound's terms, named after what each covers (module docstring), added up."""
    total = 0.0
    for name, value in terms.items():
        if name not in DROPPED:
            total = total + value
    return total
