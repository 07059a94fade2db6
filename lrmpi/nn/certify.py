"""Rigorous bounds on the logits, and certified decisions.

For every tensor t and sample n the pass carries two radii in the l2 norm over
the tensor's elements:

    R[t][n] >= ||t_r - t*||      the resolution-r network against the exact model
    F[t][n] >= ||t_f - t*||      the float64-evaluated model against the exact model

where t* is the exact (real-arithmetic) value of the float model (the imported
weights, batch-norm folded, evaluated without rounding). A linear or conv node
z = h W^T + b moves them to

    R' = S (R + ||h - Q(h)||) + S_d ||h|| + u'(||C|| + ||z||)
    F' = S F + gamma_{k+1} (|W|_F' (||h|| + R + F) + ||b|| sqrt(P))

with S >= ||W||_2 (a verified bound on the operator norm, times sqrt(overlap) for
a convolution), S_d >= ||W - Q_r(W)||_2, ||h - Q(h)|| <= 2^(e_n - b r) sqrt(nnz_n)
and u' = 2^-53 (1 + 2^-50) for the one rounding of the exact product and the
bias' add. Piecewise-linear nodes are Lipschitz (ReLU, clip: 1; leaky/PReLU:
max(1, |alpha|); max pooling: sqrt(overlap); average pooling:
sqrt(overlap / smallest window); global average: 1/sqrt(HW)) and add their own
rounding. At the logits, the final linear node gives a radius per logit (row
norms); a sample's decision is certified when its top class's lower end is above
every other class's upper end (one sigmoid logit: the interval excludes 0), with
R + F: so a certified decision equals the decision of the exact model and of the
float64 model alike.

Costs: the operator norms once per model (a Gram matrix and a Cholesky per
layer), then a few norms per sample and layer, a small fraction of a resolution.
"""
import math

import numpy as np

from lrmpi.nn import ops
from lrmpi.nn.operators import MOVEMENT, gather_repeats

U = 2.0**-53
U1 = U * (1 + 2.0**-50)


def gamma(k):
    return k * U / (1 - k * U)


def _up(x):
    """x, rounded up a little: covers the rounding of a short float computation."""
    return x * (1 + 2.0**-40) + 2.0**-1060


def spectral_bound(M, iterations=60):
    """A verified upper bound on ||M||_2 (the largest singular value).

    lambda_max(G), G = M M^T (the smaller Gram matrix), is below mu if mu I - G is
    positive definite, which a floating-point Cholesky of mu I - G - alpha I
    proves once it succeeds with alpha = 4 (d + 2) u tr(mu I - G) (its backward
    error is below gamma_{d+1} |R^T||R|, whose norm is at most that trace). The
    computed G differs from M M^T by at most gamma_k ||M||_F^2 in norm. mu starts
    2 % above a power-iteration estimate and grows by 2 % until the test passes;
    the Frobenius norm, always valid, caps the result.
    """
    M = np.asarray(M, np.float64)
    if M.size == 0:
        return 0.0
    if M.shape[0] > M.shape[1]:
        M = M.T
    d, k = M.shape
    fro = _up(math.sqrt(float(np.sum(M * M)) * (1 + gamma(M.size))))
    if fro == 0.0 or d == 1:
        return fro
    G = M @ M.T
    v = np.random.default_rng(0).standard_normal(d)
    est = 0.0
    for _ in range(iterations):
        w = G @ v
        est = float(np.linalg.norm(w))
        if est == 0.0:
            return fro
        v = w / est
    mu = est * 1.02 + 1e-300
    for _ in range(30):
        A = -G
        A[np.diag_indices(d)] += mu
        alpha = 4 * (d + 2) * U * float(np.trace(A)) + d * 2.0**-1000
        A[np.diag_indices(d)] -= alpha
        try:
            np.linalg.cholesky(A)
        except np.linalg.LinAlgError:
            mu *= 1.02
            continue
        return min(fro, _up(math.sqrt(mu + gamma(k) * fro * fro)))
    return fro


def conv_operator_bound(W, in_shape, p):
    """An upper bound on the operator norm of a convolution with weights W on inputs
    of `in_shape` (C, H, W): a zero-padded (and strided) convolution is a part of
    the circular one on the padded torus, whose singular values are those of the
    matrices W^(w) (the kernel's 2-D Fourier transform, one O/g x C/g matrix per
    frequency w; Sedghi, Gupta, Long 2019). Blocks of a grouped convolution are
    independent: the largest counts. The FFT and the SVDs round at the 1e-15
    level: a relative margin of 1e-6 covers them."""
    g = int(p.get("group", 1))
    O, Cg, kh, kw = W.shape
    dh, dw = p.get("dilations", (1, 1))
    t, l, b, r = p.get("pads", (0, 0, 0, 0))
    Kh, Kw = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    Hp, Wp = max(in_shape[1] + t + b, Kh), max(in_shape[2] + l + r, Kw)
    Wd = np.zeros((O, Cg, Kh, Kw))
    Wd[:, :, ::dh, ::dw] = W
    # a real kernel: W^(-w) is the conjugate of W^(w), half the spectrum suffices
    F = np.fft.rfft2(Wd, s=(Hp, Wp))  # (O, Cg, Hp, Wp // 2 + 1)
    Og, top = O // g, 0.0
    for gi in range(g):
        M = np.ascontiguousarray(F[gi * Og:(gi + 1) * Og].reshape(Og, Cg, -1).transpose(2, 0, 1))
        Mh = M.conj().transpose(0, 2, 1)
        G = Mh @ M if Cg <= Og else M @ Mh  # the smaller Gram matrix of each frequency
        top = max(top, _largest_eigenvalue(G))
    return math.sqrt(max(top, 0.0)) * (1 + 1e-6) + 1e-300


def _largest_eigenvalue(G):
    """An upper bound on the largest eigenvalue of a stack of Hermitian PSD matrices:
    a power-iteration estimate, raised by 2 % and checked by Cholesky of mu I - G
    (positive definite: mu is above every eigenvalue); LAPACK's eigenvalues if the
    check fails. (Within the 1e-6 margin of conv_operator_bound.)"""
    n = G.shape[-1]
    v = np.ones((G.shape[0], n, 1), G.dtype)
    est = np.zeros(G.shape[0])
    for _ in range(30):
        w = G @ v
        est = np.linalg.norm(w[:, :, 0], axis=1)
        v = w / np.where(est > 0, est, 1.0)[:, None, None]
    mu = float(est.max()) * 1.02 + 1e-300
    A = -G
    A[:, np.arange(n), np.arange(n)] += mu
    try:
        np.linalg.cholesky(A)
        return mu
    except np.linalg.LinAlgError:
        return float(np.linalg.eigvalsh(G)[:, -1].max())


class NodeNorms:
    """What the bounds need of one linear/conv node: the operator norm S of W and
    the cheap norms at once, the operator norm dS[r] of W - Q_r(W) for a
    resolution r when it is first needed (most samples never reach the last)."""

    def __init__(self, node, weights, in_shape=None):
        W2 = weights.W2
        self.node, self.weights, self.in_shape = node, weights, in_shape
        self.k = W2.shape[1]
        if node.op == "conv":
            kh, kw = node.params["W"].shape[2:]
            self.overlap = ops.window_overlap(node.params, (kh, kw))
        else:
            self.overlap = 1
        self.fft = node.op == "conv" and in_shape is not None
        self.S = self._operator_norm(W2)
        root = math.sqrt(self.overlap)
        self.frob = _up(root * math.sqrt(float(np.sum(W2 * W2))))
        self.bnorm = _up(math.sqrt(float(np.sum(node.params["b"] ** 2))))
        self.rows = _up(np.sqrt(np.sum(W2 * W2, axis=1)))       # ||W_j||_2 (dense)
        self.dS, self.drows = {}, {}

    def _operator_norm(self, W2):
        if self.fft:  # the convolution's own operator norm: far sharper than sqrt(overlap)
            return conv_operator_bound(W2.reshape(self.node.params["W"].shape), self.in_shape,
                                       self.node.params)
        g = self.weights.group  # block-diagonal (grouped): the largest block's
        Og = W2.shape[0] // g
        return _up(math.sqrt(self.overlap) * max(spectral_bound(W2[i * Og:(i + 1) * Og])
                                                 for i in range(g)))

    def at(self, r):
        """(dS, per-row norms) of W - Q_r(W): exact in float64 (the digits' low bits)."""
        if r not in self.dS:
            dW = self.weights.W2 - P_dequantize(self.weights.enc, r)
            self.dS[r] = self._operator_norm(dW)
            self.drows[r] = _up(np.sqrt(np.sum(dW * dW, axis=1)))
        return self.dS[r], self.drows[r]


def P_dequantize(enc, r):
    from lrmpi.numerics import planes
    return planes.dequantize(enc, r)


class ModelNorms:
    """NodeNorms of every linear/conv node of a graph (once per model). The operator
    norms cost seconds for a large model: they are kept in a cache folder
    (config cache_dir, keyed by the weights' digits), so a model met before starts
    at once."""

    def __init__(self, graph, weights, should_stop=None):
        self.cache = _NormCache(graph, weights)
        self.nodes = {}
        for i, n in enumerate(graph.linear):  # should_stop raises errors.Stopped to stop
            (should_stop or _go)(f"preparing the model: operator norms of node {n.output!r} "
                                 f"({i + 1} of {len(graph.linear)})")
            shape = graph.shapes[n.inputs[0]]
            nn_ = self.cache.restore(n, weights[n.output], shape) or \
                NodeNorms(n, weights[n.output], shape)
            self.nodes[n.output] = nn_
        self.cache.store(self.nodes)

    def prepare(self, r, should_stop=None):
        """Compute what resolution r needs (before its samples are shared out)."""
        check = should_stop or _go  # raises errors.Stopped to stop, else False
        new = [nn_.at(r) for name, nn_ in self.nodes.items() if r not in nn_.dS
               and not check(f"preparing resolution {r}: norms of node {name!r}")]
        if new:
            self.cache.store(self.nodes)

    def values(self, r):
        """{node: (dS, row norms)} at resolution r: what a rank that has the model needs."""
        return {name: nn_.at(r) for name, nn_ in self.nodes.items()}

    def use(self, r, values):
        for name, (dS, drows) in values.items():
            self.nodes[name].dS[r], self.nodes[name].drows[r] = dS, drows


class _NormCache:
    """Operator norms of a model's weights on disk (lrmpi.cache), keyed by the
    weights' digits, the nodes' parameters and input shapes."""

    def __init__(self, graph, weights):
        from lrmpi import cache
        parts = []
        for n in graph.linear:
            w = weights[n.output]
            parts.append((n.op, n.output, graph.shapes[n.inputs[0]],
                          sorted((k, v) for k, v in n.params.items()
                                 if not isinstance(v, np.ndarray)),
                          w.enc.digits, w.enc.exps, n.params["b"]))
        self.entry = cache.Entry("norms", cache.digest(*parts))
        self.path = self.entry.path
        self.saved = self.entry.load() or {}

    def restore(self, node, weights, in_shape):
        name = node.output
        if f"{name}/S" not in self.saved:
            return None
        nn_ = NodeNorms.__new__(NodeNorms)
        nn_.__dict__.update({k[len(name) + 1:]: self.saved[k].item() if self.saved[k].ndim == 0
                             else self.saved[k] for k in self.saved
                             if k.startswith(name + "/") and "@" not in k})
        nn_.dS = {int(k.split("@")[1]): float(self.saved[k]) for k in self.saved
                  if k.startswith(name + "/dS@")}
        nn_.drows = {int(k.split("@")[1]): self.saved[k] for k in self.saved
                     if k.startswith(name + "/drows@")}
        nn_.node, nn_.weights, nn_.in_shape = node, weights, in_shape  # for new resolutions
        nn_.fft = node.op == "conv" and in_shape is not None
        return nn_

    def store(self, nodes):
        if self.path is None:
            return
        out = {}
        for name, nn_ in nodes.items():
            for k in ("S", "frob", "bnorm", "rows", "k", "overlap"):
                out[f"{name}/{k}"] = np.asarray(getattr(nn_, k))
            for r, v in nn_.dS.items():
                out[f"{name}/dS@{r}"] = np.asarray(v)
                out[f"{name}/drows@{r}"] = nn_.drows[r]
        self.entry.store(out)


def _go(what=None):
    return False


def residual_norm(h, e, bits, r):
    """Per sample, an upper bound on ||h - Q_r(h)||_2: the low bits that r digit
    planes of b bits leave out, exactly (a truncation of h at 2^(e - b r), which
    float64 holds: every step below is exact), summed with rounding up."""
    flat = h.reshape(h.shape[0], -1)
    step = np.ldexp(1.0, e.astype(np.int64) - bits * r)[:, None]
    res = flat - np.trunc(flat / step) * step
    return _norm(res)


def _norm(x):
    """Per-sample l2 norm of a batch of tensors, rounded up."""
    flat = x.reshape(x.shape[0], -1)
    return _up(np.sqrt(np.einsum("ij,ij->i", flat, flat)))


class Tracker:
    """Propagates R and F through one pass (resolution r) of a batch; at the end,
    `logit_radius` holds a bound per sample and logit."""

    def __init__(self, graph, norms, r, bits, n):
        self.graph, self.norms, self.r, self.bits = graph, norms, r, bits
        zero = np.zeros(n)
        self.R, self.F = {graph.input: zero}, {graph.input: zero}
        self.logit_radius = None

    def linear(self, node, h, e, C, z):
        nn_ = self.norms.nodes[node.output]
        t = node.inputs[0]
        R, F = self.R[t], self.F[t]
        nh = _norm(h)
        dq = residual_norm(h, e, self.bits, self.r)
        nC, nz = _norm(C), _norm(z)
        positions = z[0].size // z.shape[1] if z.ndim > 2 else 1
        dS, drows = nn_.at(self.r)
        Rn = nn_.S * (R + dq) + dS * nh + U1 * (nC + nz)
        Fn = nn_.S * F + gamma(nn_.k + 1) * (nn_.frob * (nh + R + F)
                                             + nn_.bnorm * math.sqrt(positions))
        self.R[node.output], self.F[node.output] = _up(Rn), _up(Fn)
        if node.output == self.graph.output and node.op != "linear":  # a conv's logits
            self.logit_radius = np.repeat(_up(Rn + Fn)[:, None], z[0].size, axis=1)
        elif node.output == self.graph.output:
            # per logit: row norms instead of the operator norm
            rows, drows = nn_.rows[None, :], drows[None, :]
            per = (rows * (R + F + dq)[:, None] + drows * nh[:, None]
                   + U1 * (np.abs(C) + np.abs(z))
                   + gamma(nn_.k + 1) * (rows * (nh + R + F)[:, None]
                                         + np.abs(node.params["b"])[None, :]))
            self.logit_radius = np.minimum(_up(per), (Rn + Fn)[:, None])

    def other(self, node, args, y):
        op, p = node.op, node.params
        R = [self.R[t] for t in node.inputs]
        F = [self.F[t] for t in node.inputs]
        if op in ("relu", "clip", "pad") + MOVEMENT:  # 1-Lipschitz; movement permutes or
            # selects (a gather may repeat an index: sqrt(repeats))
            L = math.sqrt(gather_repeats(p, args[0].shape[1:])) if op == "gather" else 1.0
            Rn, Fn = L * R[0], L * F[0]
        elif op in ("leakyrelu", "prelu"):
            L = max(1.0, float(np.max(np.abs(p["alpha"] if op == "leakyrelu" else p["slope"]))))
            ny = _norm(y)
            Rn = L * R[0] + U1 * ny
            Fn = L * F[0] + 2 * U1 * (ny + L * (R[0] + F[0]))
        elif op == "maxpool":
            L = math.sqrt(ops.window_overlap(p))
            Rn, Fn = L * R[0], L * F[0]
        elif op in ("avgpool", "globalavgpool"):
            x = args[0]
            if op == "globalavgpool":
                K = x.shape[2] * x.shape[3]
                L = 1.0 / math.sqrt(K)
            else:
                K = p["kernel"][0] * p["kernel"][1]
                L = math.sqrt(ops.window_overlap(p) / _smallest_window(x.shape, p))
            L = _up(L)
            nx, ny = _norm(x), _norm(y)
            Rn = L * R[0] + gamma(K + 1) * L * nx + U1 * ny
            Fn = L * F[0] + gamma(K + 1) * L * (nx + R[0] + F[0]) + U1 * (ny + Rn + L * F[0])
        elif op == "add":
            g = gamma(len(args))
            total = sum(_norm(a) for a in args)
            Rn = sum(R) + g * total
            Fn = sum(F) + g * (total + sum(R) + sum(F))
        elif op == "concat":
            Rn = np.sqrt(sum(x * x for x in R))
            Fn = np.sqrt(sum(x * x for x in F))
        elif op == "affine":
            c = np.abs(np.asarray(p["c"], np.float64))
            if p["fn"] in ("add", "sub", "rsub"):
                L = 1.0
            elif p["fn"] == "mul":
                L = float(c.max()) if c.size else 0.0
            else:
                L = float((1.0 / c).max()) * (1 + 2.0**-50) if c.size else 0.0
            ny = _norm(y)
            Rn = L * R[0] + U1 * ny
            Fn = L * F[0] + 2 * U1 * (ny + L * (R[0] + F[0]))
        else:
            raise ValueError(f"no bound rule for {op}")
        self.R[node.output], self.F[node.output] = _up(Rn), _up(Fn)
        if node.output == self.graph.output:
            self.logit_radius = np.repeat(_up(Rn + Fn)[:, None], y.shape[1], axis=1)


def _smallest_window(shape, p):
    """The smallest divisor of an average-pooling window: K with count_include_pad,
    else the fewest real (not padded) elements in any window."""
    K = p["kernel"][0] * p["kernel"][1]
    if p.get("count_include_pad", 0):
        return K
    ones = np.ones((1, 1) + tuple(shape[2:]))
    counts = ops.pool(ones, {**p, "count_include_pad": 1}, "avg") * K
    return max(1.0, float(counts.min()))


def certified(logits, radius):
    """Per sample: True if its decision is proven, whatever the logits' errors within
    `radius` (per logit): the top class's lower end above every other's upper end;
    one logit: the interval [z - rho, z + rho] does not contain 0."""
    if logits.shape[1] == 1:
        return np.abs(logits[:, 0]) > radius[:, 0]
    top = logits.argmax(axis=1)
    rows = np.arange(len(logits))
    low = logits[rows, top] - radius[rows, top]
    high = logits + radius
    high[rows, top] = -np.inf
    return low > high.max(axis=1)


def forward_bounded(graph, X, linear, tracker):
    """The pass with the tracker fed at every node: (logits, per-logit radius).
    `linear(node, h)` returns (e, C, z): the per-sample exponents of h's planes, the
    exact product rounded once, and z = C + b."""
    def lin(node, h):
        e, C, z = linear(node, h)
        tracker.linear(node, h, e, C, z)
        return z
    logits = ops.forward(graph, X, lin, after=tracker.other)
    return logits, tracker.logit_radius
