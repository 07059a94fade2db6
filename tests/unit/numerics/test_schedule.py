"""Orderings of pair products into resolutions."""
import pytest

from lrmpi.numerics.schedule import ORDERS, resolutions


@pytest.mark.parametrize("s", range(1, 9))
@pytest.mark.parametrize("order, count", [("antidiagonal", lambda s: 2 * s - 1),
                                          ("pairwise", lambda s: s * s),
                                          ("lshape", lambda s: s)])
def test_every_pair_exactly_once_in_significance_order(s, order, count):
    res = resolutions(order, s)
    assert len(res) == count(s)
    flat = [pq for r in res for pq in r]
    assert sorted(flat) == [(p, q) for p in range(1, s + 1) for q in range(1, s + 1)]
    if order != "lshape":  # lshape mixes levels inside a resolution by design
        levels = [p + q for p, q in flat]
        assert levels == sorted(levels)


def test_antidiagonal_and_lshape_shapes():
    assert resolutions("antidiagonal", 3) == (((1, 1),), ((1, 2), (2, 1)),
                                              ((1, 3), (2, 2), (3, 1)), ((2, 3), (3, 2)),
                                              ((3, 3),))
    assert resolutions("lshape", 3)[2] == ((1, 3), (3, 1), (2, 3), (3, 2), (3, 3))


@pytest.mark.parametrize("order", ORDERS)
def test_cutoff_keeps_only_high_levels(order):
    res = resolutions(order, 5, cutoff=3)
    assert all(p + q - 1 <= 3 for r in res for p, q in r)
    assert sum(len(r) for r in res) == 6
