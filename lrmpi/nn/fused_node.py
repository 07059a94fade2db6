"""One linear/conv node as the fused kernels take it (fused.py compiles a graph
into these): its geometry, its weights packed for this rank's ISA (all planes;
resolution r reads the first r), the nodes it absorbs (a residual add, the
activation, a max pooling, flatten/reshape nodes before the node it feeds), the
layout of its input planes, and the per-sample norms the bound hook gets."""
import numpy as np

from lrmpi.nn import ops
from lrmpi.nn.operators import maxpool_taps
from lrmpi.numerics import buffers, kernels, kernels_nn as K
from lrmpi.numerics.accumulate import nlimbs

ACTIVATIONS = ("relu", "leakyrelu", "prelu", "clip")
# a unit's level sums (int32) are sized to stay near this; measured (thread CPU,
# amx, shared machine, best of 3) 256K / 512K / 1M / 2M: VGG r=1 x 512 0.153 /
# 0.156 / 0.155 / 0.165 s, r=2 x 256 0.126 / 0.124 / 0.130 / 0.141; ResNet-18 r=1
# x 128 0.181 / 0.180 / 0.182 / 0.185; MLP r=1 x 8192 0.068 / 0.068 / 0.067 /
# 0.069: flat up to 1M (the product's 64-row sub-blocks keep the sums in L2), 2M
# slower
L2_BYTES = 1 << 20


class FusedNode:
    """One linear/conv node as the kernels take it: geometry, packed weights, the
    input planes' layout, the activation it absorbs and the node it feeds."""

    def __init__(self, node, weights, shapes, isa, scratch=None, packed=None):
        p, W = node.params, node.params["W"]
        self.node, self.isa, self.planes = node, isa, weights.planes
        self.in_shape = tuple(shapes[node.inputs[0]])
        self.out_shape = tuple(shapes[node.output])
        self.O = W.shape[0]
        self.bias = np.ascontiguousarray(p["b"], np.float64)
        self.act, self.act_node, self.slope, self.lo, self.hi = "none", None, None, -np.inf, np.inf
        self.feeds = None  # the FusedNode whose input planes this one writes
        self.res_node, self.res_input = None, None  # a residual add before the activation
        self.shared = False  # its last tensor has readers besides `feeds`
        self.pool_node, self.pool = None, None  # a max pooling after the activation
        self.passes = []   # flatten/reshape nodes between it (or them) and `feeds`
        self.depthwise = False
        if node.op == "linear":
            k = int(np.prod(self.in_shape))
            self.geom = dict(Hp=1, Wp=1, C=k, kh=1, kw=1, sh=1, sw=1, dh=1, dw=1, Ho=1, Wo=1)
            self.k, taps = k, 1
        else:
            C, H, Wd = self.in_shape
            O, Cg, kh, kw = W.shape
            g = int(p.get("group", 1))
            t, l, b, r = p.get("pads", (0, 0, 0, 0))
            (sh, sw), (dh, dw) = p.get("strides", (1, 1)), p.get("dilations", (1, 1))
            Ho, Wo = ops.conv_geometry((1, C, H, Wd), W.shape, p)
            self.pads = (t, l, H + t + b, Wd + l + r)
            self.geom = dict(Hp=H + t + b, Wp=Wd + l + r, C=C, kh=kh, kw=kw, sh=sh, sw=sw,
                             dh=dh, dw=dw, Ho=Ho, Wo=Wo)
            self.depthwise = g > 1 and Cg == 1 and g == C == O
            if g > 1 and not self.depthwise:
                self.supported = False
                return
            self.k = kh * kw * (1 if self.depthwise else C)
            taps = 1 if self.depthwise else kh * kw
        self.kpad = self.k if self.depthwise else K.nn_kpad(self.k)
        if packed is not None and len(packed[0]) != K.nn_packed_size(
                self.planes, self.O, self.kpad, self.depthwise, isa=isa):
            packed = None  # kept by another packing: made again
        if packed is not None:  # (packed weights, channel exponents) kept from before
            self.wpack, self.f = packed
        else:  # the digits in `scratch` (Buffers) if given: not kept twice
            enc = weights.enc if scratch is None else weights.encoded_in(scratch)
            self.f = np.ascontiguousarray(enc.exps, np.int32)
            self.wpack = K.nn_pack(np.ascontiguousarray(enc.digits), self.kpad, self.depthwise,
                                   taps=taps, isa=isa)
        self.supported = True

    def takes(self, r, bits):
        """Whether the kernels compute this node at resolution r (int32 level sums)."""
        return self.supported and r * self.k <= kernels.kmax(bits) and \
            nlimbs(bits, r, self.k) <= kernels.MAX_LIMBS

    def absorb(self, act_node):
        """Take the activation node after this one if the kernels do it the same way."""
        p, op = act_node.params, act_node.op
        if op == "leakyrelu":
            alpha = np.asarray(p["alpha"], np.float64)
            if alpha.size != 1:
                return False
            self.slope = alpha.reshape(1).copy()
        elif op == "prelu":
            self.slope = _per_channel(p["slope"], self.out_shape)
            if self.slope is None:
                return False
        elif op == "clip":
            lo, hi = np.asarray(p.get("lo", -np.inf)), np.asarray(p.get("hi", np.inf))
            if lo.size != 1 or hi.size != 1:
                return False
            self.lo, self.hi = float(lo.reshape(())), float(hi.reshape(()))
        self.act, self.act_node = op, act_node
        return True

    def absorb_pool(self, pool_node, shapes):
        """Take a max pooling of this conv's activation (ONNX MaxPool geometry)."""
        if self.node.op != "conv" or pool_node.op != "maxpool":
            return False
        _, Ho, Wo = shapes[pool_node.output]
        self.pool_node, self.pool = pool_node, maxpool_taps(pool_node.params, Ho, Wo)
        return True

    def pooled_shape(self, shapes):
        return tuple(shapes[self.pool_node.output]) if self.pool_node else self.y_shape

    @property
    def y_shape(self):
        return self.out_shape

    def planes_for(self, r, bits, n, buf, sq=False):
        """NNPlanes of this node's input for n samples at resolution r, in `buf`'s
        reused arrays (with the sums for its norms if `sq`)."""
        g = self.geom
        if self.node.op == "linear":
            spec = dict(layout=K.NN_ROWS, C=g["C"], H=1, W=1, kpad=self.kpad)
            size = -(-n // 32) * 32 * self.kpad
        else:
            t, l, Hp, Wp = self.pads
            C, H, W = self.in_shape
            spec = dict(layout=K.NN_NHWC, C=C, H=H, W=W, pt=t, pl=l, Hp=Hp, Wp=Wp)
            size = n * Hp * Wp * C
        D = buf.get(("D", self.node.output), (r, max(size, 1)), np.int8)
        e = buf.get(("e", self.node.output), (max(n, 1),), np.int32)
        sums = buf.get(("hsq", self.node.output), (2 * max(n, 1),), np.float64) if sq else None
        return K.NNPlanes(r=r, bits=bits, D=D, exps=e, sq=sums, **spec)

    def norms(self, src, sq, r, bits, n):
        """Per-sample upper bounds on the l2 norms of the node's input h, of what r
        planes leave of it (dq), of C, z, the activation y, a residual `res` and the
        sum a = z + res, from the kernels' sums."""
        k, size = int(np.prod(self.in_shape)), int(np.prod(self.out_shape))
        hs = src.sq[:2 * n].reshape(n, 2)
        C, z, y, res, a = (K.nn_norms(sq[:, i], size) for i in range(5))
        return {"h": K.nn_norms(hs[:, 0], k),
                "dq": K.nn_residual_norms(hs[:, 1], src.exps[:n], bits, r, k),
                "C": C, "z": z, "y": y, "res": res, "a": a}

    def spec(self, n, r, bits):
        P = self.geom["Ho"] * self.geom["Wo"]
        levels = 2 * r - 1
        opad = -(-self.O // 32) * 32
        unit = max(32, L2_BYTES // (4 * opad * levels))
        return K.NNLayer(n=n, O=self.O, depthwise=int(self.depthwise),
                         direct=int(self.node.op == "linear"), kpad=self.kpad, r=r,
                         bits=bits, nlimbs=nlimbs(bits, r, self.k), wplanes=self.planes,
                         act=K.ACTS[self.act], lo=self.lo, hi=self.hi,
                         unit_rows=max(unit, P), **self.geom)


def _per_channel(slope, out_shape):
    """PReLU's slope as one value per output channel, if it is one (bit for bit)."""
    s = np.asarray(slope, np.float64)
    try:
        full = np.broadcast_to(s, out_shape)
    except ValueError:
        return None
    rows = np.ascontiguousarray(full).reshape(out_shape[0], -1)
    bits = rows.view(np.uint64)
    if not np.all(bits == bits[:, :1]):
        return None
    return np.ascontiguousarray(rows[:, 0])


class Buffers:
    """Arrays reused across batches (first touch of fresh memory is slow here), each
    starting on a page (the kernels' streaming stores need whole 64-byte lines)."""

    def __init__(self):
        self.arrays = {}

    def get(self, key, shape, dtype):
        a = self.arrays.get(key)
        need = int(np.prod(shape))
        if a is None or a.dtype != dtype or a.size < need:
            # faulted in by one madvise (buffers.touch): page by page, the ~470 MB of a
            # first MLP batch of 4096 samples took it 0.83-1.71 s, now 0.82-0.95 s
            # (the next batches 0.69 s)
            a = self.arrays[key] = buffers.big_empty((need,), dtype)
            buffers.touch(a)
        return a[:need].reshape(shape)
