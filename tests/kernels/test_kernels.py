"""Every kernel variant against the reference and against exact Python integers."""
import math
from fractions import Fraction

import numpy as np
import pytest

from lrmpi.numerics import kernels

ISAS = kernels.available_isas()
# 0, 1, around a 64-byte vector of int8 (VL = 64) and of int32/float64, and large
SIZES = [0, 1, 7, 8, 9, 15, 16, 17, 63, 64, 65, 129, 300]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("k", SIZES)
def test_igemm_matches_int64_matmul(isa, k, rng):
    for m, n in [(1, 1), (5, 3), (4, 4), (13, 17), (33, 65)]:
        A = rng.integers(-127, 128, (m, k), dtype=np.int8)
        Bt = rng.integers(-127, 128, (n, k), dtype=np.int8)
        C0 = rng.integers(-1000, 1000, (m, n)).astype(np.int32)
        C = C0.copy()
        kernels.igemm(A, Bt, C, isa=isa)
        want = C0 + A.astype(np.int64) @ Bt.astype(np.int64).T
        np.testing.assert_array_equal(C, want)


@pytest.mark.parametrize("isa", ISAS)
def test_igemm_strided_rows_and_extremes(isa, rng):
    A = np.full((6, 40), -127, np.int8)
    Bt = np.full((5, 40), 127, np.int8)
    A[::2] = 127
    C = np.zeros((6, 5), np.int32)
    kernels.igemm(A[:, 3:37], Bt[:, 3:37], C, isa=isa)
    np.testing.assert_array_equal(C, A[:, 3:37].astype(np.int64) @ Bt[:, 3:37].astype(np.int64).T)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("m, n, k", [(250, 530, 2051), (4110, 40, 2051), (70, 290, 4163)])
@pytest.mark.parametrize("accumulate", [True, False])
def test_igemm_crosses_every_cache_block(isa, m, n, k, accumulate, rng):
    # past NC = 512 columns, KC = 2048 of k and MC = 4104 rows (igemm_x86.c; AMX:
    # NC = 256, KC = 4096, MC = 4096), with tails in every dimension and row strides
    # larger than k. Without `accumulate` C's entries are not read (garbage in them,
    # and in the columns beside the view, which must stay): the first block of k
    # sets C, the others add to it
    A = rng.integers(-127, 128, (m, k + 5), dtype=np.int8)[:, 2:k + 2]
    Bt = rng.integers(-127, 128, (n, k + 3), dtype=np.int8)[:, 1:k + 1]
    A[:3] = -127  # extremes: every partial sum of these rows is at its largest
    Bt[:4] = 127
    full = np.zeros((m, n + 7), np.int32) if accumulate else \
        rng.integers(-2**31, 2**31, (m, n + 7)).astype(np.int32)
    before = full.copy()
    C = full[:, 3:n + 3]
    kernels.igemm(A, Bt, C, isa=isa, accumulate=accumulate)
    np.testing.assert_array_equal(C, A.astype(np.int64) @ Bt.astype(np.int64).T)
    np.testing.assert_array_equal(full[:, :3], before[:, :3])
    np.testing.assert_array_equal(full[:, n + 3:], before[:, n + 3:])


@pytest.mark.parametrize("isa", ISAS)
def test_igemm_sets_c_without_reading_it(isa, rng):
    """accumulate=False: C = A Bt^T whatever C held, for every shape, k = 0 included
    (an empty sum); accumulate=True adds to it."""
    for m, n, k in [(1, 1, 1), (5, 3, 0), (13, 17, 64), (33, 65, 200), (32, 32, 64)]:
        A = rng.integers(-127, 128, (m, k), dtype=np.int8)
        Bt = rng.integers(-127, 128, (n, k), dtype=np.int8)
        want = A.astype(np.int64) @ Bt.astype(np.int64).T
        C = rng.integers(-2**31, 2**31, (m, n)).astype(np.int32)
        kernels.igemm(A, Bt, C, isa=isa, accumulate=False)
        np.testing.assert_array_equal(C, want)
        kernels.igemm(A, Bt, C, isa=isa)
        np.testing.assert_array_equal(C, 2 * want)


def test_igemm_rejects_bad_arguments():
    A = np.zeros((2, 3), np.int8)
    with pytest.raises(TypeError, match="dtype int8"):
        kernels.igemm(A.astype(np.int16), A, np.zeros((2, 2), np.int32))
    with pytest.raises(ValueError, match="inner dimensions"):
        kernels.igemm(A, np.zeros((2, 4), np.int8), np.zeros((2, 2), np.int32))
    with pytest.raises(ValueError, match="contiguous along its rows"):
        kernels.igemm(np.zeros((3, 4), np.int8).T, A.T.copy().T, np.zeros((4, 2), np.int32))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("n", SIZES)
def test_encode_and_rowmax_variants_agree_with_ref(isa, n, rng):
    X = rng.standard_normal((5, n)) * 10.0 ** rng.uniform(-300, 300, (5, 1))
    amax, bad = kernels.rowmax(X, isa=isa)
    ref, _ = kernels.rowmax(X, isa="ref")
    assert not bad
    np.testing.assert_array_equal(amax, np.abs(X).max(axis=1) if n else 0.0)
    np.testing.assert_array_equal(amax, ref)
    exps = np.frexp(amax)[1].astype(np.int32)
    got = kernels.encode(X, exps, 7, 8, isa=isa)
    want = kernels.encode(X, exps, 7, 8, isa="ref")
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("isa", ISAS)
def test_rowmax_flags_nan_and_inf(isa):
    for bad in (np.nan, np.inf, -np.inf):
        X = np.zeros((3, 20))
        X[1, 17] = bad
        assert kernels.rowmax(X, isa=isa)[1]


@pytest.mark.parametrize("bits", [1, 3, 7])
def test_encode_digits_are_exact_truncations(bits, rng):
    X = rng.standard_normal((4, 33)) * 10.0 ** rng.uniform(-5, 5, (4, 33))
    X[0, 0] = 0.0
    X[1] = 0.0
    exps = np.frexp(np.abs(X).max(axis=1))[1].astype(np.int32)
    s = 60 // bits
    D, sumsq, l1 = kernels.encode(X, exps, bits, s)
    assert np.abs(D).max() <= 2**bits - 1
    # every digit has the sign of x (or is 0)
    assert np.all(D * np.sign(X)[None] >= 0)
    # truncation toward zero: 0 <= sign(x) (x - digits) < 2^(e - bits s), exactly
    for i in range(4):
        for j in range(33):
            val = sum(int(D[p, i, j]) * 2 ** (bits * (s - 1 - p)) for p in range(s))
            r = Fraction(X[i, j]) - Fraction(val) * Fraction(2) ** (int(exps[i]) - bits * s)
            sign = 1 if X[i, j] >= 0 else -1
            assert 0 <= sign * r < Fraction(2) ** (int(exps[i]) - bits * s)
    np.testing.assert_array_equal(sumsq, (D.astype(np.int64) ** 2).sum(axis=2))
    np.testing.assert_allclose(l1, np.abs(np.ldexp(X, bits - exps[:, None])).sum(axis=1),
                               rtol=1e-14)


def _limbs_from_ints(values, L):
    """Random carry-save limbs (not normalized) whose value is each Python int."""
    rng = np.random.default_rng(5)
    out = np.zeros((L, len(values)), np.int64)
    for idx, v in enumerate(values):
        limbs = [(v >> (32 * l)) & 0xFFFFFFFF for l in range(L - 1)] + [v >> (32 * (L - 1))]
        for l in range(L - 1):  # move random carries: same value, not normalized
            c = int(rng.integers(-2**20, 2**20)) if L > 2 else 0
            limbs[l] += c << 32
            limbs[l + 1] -= c
        assert sum(x << (32 * l) for l, x in enumerate(limbs)) == v
        out[:, idx] = limbs
    return out


def _round_ref(v, e):
    """Correctly rounded v * 2^e; +-inf past the largest double."""
    try:
        return float(Fraction(v) * Fraction(2) ** e) if e < 0 else float(v * 2**e)
    except OverflowError:
        return float("inf") if v > 0 else float("-inf")


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("L, top", [(5, 130), (4, 125), (3, 93), (2, 61)])
def test_decode_is_correctly_rounded(isa, L, top):
    """Both the general path (> 4 limbs) and the 128-bit one (<= 4)."""
    rng = np.random.default_rng(9)
    vals = [0, 1, -1, 2**53 + 1, 2**53 + 3, -(2**53 + 1), 2**54 + 2, 2**60 + 2**7,
            2**60 + 2**7 + 1, -(2**60 + 2**7)]
    if top > 100:
        vals += [2**100 + 2**47, 2**100 + 2**47 + 1, -(2**100 + 2**47)]
    vals += [2**top - 1, -(2**top) + 1, 2**top - 2**(top - 53), 2**top - 2**(top - 54)]
    vals += [int(x) * 2**int(s) + int(y) for x, s, y in
             zip(rng.integers(-2**(min(top, 62) - 1), 2**(min(top, 62) - 1), 40), rng.integers(0, max(top - 62, 1), 40),
                 rng.integers(-2**30, 2**30, 40))]
    Lm = _limbs_from_ints(vals, L)[:, None, :].copy()
    for base in (0, -200, -1100, -1074 - 60, 900):
        erow = np.zeros(1, np.int32)
        ecol = np.zeros(len(vals), np.int32)
        got, amax = kernels.decode(Lm, erow, ecol, base, isa=isa, with_max=True)
        want = [_round_ref(v, base) for v in vals]
        np.testing.assert_array_equal(got[0], want, err_msg=f"base {base}")
        assert amax == max(abs(w) for w in want)  # found in the same pass


@pytest.mark.parametrize("isa", [i for i in ISAS if i != "ref"])
@pytest.mark.parametrize("L", [1, 2, 3, 4, 5])
def test_decode_matches_the_reference(isa, L, rng):
    """Vector decode against ref.c, bit for bit: carry-save limbs with
    large carries, per-row and per-column exponents (normal, subnormal and
    overflowing results), and column tails of every length."""
    m, n = 7, 53
    Lm = np.empty((L, m, n), np.int64)
    for l in range(L):  # <= 4 limbs: |N| < 2^126, what accumulate guarantees
        bound = 2**(min(62, 123 - 32 * l) if L <= 4 else 62)
        Lm[l] = rng.integers(-bound, bound, (m, n))
    Lm[:, 0, :5] = 0  # zeros, at any exponent
    erow = rng.integers(-40, 40, m).astype(np.int32)
    ecol = rng.integers(-40, 40, n).astype(np.int32)
    for base in (0, -300, -1090, -1100 - 32 * L, 1000 - 32 * L):
        for cols in (n, 8, 9, 1):
            part = np.ascontiguousarray(Lm[:, :, :cols])
            want = kernels.decode(part, erow, ecol[:cols], base, isa="ref")
            got, amax = kernels.decode(part, erow, ecol[:cols], base, isa=isa, with_max=True)
            np.testing.assert_array_equal(got, want, err_msg=f"base {base}, {cols} columns")
            assert amax == np.abs(want).max()


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", [np.int64, np.int32])
def test_acc_add_is_exact(isa, dtype, rng):
    m, n, L = 3, 37, 5
    Lm = np.zeros((L, m, n), np.int64)
    want = np.zeros((m, n), dtype=object)
    top = 2**39 if dtype == np.int64 else 2**31
    for shift in (0, 5, 31, 32, 33, 63, 70):
        S = rng.integers(-top, top, (m, n)).astype(dtype)
        S[0, :2] = -top, top - 1  # the extremes of int32 too
        kernels.acc_add(Lm, S, shift, isa=isa)
        want += S.astype(object) * (1 << shift)
    got = np.zeros((m, n), dtype=object)
    for l in range(L):
        got += Lm[l].astype(object) * (1 << (32 * l))
    assert (got == want).all()


def test_tile_offsets_in_acc_add():
    Lm = np.zeros((3, 4, 5), np.int64)
    kernels.acc_add(Lm, np.ones((2, 2), np.int64), 0, row0=2, col0=3)
    assert Lm[0].sum() == 4 and Lm[0, 2:, 3:].sum() == 4
    with pytest.raises(ValueError, match="outside"):
        kernels.acc_add(Lm, np.ones((2, 2), np.int64), 0, row0=3, col0=3)


def test_unsupported_isa_is_a_clear_error():
    with pytest.raises(ValueError, match="not usable here"):
        kernels.select_isa("avx9000")


def test_dot2_is_accurate_where_plain_float_cancels(rng):
    """Compensated dot products against exact rationals: sums that cancel to a tiny
    result keep their accuracy (a plain float64 dot loses it all)."""
    from fractions import Fraction
    k = 200
    a = rng.standard_normal((3, k)) * np.exp(rng.uniform(-20, 20, (3, k)))
    b = np.empty((k, 4))
    b[:, 0] = rng.standard_normal(k)
    b[:, 1] = a[0] * 3.0  # a[0].b[:,1] large, exact
    b[:, 2] = 0.0
    b[::2, 3], b[1::2, 3] = 1.0, -1.0
    a[1, ::2], a[1, 1::2] = 1e16, 1e16 + 2  # 1e16*sum(+-1) cancels to -200
    erow = np.frexp(np.abs(a).max(axis=1))[1].astype(np.int32)
    ecol = np.frexp(np.abs(b).max(axis=0))[1].astype(np.int32)
    rows = np.repeat(np.arange(3), 4)
    cols = np.tile(np.arange(4), 3)
    y, s = kernels.dot2(a, b, rows, cols, erow, ecol)
    u, g = 2.0**-53, k * 2.0**-53 / (1 - k * 2.0**-53)
    for t, (i, j) in enumerate(zip(rows, cols)):
        exact = sum(Fraction(x) * Fraction(z) for x, z in zip(a[i], b[:, j]))
        scaled = exact / Fraction(2) ** (int(erow[i]) + int(ecol[j]))
        err = abs(Fraction(y[t]) - scaled)
        assert err <= u * abs(scaled) + g * g * Fraction(s[t]) * (1 + Fraction(1, 2**30)), (i, j)
    with pytest.raises(ValueError):
        kernels.dot2(a, b, [3], [0], erow, ecol)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("k, n", [(1, 1), (31, 33), (32, 32), (100, 7), (65, 200)])
def test_encode_t_is_encode_of_the_transpose(isa, k, n, rng):
    """The columns of B encoded without forming B.T: the same digits and sums of
    squares as encoding B.T row by row (block edges of every kind), l1 to rounding."""
    B = rng.standard_normal((k, n)) * np.exp(rng.uniform(-8, 8, (1, n)))
    B[:, 0] = 0.0
    amax, bad = kernels.colmax(B, isa=isa)
    np.testing.assert_array_equal(amax, np.abs(B).max(axis=0))
    assert not bad
    exps = np.frexp(amax)[1].astype(np.int32)
    for planes in (1, 4, 16):
        D, ss, l1 = kernels.encode_t(B, exps, 7, planes, isa=isa)
        D2, ss2, l12 = kernels.encode(np.ascontiguousarray(B.T), exps, 7, planes, isa="ref")
        np.testing.assert_array_equal(D, D2)
        np.testing.assert_array_equal(ss, ss2)
        np.testing.assert_allclose(l1, l12, rtol=1e-12)
    B[k // 2, n // 2] = np.nan
    assert kernels.colmax(B, isa=isa)[1]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("k, n, rows", [(200, 70, 1), (200, 70, 64), (130, 33, 50),
                                        (65, 200, 256)])
def test_encode_t_by_blocks_of_rows_is_one_call(isa, k, n, rows, rng):
    """B encoded by blocks of rows (planes.encode_columns: a mapped B's pages leave
    after each block), each call continuing the sums before: the same digits and the
    same bits of sumsq and l1 as one call over all rows."""
    B = rng.standard_normal((k, n)) * np.exp(rng.uniform(-8, 8, (1, n)))
    exps = np.frexp(np.abs(B).max(axis=0))[1].astype(np.int32)
    seen = []
    blocks = [(r0, min(r0 + rows, k)) for r0 in range(0, k, rows)]
    got = kernels.encode_t(B, exps, 7, 4, isa=isa, blocks=blocks,
                           done=lambda r0, r1: seen.append((r0, r1)))
    want = kernels.encode_t(B, exps, 7, 4, isa=isa)
    assert seen == blocks
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(got[2].view(np.uint64), want[2].view(np.uint64))
    with pytest.raises(ValueError, match="in order"):
        kernels.encode_t(B, exps, 7, 4, isa=isa, blocks=[(0, 5), (6, k)])
    with pytest.raises(ValueError, match="cover"):
        kernels.encode_t(B, exps, 7, 4, isa=isa, blocks=[(0, 5)])


def _crt_reference(mods, coef, M, S, erow, ecol):
    """The CRT reconstruction in Python integers: N = sum_l (S_l mod m_l) coef_l mod M,
    symmetric, rounded once (float of a Python int is correctly rounded), scaled."""
    out = np.empty(S.shape[1:])
    for i in range(S.shape[1]):
        for j in range(S.shape[2]):
            N = sum((int(S[l, i, j]) % int(m)) * c for l, (m, c) in enumerate(zip(mods, coef))) % M
            if N > M // 2:
                N -= M
            try:
                out[i, j] = math.ldexp(float(N), -int(erow[i]) - int(ecol[j]))
            except OverflowError:
                out[i, j] = math.copysign(math.inf, N)
    return out


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("count", [1, 2, 7, 15, 16])
def test_crt_reconstruct_is_the_exact_integer_rounded_once(isa, count, rng):
    """Every variant against Python integers: residues of any int32 sum (both signs,
    the extremes), every number of moduli, rows and columns not a multiple of the
    vector width, scalings into the subnormal and overflow ranges (the scalar path)."""
    from lrmpi._ext import kernels as _k
    from lrmpi.numerics import crt
    pl = crt.plan(count)
    mods, coefw, Mw = pl.constants
    M = int(Mw[0]) | (int(Mw[1]) << 64)
    coef = [int(coefw[2 * l]) | (int(coefw[2 * l + 1]) << 64) for l in range(count)]
    m, n = 7, 19
    S = rng.integers(-2**31, 2**31, size=(count, m, n), dtype=np.int64)
    S[:, 0, :3] = [-2**31, 2**31 - 1, 0]
    S[:, 1] = rng.integers(-300, 300, size=(count, n))   # small products: small N
    S = S.astype(np.int32)
    erow = rng.integers(-60, 60, m).astype(np.int32)
    ecol = rng.integers(-60, 60, n).astype(np.int32)
    erow[2], ecol[5], ecol[6] = 1040, 100, -1100           # subnormal and overflowing scales
    want = _crt_reference(mods, coef, M, S, erow, ecol)
    Y = np.full((m, n + 3), 7.0)                            # ldy > n: the padding stays
    amax = _k.crt_reconstruct(mods, S, coefw, Mw, erow, ecol, Y[:, :n], isa=isa)
    np.testing.assert_array_equal(Y[:, :n].view(np.int64), want.view(np.int64))
    assert (Y[:, n:] == 7.0).all()
    assert amax == np.abs(want).max()


@pytest.mark.parametrize("isa", ISAS)
def test_crt_reconstruct_rounds_ties_and_sticky_bits(isa):
    """Integers chosen at the rounding boundary of a double (exact ties, ties with
    one far-away bit set, above and below 2^64, both signs, +-(M-1)/2): the
    residues S_l = N mod m_l reconstruct N exactly, and fl(N) must be the
    correctly rounded value."""
    from lrmpi._ext import kernels as _k
    from lrmpi.numerics import crt
    pl = crt.plan(16)
    mods, coefw, Mw = pl.constants
    M = int(Mw[0]) | (int(Mw[1]) << 64)
    Ns = [2**53 + 1, 2**53 + 3, 2**64 + 2**11, 2**64 + 2**11 + 1, 2**64 + 2**12 + 2**11,
          2**100 + 2**47, 2**100 + 2**47 + 1, 2**100 + 3 * 2**47, 2**123 + 2**70 + 1, M // 2, M // 2 - 1,
          2**63 - 1, 2**63, 2**64 - 1, 1, 0]
    Ns += [-x for x in Ns]
    S = np.array([[[N % int(m) for N in Ns]] for m in mods], np.int32)
    Y = np.empty((1, len(Ns)))
    _k.crt_reconstruct(mods, S, coefw, Mw, np.zeros(1, np.int32), np.zeros(len(Ns), np.int32),
                       Y, isa=isa)
    assert Y[0].tolist() == [float(N) for N in Ns]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("m, k", [(1, 1), (3, 5), (9, 64), (77, 130), (130, 77)])
def test_crt_residues_of_rows_and_columns_match_python_integers(isa, m, k, rng):
    """Residues of rows (A) and of columns (B, gathered) for every ISA: each is
    trunc(x 2^e) mod m_l in the symmetric range, computed with Python integers;
    l1 the exact sum of |trunc(x 2^e)|; rows scaled out of the normal range of
    2^e take the portable path."""
    from lrmpi._ext import kernels as _k
    from lrmpi.numerics import crt
    pl = crt.plan(15)
    mods = pl.constants[0]
    X = rng.standard_normal((m, k)) * np.exp(rng.uniform(-30, 30, (m, 1)))
    X[0] *= 1e-300                                  # 2^e above 2^1023: scalar path
    exps = crt.exponents(X, pl.T, 1)
    for transpose, data in ((0, X), (1, np.ascontiguousarray(X.T))):
        R = np.empty((15, m, k), np.int8)
        l1 = np.empty(m, np.int64)
        _k.crt_residues(data, transpose, exps, mods, R, l1, isa=isa)
        for i in range(m):
            ints = [math.trunc(math.ldexp(float(x), int(exps[i]))) for x in X[i]]
            assert l1[i] == min(sum(abs(v) for v in ints), 2**63 - 1)
            for l, mod in enumerate(mods):
                mod = int(mod)
                want = [((v + mod // 2) % mod) - mod // 2 for v in ints]
                assert R[l, i].tolist() == want, (transpose, i, l)
