"""What the logit bounds need of each linear/conv node's weights, once per model.

Per node (NodeNorms), all upper bounds (verified.py):

    S        ||W||_2 as an operator on the node's input shape: the convolution's
             own norm (its frequency matrices) for the convolutions this costs least
             for, at most SYMBOL_LIMIT multiply-adds each and SYMBOL_TOTAL in all,
             else sqrt(overlap) ||W_2||_2 (the weight matrix times the window
             matrix); before the tight bound asks for it, the Frobenius form
             sqrt(overlap) ||W||_F (no factorisation at all)
    A        || |W| ||_2 (Schur test): the float model's rounding is at most
             gamma_(k+1) (|W| |h| + |b|) per output
    dS[q]    ||W - Q_q(W)||_2 for q planes of W, the same three ways
    rows, drows[q]   per output unit, ||W_j|| and ||W_j - Q_q(W_j)|| (the logits)

Two levels: "cheap" (Frobenius forms: a pass over the weights, for the bound
that stands where the tight one does not run) and "tight" (factorisations, for
the difference bound). Everything computed is kept in the cache folder
(lrmpi.cache, keyed by the weights' values, the nodes' parameters and input
shapes, and lrmpi's version), so a model met before starts with it, and ranks
receive rank 0's values (values()/use()) instead of computing them again. Long
loops call `should_stop()` between nodes and frequency blocks. Which convolutions get
their own norms depends on the model alone (docs/design.md, "Inference").
"""
import math

import numpy as np

from lrmpi.errors import Stopped
from lrmpi.nn import operator_norms as ON, verified as V

SYMBOL_LIMIT = 2e9    # multiply-adds of one convolution's frequency matrices (~1 s)
SYMBOL_TOTAL = 2e10   # ... of a model's: its S and up to 7 weight residuals each
SYMBOL_RESIDUAL = 5e7  # weight residuals get them only below this (else sqrt(overlap) ||.||)
TIGHT_CHEAP = 2e8     # a model whose tight norms cost less uses them at resolution 1 too
ROW_BYTES = 1 << 20   # of a weight residual at a time: in L2
LEVELS = ("cheap", "tight")


def check(should_stop):
    """Raise lrmpi.errors.Stopped if `should_stop()` says so (the job's own callable
    raises it itself, naming the stop's reason)."""
    if should_stop is not None and should_stop():
        raise Stopped("stopped", "preparing the model's bound norms")


class NodeNorms:
    """The norms of one linear/conv node (see the module docstring)."""

    def __init__(self, node, weights, in_shape, out_shape):
        W = node.params["W"]
        self.node, self.weights, self.in_shape = node, weights, tuple(in_shape)
        self.k = self.W2.shape[1]
        self.conv = node.op == "conv"
        self.group = int(node.params.get("group", 1)) if self.conv else 1
        self.overlap = ON.conv_overlap(node.params, W.shape[2:]) if self.conv else 1
        self.positions = int(np.prod(out_shape[1:])) if self.conv else 1
        self.A = self.rows = None      # base(): from the cache, or computed once
        b = node.params["b"]
        self.bnorm = V.up(math.sqrt(float(np.sum(b * b)) * (1 + 2 * V.gamma(b.size + 2))))
        self.S, self.dS, self.drows = {}, {}, {}   # level -> norm; q -> {level: norm}; q -> rows
        self.symbol = False            # ModelNorms decides (the model's symbol budget)
        self.symbol_cost = ON.conv_symbol_cost(W, in_shape, node.params) if self.conv else 0.0

    def base(self):
        """A, the row norms and the cheap S (every resolution's bound uses them),
        unless the cache had them (a pass over |W|: 0.14 s of a ResNet-50's start);
        True when something was computed."""
        if self.A is not None and self.rows is not None and "cheap" in self.S:
            return False
        W = self.node.params["W"]
        # one pass over W: |W|'s bound, the rows' squares and the digits' exponents
        self.A, sq, amax, finite = ON.weight_norms(W if self.conv else self.W2,
                                                  self.node.params)
        if finite:
            self.weights.exponents(amax)
        self.rows = _row_norms(sq, self.k)
        self.S["cheap"] = self._frobenius(sq)
        return True

    @property
    def W2(self):
        # the weights' own (O, k) view of W, never an attribute of this object: a
        # pickled view is a copy, and the model travels to every rank (ResNet-50:
        # 409 -> 204 MB)
        return self.weights.W2

    # --- the operator norm of a weight-shaped matrix, by level ---
    def _frobenius(self, row_squares):
        """sqrt(overlap) times the largest group's Frobenius norm, from the rows' sums
        of squares (a sum of the squares in some order: the factor covers any)."""
        per = len(row_squares) // self.group
        fro = max(math.sqrt((float(np.sum(row_squares[i * per:(i + 1) * per]))
                             + per * self.k * 2.0**-1071)   # squares lost to underflow
                            * (1 + 2 * V.gamma(per * self.k + 2))) for i in range(self.group))
        return V.up(math.sqrt(self.overlap) * fro * V.UP)

    def _tight(self, M2, should_stop, residual=False):
        stop = lambda: check(should_stop)  # noqa: E731
        stop()
        if not self.conv:
            return ON.spectral_bound(M2, stop)
        W = M2.reshape(self.node.params["W"].shape)
        if self.symbol and (not residual or self.symbol_cost <= SYMBOL_RESIDUAL):
            return ON.conv_operator_bound(W, self.in_shape, self.node.params, stop)
        return ON.im2col_operator_bound(W, self.node.params, self.overlap, stop)

    def operator(self, level="tight", should_stop=None):
        """S at `level`: a bound depends on its level only, never on what was
        computed (or cached) before, so results do not depend on a cache."""
        if level == "tight" and "tight" not in self.S:
            self.S["tight"] = min(self.S["cheap"], self._tight(self.W2, should_stop))
        return self.S[level]

    def lower(self):
        """A lower bound on ||W|| as the operator the node is (not rounded: it only
        predicts, plan.choose): a linear map's largest row norm; a convolution's
        largest filter norm, which an input patch equal to that filter, placed where
        the window lies inside the input, attains (0 when no window fits inside)."""
        rows = float(self.rows.max()) / (1 + 1e-9) if self.rows.size else 0.0
        if not self.conv:
            return rows
        kh, kw = self.node.params["W"].shape[2:]
        dh, dw = tuple(self.node.params.get("dilations", (1, 1)))
        H, W_ = self.in_shape[1:3]
        return rows if (kh - 1) * dh + 1 <= H and (kw - 1) * dw + 1 <= W_ else 0.0

    def residual(self, q, level="tight", should_stop=None):
        """(dS[q], drows[q]) of W - Q_q(W), exact in float64 (the digits' low bits)."""
        have = self.dS.setdefault(q, {})
        if "cheap" not in have or q not in self.drows:
            sq = self._residual_squares(q)
            have["cheap"] = self._frobenius(sq)
            self.drows[q] = _row_norms(sq, self.k)
        if level == "tight" and "tight" not in have:
            dW = self._residual_rows(q, 0, self.W2.shape[0])
            have["tight"] = min(have["cheap"], self._tight(dW, should_stop, residual=True))
        return have[level], self.drows[q]

    def _residual_squares(self, q):
        """Per row of W2, a computed sum of the squares of W - Q_q(W) (in some order:
        _row_norms and _frobenius cover any). One fused pass where the digits' steps
        are normal floats (kernels.residual_sumsq: a ResNet-50's rows 0.1 -> 0.03 s,
        each resolution's first norms), else by blocks of rows, in cache: the residual
        of the whole W is never formed (200 MB of fresh memory, twice, took 0.4 s)."""
        fused = V.residual_squares(self.W2, self.weights.exponents(), self.weights.bits, q)
        if fused is not None:
            return fused
        sq, rows = np.empty(self.W2.shape[0]), max(1, ROW_BYTES // (8 * max(1, self.k)))
        for r0 in range(0, len(sq), rows):
            d = self._residual_rows(q, r0, min(len(sq), r0 + rows))
            sq[r0:r0 + len(d)] = np.einsum("ij,ij->i", d, d)
        return sq

    def _residual_rows(self, q, r0, r1):
        """W - Q_q(W) of rows r0..r1 (W2's), exact in float64: the rows are the digits'
        scaling units as samples are the activations' (verified.residual: the digits
        truncate toward zero, so the residual is w's bits below the row's last plane)."""
        return V.residual(self.W2[r0:r1], self.weights.exponents()[r0:r1], self.weights.bits, q)

    # --- what travels and what is cached ---
    def state(self):
        out = {"S": dict(self.S), "dS": {q: dict(v) for q, v in self.dS.items()},
               "drows": dict(self.drows)}
        return out

    def load(self, state):
        for k, v in state["S"].items():
            self.S.setdefault(k, v)
        for q, v in state["dS"].items():
            for k, x in v.items():
                self.dS.setdefault(q, {}).setdefault(k, x)
        for q, v in state["drows"].items():
            self.drows.setdefault(q, v)


def _row_norms(row_squares, k):
    """Upper bounds on each row's l2 norm from its computed sum of k squares (each
    square that underflowed lost < 2^-1074: k 2^-1071 covers them, as _finish does)."""
    return V.up(np.sqrt((row_squares + k * 2.0**-1071) * (1 + 2 * V.gamma(k + 2))))


class ModelNorms:
    """NodeNorms of every linear/conv node of a graph, with the cache."""

    def __init__(self, graph, weights, should_stop=None):
        self.nodes = {}
        for n in graph.linear:
            check(should_stop)
            self.nodes[n.output] = NodeNorms(n, weights[n.output], graph.shapes[n.inputs[0]],
                                             (None,) + tuple(graph.shapes[n.output]))
        # which convolutions get their own norms (frequency matrices) rather than
        # sqrt(overlap) ||W_2||: the cheapest first, within the model's budget; a
        # function of the model alone, so the bounds are the same with a cache or not
        spent = 0.0
        for nn_ in sorted((v for v in self.nodes.values() if v.conv),
                          key=lambda v: v.symbol_cost):
            each = nn_.symbol_cost * (8 if nn_.symbol_cost <= SYMBOL_RESIDUAL else 1)
            if nn_.symbol_cost <= SYMBOL_LIMIT and spent + each <= SYMBOL_TOTAL:
                nn_.symbol, spent = True, spent + each
        # the tight norms' cost (multiply-adds of Gram matrices and frequency matrices):
        # below TIGHT_CHEAP they serve resolution 1 too (small models certify there)
        self.tight_cost = sum(8 * v.symbol_cost if v.symbol else
                              float(v.W2.shape[0]) * v.W2.shape[1] * min(v.W2.shape)
                              for v in self.nodes.values())
        self.cache = _Cache(graph, weights)
        self.cache.restore(self.nodes)
        new = False
        for nn_ in self.nodes.values():
            check(should_stop)
            new |= nn_.base()
        if new:
            self.cache.store(self.nodes)

    def prepare(self, qs, level, should_stop=None):
        """Compute S and dS[q] for q in `qs` at `level` (kept in the cache)."""
        new = False
        for nn_ in self.nodes.values():
            new |= level == "tight" and "tight" not in nn_.S
            nn_.operator(level, should_stop)
            for q in qs:
                new |= level not in nn_.dS.get(q, {})
                nn_.residual(q, level, should_stop)
        if new:
            self.cache.store(self.nodes)

    def values(self):
        """Everything computed so far, for the ranks that have the model."""
        return {name: nn_.state() for name, nn_ in self.nodes.items()}

    def use(self, values):
        for name, state in values.items():
            self.nodes[name].load(state)


class _Cache:
    """The norms on disk (lrmpi.cache), keyed by the weights, the nodes' parameters
    and input shapes (and lrmpi's version, through cache.digest)."""

    def __init__(self, graph, weights):
        from lrmpi import cache
        parts = []
        for n in graph.linear:
            parts.append((n.op, n.output, graph.shapes[n.inputs[0]],
                          sorted((k, v) for k, v in n.params.items()
                                 if not isinstance(v, np.ndarray)),
                          weights[n.output].W2, n.params["b"], weights[n.output].bits))
        # "norms3": the rows' sums of squares from the C pass (another order of summing
        # than norms2's einsum: other last bits), so an older entry is never read
        self.entry = cache.Entry("norms3", cache.digest(*parts))

    def restore(self, nodes):
        saved = self.entry.load() or {}
        for key, value in saved.items():
            name, field, *rest = key.split("|")
            nn_ = nodes.get(name)
            if nn_ is None:
                continue
            if field == "S":
                nn_.S.setdefault(rest[0], float(value))
            elif field == "dS":
                nn_.dS.setdefault(int(rest[0]), {}).setdefault(rest[1], float(value))
            elif field == "drows":
                nn_.drows.setdefault(int(rest[0]), np.asarray(value))
            elif field == "A":
                nn_.A = float(value)
            elif field == "rows" and value.shape == (nn_.W2.shape[0],):
                nn_.rows = np.asarray(value, np.float64)

    def store(self, nodes):
        out = {}
        for name, nn_ in nodes.items():
            if nn_.A is not None:
                out[f"{name}|A"], out[f"{name}|rows"] = np.asarray(nn_.A), nn_.rows
            for level, v in nn_.S.items():
                out[f"{name}|S|{level}"] = np.asarray(v)
            for q, levels in nn_.dS.items():
                for level, v in levels.items():
                    out[f"{name}|dS|{q}|{level}"] = np.asarray(v)
            for q, v in nn_.drows.items():
                out[f"{name}|drows|{q}"] = np.asarray(v)
        self.entry.store(out)
