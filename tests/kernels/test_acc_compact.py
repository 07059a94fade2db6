"""The compact exact state (F = fl(N), E = N - F) against exact Python integers and
the limbs' decode, for every ISA: every update exact, every decode correctly
rounded (normal, subnormal, overflowing results, ties), tiles and column tails."""
from fractions import Fraction

import numpy as np
import pytest

from lrmpi.numerics import kernels
from lrmpi.numerics.accumulate import ExactAccumulator, compact_fits

ISAS = kernels.available_isas()
LIMIT = 2**84  # acc_update's precondition: |N| below it


def _round(v, e):
    """Correctly rounded v * 2^e; +-inf past the largest double."""
    try:
        return float(Fraction(v) * Fraction(2) ** e)
    except OverflowError:
        return float("inf") if v > 0 else float("-inf")


def _state(F, E):
    return F.astype(object).astype(int) + E.astype(object) if F.size else F.astype(object)


def _exact(F, E):
    return np.array([[int(f) + int(e) for f, e in zip(fr, er)] for fr, er in zip(F, E)],
                    dtype=object)


def _updates(rng, m, n, count):
    """(S, shift) updates whose partial sums stay below 2^84, with cancellations."""
    N = np.zeros((m, n), dtype=object)
    out = []
    for t in range(count):
        shift = int(rng.integers(0, 50))
        s32 = t % 2 == 0
        top = min(2**31 - 1 if s32 else 2**52, LIMIT // (2 * count) >> shift)
        S = rng.integers(-top, top, (m, n)).astype(np.int32 if s32 else np.int64)
        if t == count - 1:  # cancel most of N: a small sum left beside a large E
            want = -(N // 2**shift)
            ok = np.vectorize(lambda v: abs(v) < top)(want)
            S = np.where(ok, want.astype(np.float64), S).astype(S.dtype)
        N = N + S.astype(object) * 2**shift
        assert max(abs(int(v)) for v in N.ravel()) < LIMIT
        out.append((S, shift, N.copy()))
    return out


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("n", [1, 7, 8, 9, 53])
def test_every_update_is_exact_and_decodes_correctly_rounded(isa, n, rng):
    m = 3
    F, E = np.zeros((m, n)), np.zeros((m, n), np.int32)
    erow = np.array([0, -1050, 950], np.int32)
    ecol = rng.integers(-40, 40, n).astype(np.int32)
    for S, shift, N in _updates(rng, m, n, 6):
        for base in (0, -120, -1000):
            Y = np.full((m, n), np.nan)
            amax = kernels.acc_update(F.copy(), E.copy(), S, shift, erow, ecol, base, out=Y,
                                      isa=isa)
            want = np.array([[_round(int(N[i, j]), int(erow[i] + ecol[j]) + base)
                              for j in range(n)] for i in range(m)])
            np.testing.assert_array_equal(Y, want, err_msg=f"base {base}")
            assert amax == np.abs(want).max()
        kernels.acc_update(F, E, S, shift, isa=isa)
        assert (_exact(F, E) == N).all()  # the state is N exactly
        assert (F == np.vectorize(float)(N).astype(np.float64)).all()  # F = fl(N)


@pytest.mark.parametrize("isa", ISAS)
def test_ties_go_to_even_at_every_scale(isa):
    vals = [2**53 + 1, 2**53 + 3, -(2**53 + 1), 2**60 + 2**7, 2**60 + 3 * 2**7,
            2**80 + 2**27, 2**80 + 2**27 + 1, -(2**83) + 2**30, 0, 1, -1]
    n = len(vals)
    F, E = np.zeros((1, n)), np.zeros((1, n), np.int32)
    # N arrives in two parts: the high bits, then the low ones
    hi = np.array([[(v >> 31) for v in vals]], np.int64)
    lo = np.array([[v - ((v >> 31) << 31) for v in vals]], np.int64)
    kernels.acc_update(F, E, hi, 31, isa=isa)
    for base in (0, -1074 - 10, -1074 - 60, -1100, 1000, 960):
        Y = np.empty((1, n))
        kernels.acc_update(F.copy(), E.copy(), lo, 0, np.zeros(1, np.int32),
                           np.zeros(n, np.int32), base, out=Y, isa=isa)
        np.testing.assert_array_equal(Y[0], [_round(v, base) for v in vals],
                                      err_msg=f"base {base}")


@pytest.mark.parametrize("isa", [i for i in ISAS if i != "ref"])
def test_vector_variants_equal_the_reference_bit_for_bit(isa, rng):
    m, n = 5, 37
    ups = _updates(rng, m, n, 5)
    erow = rng.integers(-1100, 1000, m).astype(np.int32)
    ecol = rng.integers(-80, 80, n).astype(np.int32)
    states = {i: (np.zeros((m, n)), np.zeros((m, n), np.int32)) for i in ("ref", isa)}
    for S, shift, _ in ups:
        for base in (-20, -200):
            out = {}
            for i, (F, E) in states.items():
                Y = np.empty((m, n))
                amax = kernels.acc_update(F.copy(), E.copy(), S, shift, erow, ecol, base,
                                          out=Y, isa=i)
                out[i] = (Y.view(np.int64), amax)
            np.testing.assert_array_equal(out[isa][0], out["ref"][0])
            assert out[isa][1] == out["ref"][1]
        for i, (F, E) in states.items():
            kernels.acc_update(F, E, S, shift, isa=i)
    np.testing.assert_array_equal(states[isa][0], states["ref"][0])
    np.testing.assert_array_equal(states[isa][1], states["ref"][1])


@pytest.mark.parametrize("isa", ISAS)
def test_tiles_at_offsets_and_decode_only(isa, rng):
    F, E = np.zeros((6, 10)), np.zeros((6, 10), np.int32)
    S = rng.integers(-2**31, 2**31 - 1, (2, 3)).astype(np.int32)
    kernels.acc_update(F, E, S, 40, row0=3, col0=5, isa=isa)
    assert (F[:3] == 0).all() and (F[:, :5] == 0).all() and (F[:, 8:] == 0).all()
    assert (_exact(F[3:5, 5:8], E[3:5, 5:8]) == S.astype(object) * 2**40).all()
    C = np.zeros((6, 10))
    amax = kernels.acc_update(F, E, None, 0, np.zeros(2, np.int32), np.zeros(3, np.int32), -40,
                              out=C[3:5, 5:8], row0=3, col0=5, isa=isa)
    np.testing.assert_array_equal(C[3:5, 5:8], S)
    assert amax == np.abs(S).max() and C.sum() == S.sum()
    with pytest.raises(ValueError, match="outside"):
        kernels.acc_update(F, E, S, 0, row0=5, col0=0, isa=isa)


@pytest.mark.parametrize("planes, k", [(4, 4096), (4, 2**20), (5, 9000)])
def test_the_accumulator_is_compact_where_that_is_exact_and_agrees_with_limbs(planes, k, rng):
    """Level sums of real digits (|S| <= g k 127^2) at every level of a schedule:
    the compact and the limbs accumulators decode the same bits, tile by tile too."""
    assert compact_fits(7, planes, k) and not compact_fits(7, 6, 2**20)
    m, n = 9, 12
    acc, ref = ExactAccumulator(m, n, 7, planes, k), ExactAccumulator(m, n, 7, planes, k,
                                                                      compact=False)
    assert acc.compact and not ref.compact
    erow = rng.integers(-1100, 900, m).astype(np.int32)
    ecol = rng.integers(-30, 30, n).astype(np.int32)
    for level in range(1, 2 * planes):
        pairs = min(level, 2 * planes - level)  # pairs (p, q) with p + q - 1 = level
        top = pairs * k * 127**2
        S = rng.integers(-top, top, (m, n))
        S[0, :2] = -top, top
        sums = [(level, S[:, :7].copy()), (level, S[:, 7:].copy())]
        got = np.empty((m, n))
        a1 = acc.add_decode(sums[:1], erow, ecol[:7], got[:, :7])
        a2 = acc.add_decode(sums[1:], erow, ecol[7:], got[:, 7:], col0=7)
        ref.add(S, level)
        want, amax = ref.decode(erow, ecol, with_max=True)
        assert (got.view(np.int64) == want.view(np.int64)).all()
        assert max(a1, a2) == amax
        np.testing.assert_array_equal(acc.decode(erow, ecol), want)
