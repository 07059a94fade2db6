"""Thin memoryview wrappers over the C kernels (ext/c/kernels.h).

One extension module holds every kernel family because they share one
dispatch table (the selected ISA); separate modules would each get their own
copy of dispatch.c's state. These wrappers do NOT validate their arguments:
lrmpi/numerics/kernels.py does that once. Each takes an optional `isa` to call a
specific variant (tests compare every variant with the reference).
"""
from libc.stdint cimport int8_t, int32_t, int64_t, uint64_t
from _kernels cimport (LRMPI_MAX_LIMBS, lrmpi_nn_layer, lrmpi_nn_planes, lrmpi_dot2_ref, lrmpi_bound_inputs, lrmpi_bound_relu_inputs, lrmpi_residual_sumsq, lrmpi_bound_relu, lrmpi_bound_maxpool, lrmpi_weight_rows, lrmpi_kernel_table, lrmpi_kernels, lrmpi_kernels_for,
                       lrmpi_kernel_isas, lrmpi_set_isa)


cdef const lrmpi_kernel_table *_table(isa) except NULL:
    if isa is None:
        return lrmpi_kernels()
    cdef const lrmpi_kernel_table *t = lrmpi_kernels_for(isa.encode())
    if t == NULL:
        raise ValueError(f"kernel ISA {isa!r} is unknown or not supported by this CPU")
    return t


def max_limbs():
    """Most limbs a multi-limb integer may have (LRMPI_MAX_LIMBS in kernels.h)."""
    return LRMPI_MAX_LIMBS


def available_isas():
    """ISA names usable on this CPU, best last."""
    return lrmpi_kernel_isas().decode().split(",")


def selected_isa():
    """Name of the ISA the kernels currently dispatch to."""
    return lrmpi_kernels().isa.decode()


def select_isa(str isa):
    """Dispatch every kernel to `isa`; ValueError if unsupported."""
    if lrmpi_set_isa(isa.encode()) != 0:
        raise ValueError(f"kernel ISA {isa!r} is unknown or not supported by this CPU")


def rowmax(const double[:, ::1] X, double[::1] amax, isa=None):
    """amax[i] := max_j |X[i,j]|; returns True if X holds NaN or Inf."""
    cdef const lrmpi_kernel_table *t = _table(isa)
    cdef int bad
    with nogil:
        bad = t.rowmax(X.shape[0], X.shape[1], &X[0, 0] if X.shape[0] * X.shape[1] else NULL,
                       X.shape[1], &amax[0] if amax.shape[0] else NULL)
    return bool(bad)


def colmax(const double[:, ::1] X, double[::1] amax, isa=None):
    """amax[j] := max_i |X[i,j]|; returns True if X holds NaN or Inf."""
    cdef const lrmpi_kernel_table *t = _table(isa)
    cdef int bad
    with nogil:
        bad = t.colmax(X.shape[0], X.shape[1], &X[0, 0] if X.shape[0] * X.shape[1] else NULL,
                       X.shape[1], &amax[0] if amax.shape[0] else NULL)
    return bool(bad)


def encode_t(const double[:, ::1] X, const int32_t[::1] exps, int bits,
             int8_t[:, :, ::1] D, int64_t[:, ::1] sumsq, double[::1] l1, isa=None,
             int64_t r0=0):
    """The columns of X (k x n) encoded as the rows of X^T: D[p, j, r0:r0 + k] of
    column j, sumsq and l1 added to (X: rows r0.. of a taller matrix; the caller
    checks r0 + k <= D.shape[2])."""
    cdef const lrmpi_kernel_table *t = _table(isa)
    cdef int64_t k = X.shape[0], n = X.shape[1]
    if k == 0 or n == 0:
        return
    with nogil:
        t.encode_t(k, n, &X[0, 0], n, &exps[0], bits, D.shape[0], &D[0, 0, r0], D.shape[2],
                   &sumsq[0, 0], &l1[0])


def encode(const double[:, ::1] X, const int32_t[::1] exps, int bits,
           int8_t[:, :, ::1] D, int64_t[:, ::1] sumsq, double[::1] l1, isa=None):
    """X[i,:] = 2^exps[i] * sum_p D[p,i,:] 2^(-bits p) + r (truncation toward zero).

    l1[i] is the l1 norm of the scaled row, sum_j |X[i,j]| 2^(bits - exps[i]).
    """
    cdef const lrmpi_kernel_table *t = _table(isa)
    cdef int64_t m = X.shape[0], n = X.shape[1]
    if m == 0:
        return
    with nogil:
        t.encode(m, n, &X[0, 0] if n else NULL, n, &exps[0], bits, D.shape[0],
                 &D[0, 0, 0] if n else NULL, &sumsq[0, 0], &l1[0])


def igemm(const int8_t[:, :] A, const int8_t[:, :] Bt, int32_t[:, :] C, isa=None,
          bint accumulate=True):
    """C := C + A Bt^T  (int8 x int8 -> int32; caller guarantees no overflow), or
    C := A Bt^T without reading C when not `accumulate`.

    Rows may be strided (column slices of a plane); elements within a row must
    be contiguous (stride 1), which lrmpi/numerics/kernels.py checks.
    """
    cdef const lrmpi_kernel_table *t = _table(isa)
    cdef int64_t m = A.shape[0], n = Bt.shape[0], k = A.shape[1]
    if m == 0 or n == 0:
        return
    if k == 0:  # an empty sum: no operand to point at
        if not accumulate:
            C[:, :] = 0
        return
    with nogil:
        t.igemm(m, n, k, &A[0, 0], A.strides[0], &Bt[0, 0], Bt.strides[0],
                &C[0, 0], C.strides[0] // 4, accumulate)


cdef const void *_sums(S) except NULL:
    """The data of level sums S (non-empty, C-contiguous 2-D int32 or int64; S keeps
    it alive) for the C kernels."""
    cdef const int64_t[:, ::1] S64
    cdef const int32_t[:, ::1] S32
    if S.dtype.itemsize == 4:
        S32 = S
        return &S32[0, 0]
    S64 = S
    return &S64[0, 0]


def acc_add(int64_t[:, :, ::1] L, S, int shift,
            Py_ssize_t row0=0, Py_ssize_t col0=0, isa=None):
    """N[row0+i, col0+j] += S[i,j] * 2^shift on the multi-limb integers L.

    S: C-contiguous int64 or int32 (the dispatcher checks which).
    """
    cdef const lrmpi_kernel_table *t = _table(isa)
    cdef int s32 = S.dtype.itemsize == 4
    cdef int64_t m = S.shape[0], n = S.shape[1]
    if m == 0 or n == 0:
        return
    cdef const void *s = _sums(S)
    with nogil:
        t.acc_add(m, n, &L[0, row0, col0], L.shape[2], L.shape[1] * L.shape[2],
                  L.shape[0], s, s32, n, shift)


def decode(const int64_t[:, :, ::1] L, const int32_t[::1] erow, const int32_t[::1] ecol,
           int base, double[:, :] Y, Py_ssize_t row0=0, Py_ssize_t col0=0, isa=None):
    """Y[i,j] := fl(N[row0+i, col0+j] * 2^(erow[i] + ecol[j] + base)), correctly rounded.

    Y may be a tile of a larger array (any row stride, unit column stride).
    Returns max |Y[i,j]| (0.0 for an empty tile).
    """
    cdef const lrmpi_kernel_table *t = _table(isa)
    cdef int64_t m = Y.shape[0], n = Y.shape[1]
    cdef double amax = 0.0
    if m == 0 or n == 0:
        return amax
    with nogil:
        t.decode(m, n, &L[0, row0, col0], L.shape[2], L.shape[1] * L.shape[2], L.shape[0],
                 &erow[0], &ecol[0], base, &Y[0, 0], Y.strides[0] // 8, &amax)
    return amax


def acc_update(F, E, S, int shift, erow, ecol, int base,
               Y, Py_ssize_t row0=0, Py_ssize_t col0=0, isa=None):
    """On the tile at (row0, col0) of the compact state (F, E): N += S 2^shift (S None:
    nothing added), then Y := fl(N 2^(erow[i] + ecol[j] + base)) unless Y is None.
    F and E None: a zero state, not stored. S: C-contiguous int64 or int32; Y: a
    float64 tile (unit column stride). Returns max |Y| (0.0 without Y). The tile's
    shape is S's, else Y's."""
    cdef const lrmpi_kernel_table *t = _table(isa)
    cdef double[:, ::1] Fv
    cdef int32_t[:, ::1] Ev
    cdef double *fp = NULL
    cdef int32_t *ep = NULL
    cdef int64_t ldf = 0
    cdef const int32_t[::1] er
    cdef const int32_t[::1] ec
    cdef double[:, :] Yv
    cdef const void *s = NULL
    cdef int s32 = 0
    cdef const int32_t *erp = NULL
    cdef const int32_t *ecp = NULL
    cdef double *y = NULL
    cdef int64_t ldy = 0
    cdef double amax = 0.0
    cdef int64_t m, n
    if S is not None:
        m, n = S.shape[0], S.shape[1]
        s32 = S.dtype.itemsize == 4
        if m and n:
            s = _sums(S)
    else:
        m, n = Y.shape[0], Y.shape[1]
    if m == 0 or n == 0:
        return amax
    if Y is not None:
        Yv = Y
        y = &Yv[0, 0]
        ldy = Yv.strides[0] // 8
        er, ec = erow, ecol
        erp, ecp = &er[0], &ec[0]
    if F is not None:
        Fv, Ev = F, E
        fp, ep, ldf = &Fv[row0, col0], &Ev[row0, col0], Fv.shape[1]
    with nogil:
        t.acc_update(m, n, fp, ep, ldf, s, s32, n, shift, erp, ecp, base, y, ldy,
                     &amax if y != NULL else NULL)
    return amax


def dot2(const double[:, ::1] A, const double[:, :] B, const int64_t[::1] rows,
         const int64_t[::1] cols, const int32_t[::1] erow, const int32_t[::1] ecol,
         double[::1] y, double[::1] s):
    """y[t] := A[rows[t], :] . B[:, cols[t]] scaled into (-1, 1), compensated (Dot2);
    s[t] := the sum of the products' magnitudes. B's columns may be strided."""
    cdef int64_t count = rows.shape[0], k = A.shape[1]
    if count == 0:
        return
    with nogil:
        lrmpi_dot2_ref(count, k, &A[0, 0], A.shape[1], &B[0, 0], B.strides[0] // 8,
                       &rows[0], &cols[0], &erow[0], &ecol[0], &y[0], &s[0])


def bound_inputs(const double[:, ::1] h, D, const int32_t[::1] e, int bits, int r, int p,
                 double[:, ::1] ut, double[:, ::1] sums, double[::1] umax):
    """The difference bound's pass over a linear node's input (kernels.h)."""
    cdef const double[:, ::1] Dv
    cdef const double *dp = NULL
    cdef int64_t n = h.shape[0], d = h.shape[1]
    if n == 0 or d == 0:
        return
    if D is not None:
        Dv = D
        dp = &Dv[0, 0]
    with nogil:
        lrmpi_bound_inputs(n, d, &h[0, 0], dp, &e[0], bits, r, p, &ut[0, 0], &sums[0, 0],
                           &umax[0])


def bound_relu_inputs(const double[:, ::1] x, const double[:, ::1] D, const double[:, ::1] y,
                      const int32_t[::1] e, int bits, int r, int p, double[:, ::1] ut,
                      double[:, ::1] sums, double[::1] umax):
    """A ReLU's difference and the next linear node's input pass in one (kernels.h)."""
    cdef int64_t n = x.shape[0], d = x.shape[1]
    if n == 0 or d == 0:
        return
    with nogil:
        lrmpi_bound_relu_inputs(n, d, &x[0, 0], &D[0, 0], &y[0, 0], &e[0], bits, r, p,
                                &ut[0, 0], &sums[0, 0], &umax[0])


def residual_sumsq(const double[:, ::1] x, const int32_t[::1] e, int bits, int planes,
                   double[::1] sums):
    """sums[i] := sum_j (x - Q_planes(x))[i, j]^2 (kernels.h)."""
    cdef int64_t n = x.shape[0], d = x.shape[1]
    if n == 0 or d == 0:
        return
    with nogil:
        lrmpi_residual_sumsq(n, d, &x[0, 0], &e[0], bits, planes, &sums[0])


def weight_rows(const double[:, ::1] W, double[::1] amax, double[::1] sabs, double[::1] ssq,
                double[::1] cols):
    """One pass over W for its norms (kernels.h); True if W holds NaN/Inf."""
    cdef int64_t n = W.shape[0], d = W.shape[1]
    cdef int bad
    if n == 0 or d == 0:
        return False
    with nogil:
        bad = lrmpi_weight_rows(n, d, &W[0, 0], &amax[0], &sabs[0], &ssq[0], &cols[0])
    return bool(bad)


def bound_relu(const double[:, ::1] x, const double[:, ::1] D, const double[:, ::1] y,
               double[:, ::1] Dy, double[:, ::1] sums):
    """The difference bound at a ReLU (kernels.h)."""
    cdef int64_t n = x.shape[0], d = x.shape[1]
    if n == 0 or d == 0:
        return
    with nogil:
        lrmpi_bound_relu(n, d, &x[0, 0], &D[0, 0], &y[0, 0], &Dy[0, 0], &sums[0, 0])


def bound_maxpool(const double[:, :, :, ::1] x, const double[:, :, :, ::1] D,
                  const double[:, :, :, ::1] y, const int64_t[::1] pool,
                  double[:, :, :, ::1] Dy, double[:, ::1] sums, double[::1] w):
    """The difference bound at a max pooling (kernels.h); nothing empty."""
    with nogil:
        lrmpi_bound_maxpool(x.shape[0], x.shape[1], x.shape[2], x.shape[3], &x[0, 0, 0, 0],
                            &D[0, 0, 0, 0], &y[0, 0, 0, 0], &pool[0], &Dy[0, 0, 0, 0], &sums[0, 0], &w[0])


def crt_residues(const double[:, :] X, int transpose, const int32_t[::1] exps,
                 const int32_t[::1] moduli, R, int64_t[::1] l1, isa=None):
    """R[l] := trunc(rows (or columns, transpose=1) of X scaled by 2^exps) mod
    moduli[l], symmetric; l1 := each row's (column's) sum of |scaled integers|.
    R None: l1 alone (no moduli)."""
    cdef int8_t[:, :, ::1] Rv
    cdef int8_t *r = NULL
    cdef int nmod = 0
    cdef int64_t rows = l1.shape[0], k = X.shape[0] if transpose else X.shape[1]
    cdef int64_t sr = X.strides[0] // 8, sc = X.strides[1] // 8
    if transpose:
        sr, sc = sc, sr
    cdef const lrmpi_kernel_table *t = _table(isa)
    if rows == 0 or k == 0:
        return
    if R is not None:
        Rv = R
        r, nmod = &Rv[0, 0, 0], <int>moduli.shape[0]
    with nogil:
        t.crt_residues(rows, k, &X[0, 0], 0, sr, sc, &exps[0], nmod,
                       &moduli[0] if moduli.shape[0] else NULL, r, &l1[0])


def crt_reconstruct(const int32_t[::1] moduli, const int32_t[:, :, ::1] S,
                    const uint64_t[::1] coef, const uint64_t[::1] Mw,
                    const int32_t[::1] erow, const int32_t[::1] ecol, double[:, :] Y,
                    isa=None):
    """Y := the CRT reconstruction of the residue products S (see kernels.h);
    returns max |Y|."""
    cdef int64_t m = S.shape[1], n = S.shape[2]
    cdef double amax = 0.0
    cdef const lrmpi_kernel_table *t = _table(isa)
    if m == 0 or n == 0:
        return 0.0
    with nogil:
        t.crt_reconstruct(m, n, <int>moduli.shape[0], &moduli[0], &S[0, 0, 0], m * n,
                              &coef[0], &Mw[0], &erow[0], &ecol[0], &Y[0, 0],
                              Y.strides[0] // 8, &amax)
    return amax


# --- fused inference layers (kernels.h, nn_*): lrmpi/numerics/kernels.py checks ---

cdef double *_opt(double[::1] a):
    return NULL if a is None else &a[0]


cdef int _planes(lrmpi_nn_planes *P, d) except -1:
    """Fill P from a dict of lrmpi.numerics.kernels.NNPlanes fields."""
    cdef int8_t[:, ::1] D = d.D
    cdef int32_t[::1] e = d.exps
    P.layout, P.C, P.H, P.W, P.kpad = d.layout, d.C, d.H, d.W, d.kpad
    P.pt, P.pl, P.Hp, P.Wp, P.r, P.bits = d.pt, d.pl, d.Hp, d.Wp, d.r, d.bits
    P.D, P.pstride, P.exps = &D[0, 0], D.shape[1], &e[0]
    P.sq = _opt(d.sq)
    return 0


def nn_quantize(h, int64_t n, planes, isa=None):
    """The digit planes of n samples h (flat, NCHW; float64 or float32) into planes:
    0, 1 if h holds NaN or Inf, -1 without memory."""
    cdef const lrmpi_kernel_table *t = _table(isa)
    cdef lrmpi_nn_planes P
    cdef int bad, f32 = h.dtype.itemsize == 4
    cdef const double[::1] h64
    cdef const float[::1] h32
    cdef const void *p
    if f32:
        h32 = h
        p = &h32[0]
    else:
        h64 = h
        p = &h64[0]
    _planes(&P, planes)
    with nogil:
        bad = t.nn_quantize(n, p, f32, &P)
    return bad


def nn_packed_size(int planes, int64_t O, int64_t kpad, int depthwise, isa=None):
    return _table(isa).nn_packed_size(planes, O, kpad, depthwise)


def nn_pack(const int8_t[:, :, ::1] W, int64_t kpad, int depthwise, int64_t taps,
            int8_t[::1] out, isa=None):
    """W (planes, O, k) int8 -> out in the ISA's layout (64-byte aligned); rows in
    (c, u, v) order permuted to (u, v, c) when taps > 1."""
    cdef const lrmpi_kernel_table *t = _table(isa)
    with nogil:
        t.nn_pack(W.shape[0], W.shape[1], W.shape[2], kpad, depthwise, taps, &W[0, 0, 0],
                  &out[0])


def nn_layer(spec, const int8_t[:, ::1] D, const int32_t[::1] e, const int8_t[::1] wpack,
             const int32_t[::1] f, const double[::1] bias, const double[::1] slope,
             double[::1] Cout, double[::1] Zout, double[::1] Yout, nxt, double[::1] sq,
             double[::1] times, pool, double[::1] Pout, double[::1] Res, double[::1] Aout,
             isa=None, int est_p=0, const int8_t[:, ::1] Du=None, const int32_t[::1] eu=None,
             const int32_t[::1] ef=None, double[::1] Eout=None,
             const int8_t[::1] wres=None):
    """One fused layer (kernels.h nn_layer); spec: lrmpi.numerics.kernels.NNLayer.
    Returns the C kernel's status (0, 1: NaN/Inf in y, -1: no memory)."""
    cdef const lrmpi_kernel_table *t = _table(isa)
    cdef lrmpi_nn_layer L
    cdef lrmpi_nn_planes N
    cdef int status
    L.n, L.Hp, L.Wp, L.C = spec.n, spec.Hp, spec.Wp, spec.C
    L.kh, L.kw, L.sh, L.sw, L.dh, L.dw = spec.kh, spec.kw, spec.sh, spec.sw, spec.dh, spec.dw
    L.Ho, L.Wo, L.O, L.depthwise, L.kpad = spec.Ho, spec.Wo, spec.O, spec.depthwise, spec.kpad
    L.direct = spec.direct
    L.r, L.bits, L.nlimbs, L.wplanes = spec.r, spec.bits, spec.nlimbs, spec.wplanes
    L.act, L.lo, L.hi, L.unit_rows = spec.act, spec.lo, spec.hi, spec.unit_rows
    L.D, L.dstride, L.e = &D[0, 0], D.shape[1], &e[0]
    L.wpack, L.f, L.bias = &wpack[0], &f[0], &bias[0]
    L.slope = NULL
    if slope is not None:
        L.slope = &slope[0]
    L.Cout, L.Zout, L.Yout, L.Aout, L.Res = _opt(Cout), _opt(Zout), _opt(Yout), _opt(Aout), _opt(Res)
    L.times, L.sq = _opt(times), _opt(sq)
    L.pool, L.Pout = pool is not None, _opt(Pout)
    if pool is not None:
        L.pkh, L.pkw, L.psh, L.psw, L.pdh, L.pdw, L.ppt, L.ppl, L.pHo, L.pWo = pool
    L.next = NULL
    if nxt is not None:
        _planes(&N, nxt)
        L.next = &N
    L.est_p, L.Du, L.ustride, L.eu, L.ef, L.Eout = 0, NULL, 0, NULL, NULL, NULL
    L.wres = NULL
    if est_p > 0:
        L.est_p, L.Du, L.ustride, L.eu, L.ef = est_p, &Du[0, 0], Du.shape[1], &eu[0], &ef[0]
        L.Eout, L.wres = &Eout[0], &wres[0]
    with nogil:
        status = t.nn_layer(&L)
    return status
