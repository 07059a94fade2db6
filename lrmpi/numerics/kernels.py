"""Friendly dispatcher over the native kernels (lrmpi._ext.kernels).

Every function validates its arguments once (dtype, contiguity, shapes) and
raises TypeError/ValueError naming what it received; only then does it call
the unchecked C kernel. The ISA is chosen from CPUID at import, or from
LRMPI_KERNEL=ref|avx2|avx512|amx (an ISA this CPU lacks is an error, not a crash).
"""
import numpy as np

from lrmpi import config
from lrmpi._ext import kernels as _k
from lrmpi.errors import ConfigError
from lrmpi.numerics.buffers import big_empty

INT32_MAX = 2**31 - 1
MAX_LIMBS = _k.max_limbs()  # LRMPI_MAX_LIMBS in ext/c/kernels.h


def kmax(bits):
    """Largest inner dimension whose int8 digit products cannot overflow int32.

    |sum_k a_k b_k| <= k (2^bits - 1)^2 < 2^31; for bits = 7 that is 133 144.
    """
    return INT32_MAX // ((1 << bits) - 1) ** 2


# --- ISA selection ---

def available_isas():
    """ISA names usable on this CPU, best last."""
    return _k.available_isas()


def selected_isa():
    """The ISA every kernel currently dispatches to."""
    return _k.selected_isa()


def select_isa(isa):
    """Dispatch every kernel to `isa` (one of available_isas(); "" : the best)."""
    if not isa:
        isa = available_isas()[-1]
    if isa not in available_isas():
        raise ConfigError(
            f"LRMPI_KERNEL={isa!r} is not usable here; this CPU supports: "
            + ", ".join(available_isas()))
    _k.select_isa(isa)


if config.peek().kernel:  # an ISA this CPU lacks: one line from config.check(), not a
    try:                   # traceback at import
        select_isa(config.peek().kernel)
    except ConfigError as exc:
        config.defer(exc)
config.on_change("kernel", select_isa)  # config.configure(kernel=...) takes effect


# --- checks ---

def _need(arr, name, dtype, ndim):
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(arr).__name__}")
    if arr.dtype != dtype:
        raise TypeError(f"{name} must have dtype {np.dtype(dtype)}, got {arr.dtype}")
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {arr.shape}")


def _need_c(arr, name, dtype, ndim):
    _need(arr, name, dtype, ndim)
    if not arr.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")


# --- kernels ---

def rowmax(X, *, isa=None):
    """(max_j |X[i,j]| for each row i, whether X holds NaN/Inf)."""
    _need_c(X, "X", np.float64, 2)
    amax = np.empty(X.shape[0])
    bad = _k.rowmax(X, amax, isa) if X.size else False
    return amax if X.size else np.zeros(X.shape[0]), bad


def _same_rows(x, name, **others):
    """The bound passes' float64 arrays: C-contiguous, 2-D, all of x's shape (None: absent)."""
    _need_c(x, name, np.float64, 2)
    for other, a in others.items():
        if a is not None:
            _need_c(a, other, np.float64, 2)
            if a.shape != x.shape:
                raise ValueError(f"{other} has shape {a.shape}, {name} {x.shape}")


def bound_inputs(h, D, e, bits, r, p, ut=None):
    """The difference bound's one pass over a linear node's input h (n x d) and its
    estimate D (or None): (ut, sums, umax) with ut = D - (h - Q_r(h)) (or its
    negation), sums[:, 0..2] the sums of squares of h, ut and the planes of h between
    p and r, umax the rows' max |ut| (ext/c/kernels.h, "bound passes")."""
    _same_rows(h, "h", D=D, ut=ut)
    ut, sums, umax = _inputs_out(h, e, ut, 3)
    _k.bound_inputs(h, D, e, int(bits), int(r), int(p), ut, sums, umax)
    return ut, sums, umax


def _inputs_out(h, e, ut, columns):
    """The input passes' outputs for h (n x d) with exponents e: ut (made if None),
    the sums (n x columns) and umax (n)."""
    _need_c(e, "e", np.int32, 1)
    if e.shape[0] != h.shape[0]:
        raise ValueError(f"e has {e.shape[0]} entries for {h.shape[0]} rows")
    ut = np.empty_like(h) if ut is None else ut
    return ut, np.zeros((h.shape[0], columns)), np.zeros(h.shape[0])


def bound_relu_inputs(x, D, y, e, bits, r, p, ut=None):
    """bound_relu(x, D, y) then bound_inputs(y, Dy, ...) in one pass, Dy not stored:
    (ut, sums, umax), sums[:, 0..4] the sums of squares of x - D, Dy, y, ut and the
    planes of y between p and r (kernels.h, "bound passes")."""
    _same_rows(x, "x", D=D, y=y, ut=ut)
    ut, sums, umax = _inputs_out(x, e, ut, 5)
    _k.bound_relu_inputs(x, D, y, e, int(bits), int(r), int(p), ut, sums, umax)
    return ut, sums, umax


def residual_sumsq(x, e, bits, planes):
    """Per row, the sum of squares of x - Q_planes(x) (kernels.h, "bound passes")."""
    _need_c(x, "x", np.float64, 2)
    _need_c(e, "e", np.int32, 1)
    if e.shape[0] != x.shape[0]:
        raise ValueError(f"e has {e.shape[0]} entries for {x.shape[0]} rows")
    sums = np.zeros(x.shape[0])
    _k.residual_sumsq(x, e, int(bits), int(planes), sums)
    return sums


def weight_rows(W, cols=None):
    """One pass over a weight matrix W (rows x k) for its norms (kernels.h): (amax, sabs,
    ssq, cols, bad): per row max|w| of its finite entries, sum |w| and sum w^2; cols
    (k,) += |w| over the rows (a new zero array if None); bad: W holds NaN/Inf."""
    _need_c(W, "W", np.float64, 2)
    n, k = W.shape
    if cols is None:
        cols = np.zeros(k)
    _need_c(cols, "cols", np.float64, 1)
    if cols.shape[0] != k:
        raise ValueError(f"cols has {cols.shape[0]} entries for {k} columns")
    if np.shares_memory(cols, W):   # the C reads W and adds into cols (restrict)
        raise ValueError("cols overlaps W")
    amax, sabs, ssq = np.zeros(n), np.zeros(n), np.zeros(n)
    bad = _k.weight_rows(W, amax, sabs, ssq, cols)
    return amax, sabs, ssq, cols, bad


def bound_relu(x, D, y, Dy=None):
    """At a ReLU y = max(x, 0) with estimate D: (Dy, sums), Dy = y - max(x - D, 0) and
    sums[:, 0..1] the sums of squares of x - D and of Dy (kernels.h, "bound passes")."""
    _same_rows(x, "x", D=D, y=y, Dy=Dy)
    Dy = np.empty_like(x) if Dy is None else Dy
    sums = np.zeros((x.shape[0], 2))
    _k.bound_relu(x, D, y, Dy, sums)
    return Dy, sums


def bound_maxpool(x, D, y, pool, Dy=None):
    """At a max pooling y = maxpool(x) (n x C x H x W -> n x C x Ho x Wo) with estimate
    D of x: (Dy, sums), Dy = y - maxpool(x - D) and sums[:, 0..1] the sums of squares
    of x - D and of Dy; pool = (kh, kw, sh, sw, dh, dw, pad top, pad left, Ho, Wo)
    (kernels.h, "bound passes")."""
    for a, name in ((x, "x"), (D, "D"), (y, "y"), (Dy, "Dy")):
        if a is not None:
            _need_c(a, name, np.float64, 4)
    pool = np.ascontiguousarray(pool, np.int64)
    if pool.shape != (10,) or min(pool[:6]) < 1 or min(pool[6:]) < 0:
        raise ValueError(f"pool: 10 values (kh kw sh sw dh dw pt pl Ho Wo): {pool}")
    n, C = x.shape[:2]
    if D.shape != x.shape or y.shape != (n, C, pool[8], pool[9]):
        raise ValueError(f"D {D.shape} and y {y.shape} do not fit x {x.shape} and the pooling")
    Dy = np.empty_like(y) if Dy is None else Dy
    if Dy.shape != y.shape:
        raise ValueError(f"Dy has shape {Dy.shape}, y {y.shape}")
    sums = np.zeros((n, 2))
    if x.size and y.size:
        _k.bound_maxpool(x, D, y, pool, Dy, sums, np.empty(x.shape[2] * x.shape[3] + pool[9]))
    return Dy, sums


def colmax(X, *, isa=None):
    """(max_i |X[i,j]| for each column j, whether X holds NaN/Inf)."""
    _need_c(X, "X", np.float64, 2)
    amax = np.zeros(X.shape[1])
    bad = _k.colmax(X, amax, isa) if X.size else False
    return amax, bad


def _need_encode(X, exps, bits, units, what):
    """The checks encode and encode_t share: one exponent per row (column) unit."""
    _need_c(X, "X", np.float64, 2)
    _need_c(exps, "exps", np.int32, 1)
    if exps.shape[0] != units:
        raise ValueError(f"exps has {exps.shape[0]} entries for {units} {what}")
    if not 1 <= bits <= 7:
        raise ValueError(f"bits must be in 1..7, got {bits}")


def encode_t(X, exps, bits, planes, *, isa=None, blocks=None, done=None):
    """The columns of X (k x n) split into digit planes as the rows of X.T: returns
    (D of shape (planes, n, k), sumsq, l1), exactly encode(X.T, ...) but without
    forming X.T (the sums in l1 may round differently). `blocks`: [(r0, r1)] of
    X's rows, in order, encoded one call each (the same bits as one call: each
    continues the sums of the rows before, kernels.h); `done(r0, r1)` after each
    (e.g. to let a mapped X's pages go)."""
    _need_encode(X, exps, bits, X.shape[1], "columns")
    if not 1 <= planes <= 16:
        raise ValueError(f"planes must be in 1..16, got {planes}")
    k, n = X.shape
    D = big_empty((planes, n, k), np.int8)
    sumsq = np.zeros((planes, n), np.int64)
    l1 = np.zeros(n)
    at = 0
    for r0, r1 in (blocks or [(0, k)]):
        if r0 != at or not r0 <= r1 <= k:
            raise ValueError(f"blocks must cover the rows 0..{k} in order: ({r0}, {r1})")
        if r1 > r0 and n:
            _k.encode_t(X[r0:r1], exps, bits, D, sumsq, l1, isa, r0)
        if done is not None:
            done(r0, r1)
        at = r1
    if at != k:
        raise ValueError(f"blocks cover the rows 0..{at} of {k}")
    return D, sumsq, l1


def encode(X, exps, bits, planes, *, out=None, isa=None):
    """Split rows of X into digit planes: returns (D, sumsq, l1).

    D[p-1] holds plane p (int8, shape of X); X[i,j] = 2^exps[i] sum_p D[p-1,i,j]
    2^(-bits p) + r with |r| < 2^(exps[i] - bits planes), truncation toward 0.
    Requires |X[i,j]| < 2^exps[i] (see planes.exponents). `out`: a C-contiguous
    int8 array (planes, rows, cols) to write D into (a reused buffer).
    """
    _need_encode(X, exps, bits, X.shape[0], "rows")
    if planes < 1:
        raise ValueError(f"planes must be >= 1, got {planes}")
    m, n = X.shape
    D = big_empty((planes, m, n), np.int8) if out is None else out
    _need_c(D, "out", np.int8, 3)
    if D.shape != (planes, m, n):
        raise ValueError(f"out has shape {D.shape}, expected {(planes, m, n)}")
    sumsq = np.zeros((planes, m), np.int64)
    l1 = np.zeros(m)
    if m and n:
        _k.encode(X, exps, bits, D, sumsq, l1, isa)
    return D, sumsq, l1


def igemm(A, Bt, C, *, isa=None, accumulate=True):
    """C += A @ Bt.T exactly (int8 x int8 -> int32); C = A @ Bt.T, C's entries
    never read, when not `accumulate` (no fill with zeros first: on AMX no C tile
    is loaded for the first block of k either).

    The caller guarantees no int32 overflow: with C = 0 on entry and digits of
    at most `bits` bits, keep A.shape[1] <= kmax(bits).
    """
    _need(A, "A", np.int8, 2)
    _need(Bt, "Bt", np.int8, 2)
    _need(C, "C", np.int32, 2)
    for arr, name in ((A, "A"), (Bt, "Bt"), (C, "C")):
        if arr.shape[1] > 1 and arr.strides[1] != arr.itemsize:
            raise ValueError(f"{name} must be contiguous along its rows")
        if arr.shape[0] > 1 and arr.strides[0] % arr.itemsize:
            raise ValueError(f"{name} has a misaligned row stride")
    if A.shape[1] != Bt.shape[1]:
        raise ValueError(f"inner dimensions differ: A {A.shape}, Bt {Bt.shape}")
    if C.shape != (A.shape[0], Bt.shape[0]):
        raise ValueError(f"C has shape {C.shape}, expected {(A.shape[0], Bt.shape[0])}")
    _k.igemm(A, Bt, C, isa, accumulate)


def acc_add(L, S, shift, row0=0, col0=0, *, isa=None):
    """Add S * 2^shift into the multi-limb integers L[:, row0:, col0:] exactly
    (S int64, or int32: level sums that fit travel as int32)."""
    _need_c(L, "L", np.int64, 3)
    _need_c(S, "S", np.int32 if S.dtype == np.int32 else np.int64, 2)
    if shift < 0 or shift // 32 + 1 >= L.shape[0]:
        raise ValueError(f"shift {shift} needs more than {L.shape[0]} limbs")
    if row0 < 0 or col0 < 0 or row0 + S.shape[0] > L.shape[1] or col0 + S.shape[1] > L.shape[2]:
        raise ValueError(f"tile {S.shape} at ({row0}, {col0}) outside {L.shape[1:]}")
    _k.acc_add(L, S, shift, row0, col0, isa)


def decode(L, erow, ecol, base, *, out=None, row0=0, col0=0, isa=None, with_max=False):
    """Y[i,j] = fl(N[row0+i, col0+j] * 2^(erow[i] + ecol[j] + base)), correctly rounded.

    Decodes all of L, or the tile of `out`'s shape at (row0, col0) into `out`
    (a float64 array or a tile view of one, rows contiguous). Returns Y, or
    (Y, max |Y|) with `with_max` (found in the same pass).
    """
    _need_c(L, "L", np.int64, 3)
    _need_c(erow, "erow", np.int32, 1)
    _need_c(ecol, "ecol", np.int32, 1)
    if not 1 <= L.shape[0] <= MAX_LIMBS:
        raise ValueError(f"L has {L.shape[0]} limbs; 1..{MAX_LIMBS} supported")
    if out is None:
        out = np.empty(L.shape[1:])
    _need(out, "out", np.float64, 2)
    if out.shape[1] > 1 and out.strides[1] != 8:
        raise ValueError("out must be contiguous along its rows")
    m, n = out.shape
    if row0 < 0 or col0 < 0 or row0 + m > L.shape[1] or col0 + n > L.shape[2]:
        raise ValueError(f"tile {out.shape} at ({row0}, {col0}) outside {L.shape[1:]}")
    if erow.shape[0] != m or ecol.shape[0] != n:
        raise ValueError(f"exponents {erow.shape[0]}x{ecol.shape[0]} for a {m}x{n} tile")
    amax = _k.decode(L, erow, ecol, base, out, row0, col0, isa)
    return (out, amax) if with_max else out


def acc_update(F, E, S, shift, erow=None, ecol=None, base=0, *, out=None, row0=0, col0=0,
               isa=None):
    """On the compact exact state (F float64, E int32, both (m, n); N = F + E exactly;
    F and E None: a zero state, not stored): N[row0:, col0:] += S * 2^shift for S
    (int32, or int64 with |S| < 2^53; None adds nothing), then out := fl(N * 2^(erow_i
    + ecol_j + base)) for the tile (unless out is None), correctly rounded. Returns
    max |out| (0.0 without out). The caller keeps |N| < 2^84 (accumulate.compact_fits)."""
    if F is not None or E is not None:
        _need_c(F, "F", np.float64, 2)
        _need_c(E, "E", np.int32, 2)
        if E.shape != F.shape:
            raise ValueError(f"E has shape {E.shape}, F {F.shape}")
    elif out is None:
        raise ValueError("without a state, acc_update decodes into out")
    if S is None and out is None:
        raise ValueError("acc_update needs S, out or both")
    if S is not None:
        _need_c(S, "S", np.int32 if S.dtype == np.int32 else np.int64, 2)
        if not 0 <= shift <= 1000:
            raise ValueError(f"shift {shift} outside 0..1000")
    shape = S.shape if S is not None else out.shape
    if out is not None:
        _need(out, "out", np.float64, 2)
        if out.shape != shape:
            raise ValueError(f"out has shape {out.shape}, the sums {shape}")
        if out.shape[1] > 1 and out.strides[1] != 8:
            raise ValueError("out must be contiguous along its rows")
        _need_c(erow, "erow", np.int32, 1)
        _need_c(ecol, "ecol", np.int32, 1)
        if erow.shape[0] != shape[0] or ecol.shape[0] != shape[1]:
            raise ValueError(f"exponents {erow.shape[0]}x{ecol.shape[0]} for a "
                             f"{shape[0]}x{shape[1]} tile")
    size = F.shape if F is not None else shape
    if row0 < 0 or col0 < 0 or row0 + shape[0] > size[0] or col0 + shape[1] > size[1]:
        raise ValueError(f"tile {shape} at ({row0}, {col0}) outside {size}")
    return _k.acc_update(F, E, S, shift, erow, ecol, base, out, row0, col0, isa)


def dot2(A, B, rows, cols, erow, ecol):
    """Compensated dot products of rows[t] of A with columns cols[t] of B, each
    operand scaled into (-1, 1) by 2^-erow / 2^-ecol: (y, s) with
    |y - exact| <= 2^-53 |exact| + gamma_k^2 s (+ k 2^-1070 for underflow)."""
    _need_c(A, "A", np.float64, 2)
    _need(B, "B", np.float64, 2)
    if B.shape[1] > 1 and B.strides[1] != 8:
        raise ValueError("B must be contiguous along its rows")
    if A.shape[1] != B.shape[0]:
        raise ValueError(f"inner dimensions differ: A {A.shape}, B {B.shape}")
    rows = np.ascontiguousarray(rows, np.int64)
    cols = np.ascontiguousarray(cols, np.int64)
    if rows.shape != cols.shape or rows.ndim != 1:
        raise ValueError("rows and cols must be 1-D of the same length")
    if rows.size and (rows.min() < 0 or rows.max() >= A.shape[0] or cols.min() < 0
                      or cols.max() >= B.shape[1]):
        raise ValueError("an index is outside A's rows or B's columns")
    _need_c(erow, "erow", np.int32, 1)
    _need_c(ecol, "ecol", np.int32, 1)
    y, s = np.empty(rows.size), np.empty(rows.size)
    _k.dot2(A, B, rows, cols, erow, ecol, y, s)
    return y, s

