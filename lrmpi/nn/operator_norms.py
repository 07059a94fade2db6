"""Verified operator norms of linear and convolution weights, for the logit bounds.
Pure numpy (and one C pass over the weights), MPI-free. Each is an upper bound of the
exact norm, its own rounding covered by a proven term (verified.py's conventions):

    spectral_bound   ||M||_2 of a matrix: lambda_max of the Gram matrix proven by a
                     Cholesky factorisation of mu I - G - alpha I (its backward error
                     is below alpha, Rump's argument), the Gram's own rounding added
    conv_operator_bound  the operator norm of a convolution on inputs of a given
                     shape: the largest singular value over the frequencies of the
                     padded torus (Sedghi, Gupta, Long 2019), each frequency's matrix
                     evaluated directly from the taps with a proven error term
    abs_operator_bound   || |W| ||_2 by the Schur test sqrt(max row sum * max column
                     sum) of the non-negative operator (weight_norms: with the rows'
                     squares and maxima, in the same pass)

The arguments, in one place: docs/design.md, "Inference" (Rigour).
"""
import math

import numpy as np

from lrmpi.nn.verified import U, UP, gamma, up


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
