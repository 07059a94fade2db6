"""Verified numerical linear algebra for the logit bounds. Pure numpy, MPI-free.

Every function returns an upper bound of an exact quantity, with the floating-point
rounding of its own computation covered by a proven term (never by hope):

    up(x)            x inflated to cover a short chain (< 2^12 operations) of
                     roundings of non-negative terms: (1 + u)^4096 < 1 + 2^-40, plus
                     2^-1060 for the absolute error of any underflow on the way
    norm_up(x)       per sample, ||x[n]||_2 of a tensor: scaled by a power of two
                     (exact) so nothing over- or underflows, the sum of squares'
                     error gamma_(d+2) covered
    residual, linear_inputs, relu_difference, maxpool_difference, residual_norm,
    residual_squares
                     the digits' truncation residuals and the difference bound's
                     reads of a tensor, exact or rounded up (fused in C where the
                     steps are normal floats)

The operator norms of weights: operator_norms.py.

The arguments, in one place: docs/design.md, "Inference" (Rigour).
"""

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
    return bool(np.all(_fast_rows(e, bits, *planes)))


def _fast_rows(e, bits, *planes):
    """_fast_steps per row."""
    e = np.asarray(e, np.int64)
    ok = np.ones(len(e), bool)
    for k in planes:
        ok &= (-1000 < e - bits * k) & (e - bits * k < 1000)
    return ok


def _by_rows(ok, fast, slow):
    """fast(rows) for the rows where ok, slow(rows) for the others, each a tuple of
    per-row arrays, merged in row order: a per-sample pass decides per row, so that a
    sample's values never depend on the other samples of its batch."""
    if ok.all():
        return fast(slice(None))
    if not ok.any():
        return slow(slice(None))
    merged = []
    for a, b in zip(fast(ok), slow(~ok)):
        m = np.empty((len(ok),) + a.shape[1:], np.result_type(a, b))
        m[ok], m[~ok] = a, b
        merged.append(m)
    return tuple(merged)


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
    ok = _fast_rows(e32, bits, r, p) if flat.shape[1] else np.zeros(n, bool)

    def part(a, rows):
        return None if a is None else a[rows]

    def shape(rows):
        return (len(part(flat, rows)),) + h.shape[1:]

    def fast(rows):
        f, fD, fe = part(flat, rows), part(Df, rows), part(e32, rows)
        ut, sums, umax = kernels.bound_inputs(f, fD, fe, bits, r, p, None if out is None or
                                              not isinstance(rows, slice) else out(f.shape))
        return _inputs_finish(ut, sums, umax, f, lambda odd: None if fD is None else fD[odd],
                              fe, bits, r, p, shape(rows))
    return _by_rows(ok, fast, lambda rows: _linear_inputs_numpy(
        part(flat, rows), part(Df, rows), part(e32, rows), bits, r, p, shape(rows)))


def _inputs_finish(ut, sums, umax, flat, D_rows, e32, bits, r, p, shape):
    """linear_inputs' values from a fused pass's ut, sums (of h^2, ut^2, mid^2) and
    umax; rows whose sums norm_up would scale through the numpy path (D_rows(rows):
    those rows of D, or None)."""
    n, d = flat.shape
    cols = [0, 1, 2] if p and p != r else [0, 1]
    odd = np.any(_odd(sums[:, cols]), axis=1)
    nh, nut, nmid = (_finish(np.where(odd, 0.0, sums[:, c]), d, np.zeros(n, np.int64))
                     for c in range(3))
    if 2 not in cols:
        nmid = np.zeros(n)
    eu = np.frexp(umax)[1].astype(np.int32)
    if np.any(odd):
        sub = _linear_inputs_numpy(flat[odd], D_rows(odd), e32[odd], bits, r, p,
                                   (int(odd.sum()),) + tuple(shape[1:]))
        nh[odd], nut[odd], nmid[odd] = sub[1], sub[2], sub[4]
    return ut.reshape(shape), nh, nut, eu, nmid


def relu_inputs(x, D, y, e, bits, r, p, out=None):
    """relu_difference(x, D, y) and then linear_inputs(y, Dy, e, bits, r, p) for a
    ReLU whose output y is a linear node's input, in one fused pass where the steps
    allow: (ut, ||y||, ||ut||, ut's exponents, ||mid||, ||w||, ||Dy||), every value the
    two functions' own, bit for bit (Dy itself is not made)."""
    from lrmpi.numerics import kernels
    n = y.shape[0]
    fx, fD, fy = (np.ascontiguousarray(a.reshape(n, -1), np.float64) for a in (x, D, y))
    e32 = np.ascontiguousarray(e, np.int32)
    ok = _fast_rows(e32, bits, r, p) if fy.shape[1] else np.zeros(n, bool)

    def shape(rows):
        return (len(fy[rows]),) + y.shape[1:]

    def slow(rows):
        Dy, nw, nDy = relu_difference(fx[rows], fD[rows], fy[rows])
        return linear_inputs(fy[rows].reshape(shape(rows)), Dy, e32[rows], bits, r, p) + \
            (nw, nDy)

    def fast(rows):
        a, b, c, fe = fx[rows], fD[rows], fy[rows], e32[rows]
        ut, sums, umax = kernels.bound_relu_inputs(a, b, c, fe, bits, r, p, None if out is None
                                                   or not isinstance(rows, slice) else out(c.shape))

        def Dy_rows(odd):   # numpy's y - max(x - D, 0) on those rows: the pass's values
            return c[odd] - np.maximum(a[odd] - b[odd], 0.0)
        return _inputs_finish(ut, sums[:, 2:], umax, c, Dy_rows, fe, bits, r, p, shape(rows)) \
            + _difference_norms(sums[:, :2], a, b, Dy_rows, c.shape[1])
    return _by_rows(ok, fast, slow)


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
    return (Dy.reshape(x.shape),) + _difference_norms(sums, flat[0], flat[1],
                                                      lambda odd: Dy[odd], d)


def maxpool_difference(x, D, y, pool, out=None):
    """At a max pooling y = maxpool(x) of NCHW tensors with the estimate D of x's
    difference: (Dy, ||w||, ||Dy||) with w = x - D and Dy = y - maxpool(w) (ops.pool's
    bits), norms rounded up as norm_up rounds, in one fused pass (rows norm_up scales
    go through it). `pool`: (kh, kw, sh, sw, dh, dw, pad top, pad left, Ho, Wo), the
    geometry of fused_node.absorb_pool; `out(shape)`: where Dy goes, or None."""
    from lrmpi.numerics import kernels
    x, D, y = (np.ascontiguousarray(a, np.float64) for a in (x, D, y))
    Dy, sums = kernels.bound_maxpool(x, D, y, pool, None if out is None else out(y.shape))
    return (Dy,) + _difference_norms(sums, x, D, lambda odd: Dy[odd], Dy[0].size)


def _difference_norms(sums, x, D, Dy_rows, dy):
    """(||x - D||, ||Dy||) per sample from a fused pass's sums of squares (columns 0
    and 1; Dy has dy entries a sample), rounded up as norm_up rounds; rows whose sums
    norm_up would scale go through norm_up itself (Dy_rows(rows): those rows of Dy)."""
    n = len(sums)
    odd = np.any(_odd(sums), axis=1)
    nw, nDy = (_finish(np.where(odd, 0.0, sums[:, c]), size, np.zeros(n, np.int64))
               for c, size in ((0, x[0].size), (1, dy)))
    if np.any(odd):
        nw[odd] = norm_up(x[odd] - D[odd])
        nDy[odd] = norm_up(Dy_rows(odd))
    return nw, nDy


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
    n = x.shape[0]
    flat = np.ascontiguousarray(x.reshape(n, -1), np.float64)
    e32 = np.ascontiguousarray(e, np.int32)
    ok = _fast_rows(e32, bits, planes) if flat.shape[1] else np.zeros(n, bool)

    def fast(rows):
        f, fe = flat[rows], e32[rows]
        s = residual_squares(f, fe, bits, planes)
        odd = _odd(s)
        out = _finish(np.where(odd, 0.0, s), f.shape[1], np.zeros(len(f), np.int64))
        if np.any(odd):
            out[odd] = norm_up(residual(f[odd], fe[odd], bits, planes))
        return (out,)
    return _by_rows(ok, fast, lambda rows: (norm_up(residual(flat[rows], e32[rows], bits,
                                                                   planes)),))[0]
