"""Verified numerical linear algebra for the logit bounds. Pure numpy, MPI-free.

Every function returns an upper bound of an exact quantity, with the floating-point
rounding of its own computation covered by a proven term (never by hope):

    up(x)            x inflated to cover a short chain (< 2^12 operations) of
                     roundings of non-negative terms: (1 + u)^4096 < 1 + 2^-40, plus
                     2^-1060 for the absolute error of any underflow on the way
    norm_up(x)       per sample, ||x[n]||_2 of a tensor: scaled by a power of two
                     (exact) so nothing over- or underflows, the sum of squares'
                     error gamma_(d+2) covered
    spectral_bound   ||M||_2 of a matrix: lambda_max of the Gram matrix proven by a
                     Cholesky factorisation of mu I - G - alpha I (its backward error
                     is below alpha, Rump's argument), the Gram's own rounding added
    conv_operator_bound  the operator norm of a convolution on inputs of a given
                     shape: the largest singular value over the frequencies of the
                     padded torus (Sedghi, Gupta, Long 2019), each frequency's matrix
                     evaluated directly from the taps with a proven error term
    abs_operator_bound   || |W| ||_2 by the Schur test sqrt(max row sum * max column
                     sum) of the non-negative operator

The arguments, in one place: docs/design.md, "Inference" (Rigour).
"""
import math

import numpy as np

U = 2.0**-53                      # unit roundoff of float64
U1 = U * (1 + 2.0**-50)           # covers |fl(x) - x| <= u |fl(x)| / (1 - u)
UP = 1 + 2.0**-40
TINY = 2.0**-1060


def gamma(k):
    """gamma_k = k u / (1 - k u): the relative error of a sum of k terms."""
    return k * U / (1 - k * U)


def up(x):
    """x (non-negative, a float or an array) rounded up past the roundings of the
    short computation that produced it."""
    return x * UP + TINY


def norm_up(x, exps=False):
    """Per sample (first axis), an upper bound on the l2 norm of x[n]; with `exps`,
    also sample_exps(x). One pass (the sum of squares) unless a sample's squares
    over- or underflow: those are scaled by a power of two first (exact)."""
    x = np.asarray(x, np.float64)
    flat = x.reshape(x.shape[0], -1)
    n, d = flat.shape
    if d == 0 or n == 0:
        return (np.zeros(n), np.zeros(n, np.int32)) if exps else np.zeros(n)
    if exps:
        from lrmpi.numerics import kernels
        flat = np.ascontiguousarray(flat)
        e = np.frexp(kernels.rowmax(flat)[0])[1].astype(np.int32)
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        s = np.einsum("ij,ij->i", flat, flat)
    odd = ~(s > 2.0**-900) | ~np.isfinite(s)      # tiny, zero, overflowed (or NaN)
    out = _finish(np.where(odd, 0.0, s), d, np.zeros(n, np.int64))
    if np.any(odd):
        sub = flat[odd]
        m = np.max(np.abs(sub), axis=1)
        k = np.frexp(m)[1]                         # max|x[n]| < 2^k
        y = np.ldexp(sub, -k[:, None])             # exact but for subnormal results
        # a NaN row (an inf - inf upstream) has no finite bound: inf, never 0
        out[odd] = np.where(m > 0, _finish(np.einsum("ij,ij->i", y, y), d, k),
                            np.where(np.isnan(m), np.inf, 0.0))
    return (out, e) if exps else out


def _finish(s, d, shift):
    """sqrt of a computed sum of d squares (of x 2^-shift), rounded up: each square
    lost < 2^-1072 to underflow, the squares and their sum round by gamma_(d+1);
    scaling back may round a subnormal result (one ulp) or overflow (inf: still an
    upper bound)."""
    t = (s + d * 2.0**-1071) * (1 + 2 * gamma(d + 2))
    with np.errstate(over="ignore"):
        return np.ldexp(np.sqrt(t) * (1 + 4 * U), shift) + 2.0**-1073


def sample_exps(x):
    """Per sample, the exponent e with max|x[n]| < 2^e (0 for a zero sample)."""
    flat = x.reshape(x.shape[0], -1)
    amax = np.max(np.abs(flat), axis=1) if flat.shape[1] else np.zeros(len(flat))
    return np.frexp(amax)[1].astype(np.int32)


def residual(x, e, bits, planes):
    """x - Q(x) exactly, Q(x) the first `planes` digit planes of x per sample
    (truncation toward zero at the step 2^(e_n - bits planes)): scaling by powers of
    two, truncating and subtracting are exact (the difference has x's low bits).
    Steps below the normal range take fmod (exact; 25x slower); below 2^-1074
    every float is a multiple of the step (residual 0)."""
    flat = x.reshape(x.shape[0], -1)
    k = np.maximum(e.astype(np.int64) - bits * planes, -1074)
    if np.all(k > -1000):
        t = flat * np.ldexp(1.0, -k)[:, None]
        np.trunc(t, out=t)
        t *= np.ldexp(1.0, k)[:, None]
        np.subtract(flat, t, out=t)
        return t.reshape(x.shape)
    return np.fmod(flat, np.ldexp(1.0, k)[:, None]).reshape(x.shape)


def _fast_steps(e, bits, *planes):
    """Whether every row's steps 2^(e - bits k) and their inverses are normal floats
    (the fused passes' condition: their scalings are then exact)."""
    e = np.asarray(e, np.int64)
    return len(e) == 0 or all(-1000 < int(e.min()) - bits * k and int(e.max()) - bits * k < 1000
                              for k in planes)


def _odd(s):
    """Rows whose computed sum of squares norm_up scales first (tiny, zero or not
    finite): the fused passes give them to norm_up."""
    return ~(s > 2.0**-900) | ~np.isfinite(s)


def linear_inputs(h, D, e, bits, r, p, out=None):
    """What the difference bound reads of a linear node's input h (e: its rows'
    exponents, |h| < 2^e), in one fused pass (ext/c/bound_pass.c) where the steps
    allow: (ut, ||h||, ||ut||, ut's exponents, ||mid||) per sample, rounded up as
    norm_up rounds, with dh = h - Q_r(h), ut = D - dh (-dh when D is None; the same
    bits as numpy's) and mid the planes of h between p and r (Q_r(h) - Q_p(h) or
    back; zeros when p is 0 or r). Rows whose sums norm_up would scale go through
    norm_up itself. `out(shape)`: where ut goes (a reused buffer), or None."""
    from lrmpi.numerics import kernels
    n = h.shape[0]
    flat = np.ascontiguousarray(h.reshape(n, -1), np.float64)
    Df = None if D is None else np.ascontiguousarray(D.reshape(n, -1), np.float64)
    e32 = np.ascontiguousarray(e, np.int32)
    d = flat.shape[1]
    if d == 0 or not _fast_steps(e32, bits, r, p):
        return _linear_inputs_numpy(flat, Df, e32, bits, r, p, h.shape)
    ut, sums, umax = kernels.bound_inputs(flat, Df, e32, bits, r, p,
                                          None if out is None else out(flat.shape))
    cols = [0, 1, 2] if p and p != r else [0, 1]
    odd = np.any(_odd(sums[:, cols]), axis=1)
    nh, nut, nmid = (_finish(np.where(odd, 0.0, sums[:, c]), d, np.zeros(n, np.int64))
                     for c in range(3))
    if 2 not in cols:
        nmid = np.zeros(n)
    eu = np.frexp(umax)[1].astype(np.int32)
    if np.any(odd):
        sub = _linear_inputs_numpy(flat[odd], None if Df is None else Df[odd], e32[odd],
                                   bits, r, p, (int(odd.sum()),) + h.shape[1:])
        nh[odd], nut[odd], nmid[odd] = sub[1], sub[2], sub[4]
    return ut.reshape(h.shape), nh, nut, eu, nmid


def _linear_inputs_numpy(flat, D, e, bits, r, p, shape):
    dh = residual(flat, e, bits, r)
    ut = -dh if D is None else D - dh
    nut, eu = norm_up(ut, exps=True)
    if p == 0 or p == r:
        nmid = np.zeros(len(flat))
    elif p < r:   # Q_r(h) - Q_p(h): h's planes p+1..r (exact)
        nmid = norm_up(residual(flat, e, bits, p) - dh)
    else:         # Q_p(h) - Q_r(h): planes r+1..p
        nmid = norm_up(dh - residual(flat, e, bits, p))
    return ut.reshape(shape), norm_up(flat), nut, eu, nmid


def relu_difference(x, D, y, out=None):
    """At a ReLU y = max(x, 0) with the estimate D of x's difference: (Dy, ||w||,
    ||Dy||) with w = x - D and Dy = y - max(w, 0), the same bits as numpy's, norms
    rounded up as norm_up rounds (one fused pass; rows norm_up scales go through it).
    `out(shape)`: where Dy goes (a reused buffer), or None."""
    from lrmpi.numerics import kernels
    n = x.shape[0]
    flat = [np.ascontiguousarray(a.reshape(n, -1), np.float64) for a in (x, D, y)]
    d = flat[0].shape[1]
    if d == 0:
        w = x - D
        return y - np.maximum(w, 0.0), norm_up(w), np.zeros(n)
    Dy, sums = kernels.bound_relu(*flat, None if out is None else out(flat[0].shape))
    odd = np.any(_odd(sums), axis=1)
    nw, nDy = (_finish(np.where(odd, 0.0, sums[:, c]), d, np.zeros(n, np.int64)) for c in (0, 1))
    if np.any(odd):
        nw[odd] = norm_up(flat[0][odd] - flat[1][odd])
        nDy[odd] = norm_up(Dy[odd])
    return Dy.reshape(x.shape), nw, nDy


def residual_squares(x, e, bits, planes):
    """Per row of a 2-d x, the computed sum of squares of residual(x, e, bits, planes)
    (the squares and their sum rounded, in some order), in one fused pass; None where
    a step is not a normal float (the fused pass's scalings would not be exact)."""
    from lrmpi.numerics import kernels
    e32 = np.ascontiguousarray(e, np.int32)
    if x.ndim != 2 or x.shape[1] == 0 or not _fast_steps(e32, bits, planes):
        return None
    return kernels.residual_sumsq(np.ascontiguousarray(x, np.float64), e32, bits, planes)


def residual_norm(x, e, bits, planes):
    """norm_up(residual(x, e, bits, planes)), in one fused pass where the steps allow."""
    from lrmpi.numerics import kernels
    n = x.shape[0]
    flat = np.ascontiguousarray(x.reshape(n, -1), np.float64)
    e32 = np.ascontiguousarray(e, np.int32)
    d = flat.shape[1]
    if d == 0 or not _fast_steps(e32, bits, planes):
        return norm_up(residual(flat, e32, bits, planes))
    s = kernels.residual_sumsq(flat, e32, bits, planes)
    odd = _odd(s)
    out = _finish(np.where(odd, 0.0, s), d, np.zeros(n, np.int64))
    if np.any(odd):
        out[odd] = norm_up(residual(flat[odd], e32[odd], bits, planes))
    return out


# --- operator norms ---

def _scaled(M):
    """(M 2^-s, 2^s): M scaled by a power of two to max|M| in [1/2, 1) (exact)."""
    m = float(np.max(np.abs(M))) if M.size else 0.0
    if m == 0.0:
        return M, 1.0
    s = math.frexp(m)[1]
    return np.ldexp(M, -s), math.ldexp(1.0, s)


def _lambda_max_bound(G, fro2, k, complex_=False, iterations=25):
    """An upper bound on the largest eigenvalue of the exact Gram matrices whose
    computed versions are the stack G (n, d, d) (Hermitian, PSD): mu, 1 % above a
    power-iteration estimate, is proven by a Cholesky factorisation of every
    mu I - G - alpha I (alpha = c (d + 2) u tr(mu I - G) exceeds the factorisation's
    backward error, so mu I - G is positive definite), raised by 2 % until it is;
    then the Gram's own rounding, 2 gamma_(k+2) times its Frobenius mass fro2."""
    n, d, _ = G.shape
    rng = np.random.default_rng(0)
    v = rng.standard_normal((n, d, 1)).astype(G.dtype)
    est = np.zeros(n)
    for _ in range(iterations):
        w = G @ v
        est = np.linalg.norm(w[:, :, 0], axis=1)
        v = w / np.where(est > 0, est, 1.0)[:, None, None]
    mu = max(float(est.max()) * 1.01, 1e-300)
    idx = np.arange(d)
    c = 8 if complex_ else 4
    for _ in range(200):
        A = -G
        A[:, idx, idx] += mu
        tr = np.maximum(np.real(np.trace(A, axis1=1, axis2=2)), 0.0)
        A[:, idx, idx] -= (c * (d + 2) * U * tr + d * 2.0**-1000)[:, None]
        try:
            np.linalg.cholesky(A)
            break
        except np.linalg.LinAlgError:
            mu *= 1.02
    else:  # never expected: LAPACK's eigenvalues (backward stable) with a margin
        mu = float(np.linalg.eigvalsh(G)[:, -1].max()) + 8 * (d + 2) * U * float(np.max(fro2))
    return (mu + 2 * gamma(k + 2) * float(np.max(fro2))) * UP


def spectral_bound(M, should_stop=None, block=1 << 26):
    """A verified upper bound on ||M||_2 (capped by the Frobenius norm). The Gram
    matrix is summed over column blocks of about `block` multiply-adds, calling
    `should_stop()` between them (a 4096 x 25088 layer takes seconds)."""
    M = np.asarray(M, np.float64)
    if M.size == 0 or not np.any(M):
        return 0.0
    M, scale = _scaled(M)
    if M.shape[0] > M.shape[1]:
        M = M.T
    d, k = M.shape
    fro2 = float(np.sum(M * M)) * (1 + 2 * gamma(M.size + 2)) + M.size * 2.0**-1071
    fro = math.sqrt(fro2) * UP
    if fro2 == 0.0 or d == 1:
        return up(fro * scale)
    step = max(1, block // (d * d))
    G = np.zeros((d, d))
    for j in range(0, k, step):   # any order of the k terms: the same gamma_k bound
        if should_stop is not None:
            should_stop()
        G += M[:, j:j + step] @ M[:, j:j + step].T
    lam = _lambda_max_bound(G[None], np.array([fro2]), k)
    return up(min(fro, math.sqrt(lam) * UP) * scale)


def group_blocks(W, group):
    """The (O/g, C/g*kh*kw) weight matrix of each group of a (grouped) layer."""
    O = W.shape[0]
    Og = O // group
    W2 = W.reshape(O, -1)
    return [W2[i * Og:(i + 1) * Og] for i in range(group)]


def conv_overlap(p, kernel):
    """At most how many windows of a convolution read one input element (its
    strides default to 1, not to the kernel as a pooling's)."""
    from lrmpi.nn import ops
    return ops.window_overlap({"strides": (1, 1), **p}, tuple(kernel))


def im2col_operator_bound(W, p, overlap, should_stop=None):
    """||conv||_2 <= sqrt(overlap) max_groups ||W_g||_2: the convolution is the
    weight matrix applied to the window matrix, whose norm is the square root of
    how many windows read one input at most. Cheap, for any input size."""
    g = int(p.get("group", 1))
    return up(math.sqrt(overlap) * max(spectral_bound(b, should_stop)
                                       for b in group_blocks(W, g)))


def conv_symbol_cost(W, in_shape, p):
    """Multiply-adds conv_operator_bound spends (its Gram matrices)."""
    g = int(p.get("group", 1))
    O, Cg, kh, kw = W.shape
    Hp, Wp = _torus(W.shape, in_shape, p)
    d, D = sorted((O // g, Cg))
    return float(Hp * (Wp // 2 + 1)) * g * d * d * D


def _torus(W_shape, in_shape, p):
    _, _, kh, kw = W_shape
    dh, dw = p.get("dilations", (1, 1))
    t, l, b, r = p.get("pads", (0, 0, 0, 0))
    Kh, Kw = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    return max(in_shape[1] + t + b, Kh), max(in_shape[2] + l + r, Kw)


def conv_operator_bound(W, in_shape, p, should_stop=None, chunk_bytes=1 << 27):
    """An upper bound on the operator norm of the convolution with weights W
    (O, C/g, kh, kw) on inputs of `in_shape` (C, H, W).

    The zero-padded (and strided) convolution is a part of the circular one on the
    padded torus Hp x Wp, whose singular values are those of the matrices
    M(w) = sum_taps W[:, :, u, v] exp(-i (w1 t1 + w2 t2)) over the frequencies w of
    that torus (t = the tap's offset from the kernel's centre; a common phase changes
    no singular value; a real kernel has M(-w) = conj M(w), so half the plane
    suffices). Each M(w) is evaluated directly from the taps: its entries are off by
    at most (gamma_(T+2) + 60 (1 + max|t|) u) sum_taps |W| (the phases' angles and
    sines round), so the computed matrix's largest singular value plus the Frobenius
    norm of that error matrix bounds the exact one. 1x1 kernels are one matrix."""
    g = int(p.get("group", 1))
    O, Cg, kh, kw = W.shape
    Og = O // g
    if kh == 1 and kw == 1:
        return up(max(spectral_bound(b, should_stop) for b in group_blocks(W, g)))
    dh, dw = p.get("dilations", (1, 1))
    Hp, Wp = _torus(W.shape, in_shape, p)
    W, scale = _scaled(np.asarray(W, np.float64))
    t1 = (np.arange(kh) - (kh - 1) / 2.0) * dh
    t2 = (np.arange(kw) - (kw - 1) / 2.0) * dw
    T1, T2 = np.meshgrid(t1, t2, indexing="ij")
    T1, T2 = T1.ravel(), T2.ravel()
    taps = kh * kw
    w1 = 2 * np.pi * np.arange(Hp) / Hp
    w2 = 2 * np.pi * np.arange(Wp // 2 + 1) / Wp
    F1, F2 = np.meshgrid(w1, w2, indexing="ij")
    F1, F2 = F1.ravel(), F2.ravel()
    tmax = float(np.max(np.abs(T1)) + np.max(np.abs(T2)))
    eps = gamma(taps + 2) + 60 * (1 + tmax) * U
    top = 0.0
    for gi in range(g):
        Wb = W[gi * Og:(gi + 1) * Og].reshape(Og, Cg, taps)
        err = eps * np.abs(Wb).sum(axis=2)
        # the real form R = [[Re M, -Im M], [Im M, Re M]] has M's singular values
        # (twice each); its entries are off by at most err, so ||R - R_exact||_F
        # <= 2 ||err||_F (complex batched products are 10-30x slower in numpy)
        delta = 2 * math.sqrt(float(np.sum(err * err))) * UP
        nf = max(1, int(chunk_bytes // (32 * Og * Cg)))
        for s in range(0, len(F1), nf):
            if should_stop is not None:
                should_stop()
            ang = np.outer(T1, F1[s:s + nf]) + np.outer(T2, F2[s:s + nf])
            Mr = np.einsum("oct,tf->foc", Wb, np.cos(ang), optimize=True)
            Mi = np.einsum("oct,tf->foc", Wb, -np.sin(ang), optimize=True)
            R = np.concatenate([np.concatenate([Mr, -Mi], axis=2),
                                np.concatenate([Mi, Mr], axis=2)], axis=1)
            if Cg <= Og:
                G, k = R.transpose(0, 2, 1) @ R, 2 * Og
            else:
                G, k = R @ R.transpose(0, 2, 1), 2 * Cg
            fro2 = np.sum(R * R, axis=(1, 2)) * (1 + 2 * gamma(4 * Og * Cg + 2))
            lam = _lambda_max_bound(G, fro2, k)
            top = max(top, math.sqrt(lam) * UP + delta)
    return up(top * scale)


def abs_operator_bound(W, p=None):
    """|| |W| ||_2 of a linear layer (W: (O, k)) or a convolution (W: (O, C/g, kh,
    kw), any input size) by the Schur test: a non-negative operator's norm is at
    most sqrt(max row sum * max column sum). A convolution's row (an output) sums
    its kernel; a column (an input element) is read by each output channel's taps
    at most once per tap."""
    return weight_norms(W, p)[0]


def weight_norms(W, p=None):
    """One pass over a weight (kernels.weight_rows; no |W| or W * W in fresh memory: a
    ResNet-50's 200 MB took 0.08 s each): (A, sq, amax, finite) with A the bound of
    abs_operator_bound, sq the rows' (outputs') sums of squares as computed (in some
    order), amax their max |w| over finite entries, finite whether W holds no NaN/Inf."""
    from lrmpi.numerics import kernels
    W = np.asarray(W, np.float64)
    O = W.shape[0] if W.ndim else 0
    if W.size == 0:
        return 0.0, np.zeros(O), np.zeros(O), True
    W2 = np.ascontiguousarray(W.reshape(O, -1))
    g = int((p or {}).get("group", 1)) if W.ndim == 4 else 1
    Og = O // g
    amax, sabs, sq = np.zeros(O), np.zeros(O), np.zeros(O)
    col, finite = 0.0, True
    for i in range(g):
        rows = slice(i * Og, (i + 1) * Og)
        amax[rows], sabs[rows], sq[rows], cols, bad = kernels.weight_rows(W2[rows])
        if W.ndim == 4:   # an input channel's column: every tap of every output of its group
            cols = cols.reshape(W.shape[1], -1).sum(axis=1)
        col, finite = max(col, float(np.max(cols))), finite and not bad
    # terms of a sum: a row's (an output's) k, a column's (an input's) O, or a conv's
    # input channel's Og kh kw (every tap of every output channel of its group)
    k = max(W.shape[0], int(np.prod(W.shape[1:])), Og * int(np.prod(W.shape[2:])))
    row = float(np.max(sabs))
    # the roots first: row * col of tiny weights underflows (sums of |w| do not)
    A = up(up(math.sqrt(row)) * up(math.sqrt(col * (1 + 2 * gamma(k + 2)))))
    return A, sq, amax, finite
