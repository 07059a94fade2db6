"""The resolution-r network: every linear and conv node as exact int8 pair products.

Resolution r of a graph is a well-defined quantized network. At each linear or
conv node, the node's input h (float64) is split per sample into r digit planes
(a power-of-two scale per sample: x = 2^e_n sum_p d_p 2^(-b p) + residual, digits
truncated toward zero), the weights per output unit / channel into r planes, and

    z = fl( sum_{p,q <= r} (H_p W_q^T) 2^(e_n + e_o - b(p+q)) )  (+) b

the r^2 pair products exact in integers (int8 x int8 -> int32 through the kernels,
exact multi-limb sums), rounded once to float64, then the bias added in float64.
Every other node is the float64 operation of ops.py. So resolution r equals, bit
for bit, that quantized network evaluated with exact integer products (the
tests check it against Python integers). Why recompute than reuse: the hidden
activations of resolution r differ from those of r - 1 in every digit, so only
the first layer could reuse earlier pairs; recomputing the still-active samples
keeps no per-sample state but the scores, and costs r^2 products per layer for
the few samples adaptive refinement keeps (measured: docs/).
"""
from types import SimpleNamespace

import numpy as np

from lrmpi.numerics import kernels, planes as P
from lrmpi.numerics.accumulate import ExactAccumulator
from lrmpi.nn import ops


class NodeWeights:
    """A linear or conv node's weights as digit planes per output unit (all planes,
    once per model): W2 (O, k) rows per group for conv."""

    def __init__(self, node, bits, planes):
        W = node.params["W"]
        self.node, self.bits, self.planes = node, bits, planes
        self.W2 = np.ascontiguousarray(W.reshape(W.shape[0], -1))
        self.group = int(node.params.get("group", 1)) if node.op == "conv" else 1
        self._enc, self._gemm, self._exps = None, None, None

    def exponents(self, amax=None):
        """Per row of W2, e with max|row| < 2^e (the digits' scale), once: from `amax`
        (the rows' max |w|) when the caller has it (the bound's norms, one pass over W
        on rank 0), else a pass of its own. They travel with the model: a worker's
        first packing skips that pass (a cold ResNet-50: 0.035 s)."""
        if self._exps is None:
            self._exps = P.exponents(self.W2 if amax is None else None, amax=amax)
        return self._exps

    @property
    def enc(self):
        """The digit planes, made on first use: a rank that computes no products (rank
        0 beside its workers on a full node) never makes them (ResNet-50: 0.24 s)."""
        if self._enc is None:
            self._enc = P.encode(self.W2, self.bits, self.planes, exps=self.exponents())
        return self._enc

    def encoded_in(self, buffers):
        """The digit planes, in a scratch array of `buffers` (a fused_node.Buffers)
        unless made already: for a reader that keeps its own copy (the fused kernels
        pack them), so no rank holds the model's digits twice. Fresh memory costs
        1-2.6 s per GB to first touch here: a ResNet-50's 100 MB of digits, 0.1-0.26 s."""
        if self._enc is not None:
            return self._enc
        out = buffers.get("weight digits", (self.planes, *self.W2.shape), np.int8)
        return P.encode(self.W2, self.bits, self.planes, exps=self.exponents(), out=out)

    @property
    def gemm(self):
        """The digits as the windows of channels-last planes read them: a conv's
        columns in (u, v, c) order (a product is exact, so the order of its k terms
        changes nothing); made on first use (the fused kernels permute while they
        pack: an int8 transpose here took 0.2 s for a ResNet-18)."""
        if self._gemm is None:
            self._gemm = self.enc
            if self.node.op == "conv":
                O, Cg, kh, kw = self.node.params["W"].shape
                planes = self.enc.planes
                d = self.enc.digits.reshape(planes, O, Cg, kh, kw).transpose(0, 1, 3, 4, 2)
                self._gemm = SimpleNamespace(
                    digits=np.ascontiguousarray(d).reshape(planes, O, -1), exps=self.enc.exps)
        return self._gemm

    def __getstate__(self):
        # sent to every rank with the model: the digits are made again there, on first
        # use (the same bits, deterministic) instead of travelling beside W: 268 ->
        # ~90 MB for a ResNet-18, whose encoding takes a fraction of sending them
        return {"node": self.node, "bits": self.bits, "planes": self.planes,
                "exps": self._exps}

    def __setstate__(self, state):
        self.__init__(state["node"], state["bits"], state["planes"])
        self._exps = state.get("exps")


def quantize_samples(h, bits, r):
    """(digit planes (r, N, d) int8, exponent per sample) of a batch of tensors."""
    flat = np.ascontiguousarray(h.reshape(h.shape[0], -1))
    amax, bad = kernels.rowmax(flat)
    if bad:
        raise FloatingPointError("an activation is NaN or Inf")
    exps = np.frexp(amax)[1].astype(np.int32)
    D, _, _ = kernels.encode(flat, exps, bits, r)
    return D, exps


def exact_product(Hd, erow, wenc, r, bits, rows_of_w=None):
    """fl(sum_{p,q <= r} Hd[p] Wq[q]^T 2^(erow_i + ecol_o - b(p+q))), one rounding per
    entry: Hd (r, m, k) int8, wenc the weights' Encoded (rows of W as rows)."""
    Wd, ecol = wenc.digits, wenc.exps
    if rows_of_w is not None:
        Wd, ecol = Wd[:, rows_of_w[0]:rows_of_w[1]], ecol[rows_of_w[0]:rows_of_w[1]]
    from lrmpi.numerics.layered import level_sums  # the matmul machinery: not at start-up
    m, k = Hd.shape[1], Hd.shape[2]
    pairs = [(p, q) for p in range(1, r + 1) for q in range(1, r + 1)]
    pairs.sort(key=lambda pq: (pq[0] + pq[1], pq[0]))
    sums = level_sums(_Planes(Hd), _Planes(Wd), pairs, bits)
    acc = ExactAccumulator(m, Wd.shape[1], bits, r, k)
    if len(sums) == 1:
        (level, S), = sums
        return acc.decode_sum(S, level, erow, np.ascontiguousarray(ecol))
    for level, S in sums:
        acc.add(np.ascontiguousarray(S), level)
    return acc.decode(erow, np.ascontiguousarray(ecol))


class _Planes:
    """Plane p (1-based) of a (planes, rows, k) digit array, as level_sums reads it."""

    def __init__(self, D):
        self.D = D

    def __getitem__(self, p):
        return self.D[p - 1]


def linear_at(node, h, weights, r, bits):
    """(e, C, z) of the node at resolution r for the batch h (float64): the per-sample
    exponents of h's planes, the exact product rounded once, z = C + b."""
    D, e = quantize_samples(h, bits, r)
    if node.op == "linear":
        C = exact_product(D, e, weights.enc, r, bits)
        z = C + node.params["b"]
    else:
        C = _conv_at(node, D, e, h.shape, weights, r, bits)
        z = C + node.params["b"][None, :, None, None]
    return e, C, z


def _conv_at(node, D, e, shape, weights, r, bits):
    N, Cin, H, W = shape
    p = node.params
    O, Cg, kh, kw = p["W"].shape
    g = weights.group
    Og = O // g
    D = D.reshape(r, N, Cin, H, W)
    Ho, Wo = ops.conv_geometry(shape, p["W"].shape, p)
    erow = np.repeat(e, Ho * Wo)
    outs = []
    if g > 1 and Cg == 1 and Og == 1:  # depthwise: one tiny product per channel
        outs.append(_depthwise_at(D, erow, weights, r, bits, p, kh, kw))
    else:
        Dl = np.ascontiguousarray(D.transpose(0, 1, 3, 4, 2))  # (r, N, H, W, C): int8
        for gi in range(g):
            cols = np.empty((r, N * Ho * Wo, kh * kw * Cg), np.int8)
            for q in range(r):
                _windows_last(Dl[q, ..., gi * Cg:(gi + 1) * Cg], kh, kw, p, cols[q])
            outs.append(exact_product(cols, erow, weights.gemm, r, bits,
                                      rows_of_w=(gi * Og, (gi + 1) * Og)))
    y = np.concatenate(outs, axis=1) if len(outs) > 1 else outs[0]
    # one copy to NCHW now, not one per later reshape of a transposed view
    return np.ascontiguousarray(y.reshape(N, Ho, Wo, O).transpose(0, 3, 1, 2))


def _windows_last(x, kh, kw, p, out):
    """im2col of channels-last x (N, H, W, C) into out (N*Ho*Wo, kh*kw*C), columns in
    (u, v, c) order; one strided copy per kernel offset with C contiguous (the
    general transpose of ops.im2col copied int8 a byte at a time: 1.2 s of 5 s)."""
    (sh, sw), (dh, dw) = p.get("strides", (1, 1)), p.get("dilations", (1, 1))
    t, l, b, r = p.get("pads", (0, 0, 0, 0))
    if t or l or b or r:
        x = np.pad(x, ((0, 0), (t, b), (l, r), (0, 0)))
    N, H, W, C = x.shape
    Ho, Wo = (H - dh * (kh - 1) - 1) // sh + 1, (W - dw * (kw - 1) - 1) // sw + 1
    cols = out.reshape(N, Ho, Wo, kh, kw, C)
    for u in range(kh):
        for v in range(kw):
            cols[:, :, :, u, v, :] = x[:, u * dh:u * dh + sh * (Ho - 1) + 1:sh,
                                       v * dw:v * dw + sw * (Wo - 1) + 1:sw, :]
    return out


def _depthwise_at(D, erow, weights, r, bits, p, kh, kw):
    """Depthwise convolution (one input channel per output channel): the pair
    products in int32 per channel (k = kh*kw digit products, exact), then the same
    exact sums and one rounding as a GEMM's."""
    Wd, ecol = weights.enc.digits, weights.enc.exps        # (planes, C, kh*kw)
    cols = [ops.im2col(D[q], kh, kw, p)[0] for q in range(r)]  # (rows, C*kh*kw)
    rows, C = cols[0].shape[0], Wd.shape[1]
    acc = ExactAccumulator(rows, C, bits, r, kh * kw)
    levels = {}
    for pi in range(1, r + 1):
        Hp = cols[pi - 1].reshape(rows, C, kh * kw).astype(np.int32)
        for q in range(1, r + 1):
            S = np.einsum("rck,ck->rc", Hp, Wd[q - 1].astype(np.int32))
            lv = pi + q - 1
            levels[lv] = S if lv not in levels else levels[lv] + S
    for lv in sorted(levels):
        acc.add(np.ascontiguousarray(levels[lv].astype(np.int64)), lv)
    return acc.decode(erow, np.ascontiguousarray(ecol))


def forward_at(graph, weights, X, r, bits, keep=()):
    """The graph's logits at resolution r for a batch X (N, *input_shape), no bounds."""
    return ops.forward(graph, X, lambda node, h: linear_at(node, h, weights[node.output], r,
                                                           bits)[2], keep=keep)
