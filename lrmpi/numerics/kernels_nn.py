"""Checked wrappers of the fused inference-layer kernels (kernels.h, nn_*), used
by lrmpi/nn/fused.py: per-sample digit planes of activations, weights packed in
the ISA's layout, and one call per linear/conv node that goes from its input
planes to its outputs (and the next node's planes). The ISA is kernels.py's
selection (or `isa=`): one dispatch table for every kernel.
"""
from dataclasses import dataclass

import numpy as np

from lrmpi._ext import kernels as _k
from lrmpi.numerics.kernels import MAX_LIMBS, _need, _need_c, kmax

NN_ROWS, NN_NHWC = 0, 1
ACTS = {"none": 0, "relu": 1, "leakyrelu": 2, "prelu": 3, "clip": 4}


@dataclass
class NNPlanes:
    """Digit planes of a batch of per-sample tensors as a layer reads them
    (kernels.h, lrmpi_nn_planes): layout NN_ROWS (rows of kpad, NCHW order) or
    NN_NHWC (channels last, zero-padded image Hp x Wp, the image at (pt, pl));
    D (>= r, pstride) int8, exps (>= n,) int32; sq (n, 2) float64 or None: per
    sample the float64 sums of h^2 and of its truncation residual squared, the
    residual in units of 2^(e - b (r + 1)) (nn_norms turns them into bounds)."""

    layout: int
    C: int
    H: int
    W: int
    r: int
    bits: int
    D: np.ndarray
    exps: np.ndarray
    kpad: int = 0
    pt: int = 0
    pl: int = 0
    Hp: int = 1
    Wp: int = 1
    sq: np.ndarray = None

    def sample_bytes(self):
        return self.kpad if self.layout == NN_ROWS else self.Hp * self.Wp * self.C

    def check(self, n, name="planes"):
        _need_c(self.D, f"{name}.D", np.int8, 2)
        _need_c(self.exps, f"{name}.exps", np.int32, 1)
        if not 1 <= self.bits <= 7 or not 1 <= self.r <= self.D.shape[0]:
            raise ValueError(f"{name}: r = {self.r}, bits = {self.bits} for {self.D.shape[0]} "
                             "planes")
        if min(self.C, self.H, self.W) < 1 or self.exps.shape[0] < n:
            raise ValueError(f"{name}: tensor {self.C}x{self.H}x{self.W}, {self.exps.shape[0]} "
                             f"exponents for {n} samples")
        if self.layout == NN_ROWS:
            if self.kpad % 64 or self.kpad < self.C * self.H * self.W:
                raise ValueError(f"{name}: kpad {self.kpad} (a multiple of 64 >= the size)")
            rows = -(-n // 32) * 32  # the AMX product reads whole 32-row blocks
        elif self.layout == NN_NHWC:
            if min(self.pt, self.pl) < 0 or self.Hp < self.pt + self.H or \
                    self.Wp < self.pl + self.W:
                raise ValueError(f"{name}: padded image {self.Hp}x{self.Wp} cannot hold "
                                 f"{self.H}x{self.W} at ({self.pt}, {self.pl})")
            rows = n
        else:
            raise ValueError(f"{name}: unknown layout {self.layout}")
        if self.D.shape[1] < rows * self.sample_bytes():
            raise ValueError(f"{name}: planes of {self.D.shape[1]} bytes for {n} samples")
        if self.sq is not None:
            _need_c(self.sq, f"{name}.sq", np.float64, 1)
            if self.sq.shape[0] < 2 * n:
                raise ValueError(f"{name}.sq: 2 sums per sample")


@dataclass
class NNLayer:
    """A linear or conv node's geometry at resolution r (kernels.h, lrmpi_nn_layer):
    the input image Hp x Wp x C (padded; linear: 1 x 1 x k, `direct`: its ROWS
    planes are the product's rows), kernel, strides, dilations, output Ho x Wo x O;
    kpad the padded k (depthwise: kh kw)."""

    n: int
    Hp: int
    Wp: int
    C: int
    kh: int
    kw: int
    sh: int
    sw: int
    dh: int
    dw: int
    Ho: int
    Wo: int
    O: int
    depthwise: int
    direct: int
    kpad: int
    r: int
    bits: int
    nlimbs: int
    wplanes: int
    act: int = 0
    lo: float = -np.inf
    hi: float = np.inf
    unit_rows: int = 256


def nn_kpad(k):
    """k rounded up to the tiles' 64 bytes."""
    return -(-k // 64) * 64


def nn_quantize(h, planes, *, isa=None):
    """Per-sample digit planes of h (n, C, H, W) or (n, k), float64 or float32 (exact
    in float64), into `planes` (NNPlanes): e = frexp(max|h_n|), digits as encode's.
    Raises FloatingPointError on NaN or Inf."""
    _need(h, "h", np.float32 if h.dtype == np.float32 else np.float64, h.ndim)
    if not h.flags.c_contiguous or h.ndim < 2:
        raise ValueError("h must be C-contiguous, samples first")
    n = h.shape[0]
    if int(np.prod(h.shape[1:])) != planes.C * planes.H * planes.W:
        raise ValueError(f"h {h.shape} does not fit planes of {planes.C}x{planes.H}x{planes.W}")
    planes.check(n)
    status = _k.nn_quantize(h.reshape(-1), n, planes, isa) if n else 0
    if status < 0:
        raise MemoryError("nn_quantize: no memory for its scratch")
    if status:
        raise FloatingPointError("an activation is NaN or Inf")


def nn_packed_size(planes, O, kpad, depthwise=False, *, isa=None):
    """Bytes of nn_pack's output for weights (planes, O, k) on `isa`."""
    return _k.nn_packed_size(planes, O, kpad, int(depthwise), isa)


def nn_pack(W, kpad, depthwise=False, *, taps=1, isa=None):
    """Weights' digits W (planes, O, k) int8 in the ISA's layout (k padded to kpad,
    O to a multiple of 32), as nn_layer reads them: a 64-byte aligned int8 array.
    A conv's rows in ONNX's (c, u, v) order (taps = kh kw) are permuted to the
    windows' (u, v, c) order on the way."""
    _need_c(W, "W", np.int8, 3)
    planes, O, k = W.shape
    if taps < 1 or k % taps:
        raise ValueError(f"taps {taps} does not divide k = {k}")
    if (depthwise and kpad != k) or (not depthwise and (kpad % 64 or kpad < k)):
        raise ValueError(f"kpad {kpad} for k = {k}")
    size = _k.nn_packed_size(planes, O, kpad, int(depthwise), isa)
    raw = np.empty(size + 64, np.int8)
    out = raw[(-raw.ctypes.data) % 64:][:size]
    _k.nn_pack(W, kpad, int(depthwise), taps, out, isa)
    return out


def nn_layer(spec, D, e, wpack, f, bias, *, slope=None, Cout=None, Zout=None, Yout=None,
             nxt=None, sq=None, times=None, pool=None, Pout=None, Res=None, Aout=None,
             isa=None, estimate=None):
    """One fused layer for spec.n samples (kernels.h nn_layer): D the input planes
    (NNPlanes.D: ROWS for a linear node, NHWC for a conv), e their exponents, the
    packed weights, f and bias per output channel; fills the optional outputs
    (flat n x O x Ho x Wo float64) and the next node's planes `nxt` (NNPlanes).
    `Res` (flat NCHW like z): a residual, y = act(z + Res), Aout the sum.
    `sq` (float64, 5 n): per sample the float64 sums of C^2, z^2, y^2, Res^2, a^2.
    `pool`: (kh, kw, sh, sw, dh, dw, pad top, pad left, Ho, Wo) of a max pooling of
    y (a conv's) before `nxt`, its output in `Pout` (flat NCHW) if given.
    `times` (float64, 3): += the call's thread CPU seconds, split between the
    products, the rounding to the stores and the next planes in the proportions
    of the wall clock read around each. Raises FloatingPointError if the activation
    quantized for `nxt` holds NaN/Inf.
    `estimate`: (p, Du, eu, wres, ef, Eout), the difference bound's estimate in the
    same call (kernels.h est_p): Eout (flat NCHW like z) = fl(P1 - P2), P1 the product
    of u's p planes Du (D's layout; exponents eu) with W's first p planes, P2 of D's
    first p planes with W's planes r+1..r+p (wres: their p planes packed as nn_pack
    packs; exponents ef), each rounded once;
    its seconds go to times[3]."""
    s = spec
    n, P, O = s.n, s.Ho * s.Wo, s.O
    p, Du, eu, wres, ef, Eout = estimate if estimate is not None else (0,) + (None,) * 5
    _need_c(D, "D", np.int8, 2)
    ints = ((e, "e", n), (f, "f", O)) + \
        (((eu, "eu", n), (ef, "ef", O)) if estimate is not None else ())
    for arr, name, size in ints:
        _need_c(arr, name, np.int32, 1)
        if arr.shape[0] < size:
            raise ValueError(f"{name} has {arr.shape[0]} entries, needs {size}")
    _need_c(bias, "bias", np.float64, 1)
    if bias.shape[0] != O:
        raise ValueError(f"bias has {bias.shape[0]} entries for {O} channels")
    if not 1 <= s.r <= min(D.shape[0], s.wplanes) or not 1 <= s.bits <= 7:
        raise ValueError(f"r = {s.r} with {D.shape[0]} input and {s.wplanes} weight planes")
    k = s.kh * s.kw * (1 if s.depthwise else s.C)
    if s.depthwise and (O != s.C or s.kpad != k) or \
            not s.depthwise and (s.kpad % 64 or s.kpad < k):
        raise ValueError(f"kpad {s.kpad} for k = {k} (depthwise {bool(s.depthwise)})")
    if s.r * k > kmax(s.bits):
        raise ValueError(f"r k = {s.r * k} past kmax = {kmax(s.bits)}: level sums overflow int32")
    if min(s.kh, s.kw, s.sh, s.sw, s.dh, s.dw, s.Ho, s.Wo, O, s.nlimbs) < 1 or \
            s.nlimbs > MAX_LIMBS or (s.Ho - 1) * s.sh + (s.kh - 1) * s.dh >= s.Hp or \
            (s.Wo - 1) * s.sw + (s.kw - 1) * s.dw >= s.Wp:
        raise ValueError(f"geometry does not fit: {s}")
    if s.direct and (s.depthwise or not s.kh == s.kw == s.Hp == s.Wp == 1 or s.C > s.kpad):
        raise ValueError("direct: a linear node's ROWS planes")
    need = (-(-n // 32) * 32 * s.kpad) if s.direct else n * s.Hp * s.Wp * s.C
    if D.shape[1] < need:
        raise ValueError(f"input planes of {D.shape[1]} bytes for {n} samples (need {need})")
    _need_c(wpack, "wpack", np.int8, 1)
    if wpack.shape[0] != _k.nn_packed_size(s.wplanes, O, s.kpad, s.depthwise, isa):
        raise ValueError("wpack is not this ISA's packing of these weights")
    if s.act in (ACTS["leakyrelu"], ACTS["prelu"]):
        _need_c(slope, "slope", np.float64, 1)
        if slope.shape[0] < (O if s.act == ACTS["prelu"] else 1):
            raise ValueError("one slope per channel (prelu) or one (leakyrelu)")
    if Aout is not None and Res is None:
        raise ValueError("Aout is the sum z + Res: give Res")
    for arr, name in ((Cout, "Cout"), (Zout, "Zout"), (Yout, "Yout"), (Res, "Res"),
                      (Aout, "Aout"), (Eout, "Eout")):
        if arr is not None:
            _need_c(arr, name, np.float64, 1)
            if arr.shape[0] != n * O * P:
                raise ValueError(f"{name} has {arr.shape[0]} entries for {n * O * P}")
    if nxt is not None:
        nxt.check(n, "nxt")
        oh, ow = (pool[8], pool[9]) if pool is not None else (s.Ho, s.Wo)
        if nxt.C * nxt.H * nxt.W != O * oh * ow or nxt.layout == NN_NHWC and \
                (nxt.C, nxt.H, nxt.W) != (O, oh, ow):
            raise ValueError("nxt does not hold this layer's output")
    if sq is not None:
        _need_c(sq, "sq", np.float64, 1)
        if sq.shape[0] < 5 * n:
            raise ValueError("sq: 5 sums per sample")
    if times is not None:
        _need_c(times, "times", np.float64, 1)
        if times.shape[0] < (4 if estimate is not None else 3):
            raise ValueError("times: 3 entries (4 with an estimate: its seconds)")
    PP = P
    if pool is not None:
        pool = tuple(int(v) for v in pool)
        if len(pool) != 10 or min(pool[:6]) < 1 or min(pool[6:]) < 0 or P == 1:
            raise ValueError(f"pool: 10 values (kh kw sh sw dh dw pt pl Ho Wo) after a conv: {pool}")
        PP = pool[8] * pool[9]
    if Pout is not None:
        _need_c(Pout, "Pout", np.float64, 1)
        if pool is None or Pout.shape[0] != n * O * PP:
            raise ValueError("Pout: the pooled output (pool given), n x O x Ho x Wo")
    est = {}
    if estimate is not None:
        if not 1 <= p <= s.r or s.depthwise or Eout is None:
            raise ValueError(f"estimate of {p} planes at r = {s.r} (not depthwise) into Eout")
        _need_c(wres, "wres", np.int8, 1)
        if wres.shape[0] != _k.nn_packed_size(p, O, s.kpad, 0, isa):
            raise ValueError("wres is not this ISA's packing of p weight planes")
        _need_c(Du, "Du", np.int8, 2)
        if Du.shape[0] < p or Du.shape[1] < need:
            raise ValueError("Du: p planes of the input's layout")
        est = dict(est_p=p, Du=Du, eu=eu, ef=ef, Eout=Eout, wres=wres)
    if n == 0:
        return
    status = _k.nn_layer(s, D, e, wpack, f, bias, slope, Cout, Zout, Yout, nxt, sq, times, pool,
                         Pout, Res, Aout, isa, **est)
    if status < 0:
        raise MemoryError("nn_layer: no memory for its scratch")
    if status:
        raise FloatingPointError("an activation is NaN or Inf")


U = 2.0**-53


def nn_norms(sums, count):
    """Upper bounds on the l2 norms sqrt(sum x^2) of vectors of `count` entries whose
    squares a kernel summed in float64 (`sums`, any shape): that sum is within
    gamma_count of the exact one (nonnegative terms, any order), below it by at most
    2^-1074 per square that underflowed; sqrt and the last product round up."""
    g = count * U / (1 - count * U)
    s = (np.asarray(sums, np.float64) + count * 2.0**-1073) / (1 - g)
    return np.sqrt(s) * (1 + 2.0**-51)


def nn_residual_norms(sums, exps, bits, r, count):
    """Upper bounds on ||h - Q_r(h)||_2 from NNPlanes.sq's residual sums (in units
    of 2^(e - b (r + 1)) per sample): the scaling by a power of two is exact in
    the normal range; count 2^-1074 covers a subnormal result's rounding and the
    bits an extreme scale (pow2_split) drops below the subnormal range."""
    scale = np.ldexp(1.0, np.asarray(exps, np.int64) - bits * (r + 1))
    return nn_norms(sums, count) * scale + count * 2.0**-1074
