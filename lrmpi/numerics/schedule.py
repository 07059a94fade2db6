"""Orderings of pair products into resolutions. Pure; no kernels.

A pair (p, q) is the product of plane p of A with plane q of B (1-based,
most significant first); its weight is 2^-(bits (p+q)), so its *level* p+q-1
is its significance. With s = 3 planes:

    antidiagonal  r1: (1,1)   r2: (1,2) (2,1)   r3: (1,3) (2,2) (3,1)  ...  2s-1 resolutions
    pairwise      r1: (1,1)   r2: (1,2)   r3: (2,1)   r4: (1,3) ...         s^2 resolutions
    lshape        r1: (1,1)   r2: (1,2) (2,1) (2,2)   r3: (1,3) (2,3) (3,1) (3,2) (3,3)
                  resolution r = A_{<=r} B_{<=r}                              s resolutions

A cut-off level c keeps only pairs with p+q-1 <= c (the Ozaki triangle) and
drops resolutions left empty; the skipped pairs stay in the error bound.
"""
from lrmpi.errors import ConfigError
from lrmpi.numerics import validate

ORDERS = ("antidiagonal", "pairwise", "lshape")


def levels(pairs):
    """The distinct levels p+q-1 among `pairs`, ascending: the level sums one
    resolution yields, in the order they travel and are stored."""
    return sorted({p + q - 1 for p, q in pairs})


def n_levels(pairs):
    return len(levels(pairs))


def _by_significance(s):
    return sorted(((p, q) for p in range(1, s + 1) for q in range(1, s + 1)),
                  key=lambda pq: (pq[0] + pq[1], pq[0]))


def resolutions(order, planes, cutoff=None):
    """Tuple of resolutions, each a tuple of (p, q) pairs, in order."""
    s = validate.planes(planes)
    cutoff = validate.cutoff(cutoff)
    if order == "antidiagonal":
        res = [tuple((p, lvl + 1 - p) for p in range(max(1, lvl + 1 - s), min(s, lvl) + 1))
               for lvl in range(1, 2 * s)]
    elif order == "pairwise":
        res = [(pq,) for pq in _by_significance(s)]
    elif order == "lshape":
        res = [tuple((r, q) for q in range(1, r)) + tuple((p, r) for p in range(1, r + 1))
               for r in range(1, s + 1)]
        res = [tuple(sorted(r, key=lambda pq: (pq[0] + pq[1], pq[0]))) for r in res]
    else:
        raise ConfigError(f"order must be one of {', '.join(ORDERS)}; got {order!r}")
    if cutoff is not None:
        res = [tuple(pq for pq in r if pq[0] + pq[1] - 1 <= cutoff) for r in res]
        res = [r for r in res if r]
    return tuple(res)
