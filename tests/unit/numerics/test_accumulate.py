"""The exact accumulator's shortcut for a first resolution equals its full path."""
import numpy as np
import pytest

from lrmpi.numerics.accumulate import ExactAccumulator, level_shift, scaling_is_exact


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
@pytest.mark.parametrize("level", [1, 2, 4])
def test_decode_sum_fast_path_equals_add_then_decode(rng, dtype, level):
    """Exponents of ordinary data: the two-multiplication path."""
    m, n = 7, 9
    top = 2**31 - 1 if dtype == np.int32 else 2**52
    S = rng.integers(-top, top, (m, n)).astype(dtype)
    S[0, :3] = [-top, top, 0]
    erow = rng.integers(-900, 900, m).astype(np.int32)
    ecol = rng.integers(-40, 40, n).astype(np.int32)
    erow[:2], ecol[:2] = [-940, 900], [-40, 40]
    assert scaling_is_exact(dtype, erow, ecol, level_shift(7, 4, level) - 56)
    # sums beyond real data's (|S| up to 2^52): the limbs are the reference
    acc = ExactAccumulator(m, n, 7, 4, k=4096, compact=False)
    acc.add(S.astype(np.int64), level)
    want = acc.decode(erow, ecol)
    got = ExactAccumulator(m, n, 7, 4, k=4096).decode_sum(S, level, erow, ecol, out=np.full((m, n), np.nan))
    assert (want.view(np.int64) == got.view(np.int64)).all()


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
@pytest.mark.parametrize("level", [1, 2, 4])
def test_decode_sum_equals_add_then_decode_bit_for_bit(rng, dtype, level):
    m, n, bits, planes = 7, 9, 7, 4
    top = 2**31 - 1 if dtype == np.int32 else 2**40
    S = rng.integers(-top, top, (m, n)).astype(dtype)
    S[0, :3] = [-top, top, 0]
    # exponents that land results in the normal, subnormal, underflow and overflow
    # ranges (2^-1074 .. 2^1024 and beyond)
    erow = rng.integers(-600, 600, m).astype(np.int32)
    erow[:3] = [-1020, 1020, 0]
    ecol = rng.integers(-600, 600, n).astype(np.int32)
    ecol[:3] = [-60, 10, 0]
    assert not scaling_is_exact(dtype, erow, ecol, level_shift(bits, planes, level) - 56)
    acc = ExactAccumulator(m, n, bits, planes, k=4096, compact=False)
    acc.add(S.astype(np.int64), level)
    want = acc.decode(erow, ecol)
    got = ExactAccumulator(m, n, bits, planes, k=4096).decode_sum(S, level, erow, ecol)
    assert (np.isinf(want) == np.isinf(got)).all()
    assert (want.view(np.int64) == got.view(np.int64)).all()
    assert (want == 0).any() and np.isinf(want).any() and (np.abs(want) < 2.3e-308).any()
