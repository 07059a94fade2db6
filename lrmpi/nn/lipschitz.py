"""Lipschitz constants in l2 of the graph's non-linear nodes, for the bounds.

ReLU and clip: 1; leaky ReLU / PReLU: max(1, |slope|); an affine map: max |c| (mul),
max |1/c| (div), 1 (add, sub, rsub); max pooling: sqrt(overlap) (an input is in at
most `overlap` windows, each output the max of its window); average pooling:
sqrt(overlap / smallest window); global average pooling: 1/sqrt(HW); data
movement: 1, but sqrt(repeats) for a gather that takes an entry `repeats` times
(that entry's error is in the output that often). (docs/design.md, "Inference")
"""
import math

import numpy as np

from lrmpi.nn import ops
from lrmpi.nn.operators import gather_repeats
from lrmpi.nn.verified import UP, gamma, up


def lipschitz(node, shape):
    """(L, K) of a node whose input has the per-batch `shape` (N, ...): its Lipschitz
    constant in l2, and how many terms its sums add (pools; else 0)."""
    op, p = node.op, node.params
    if op == "maxpool":
        return math.sqrt(ops.window_overlap(p)) * (1 + 2.0**-40), 0
    if op == "gather":
        return up(math.sqrt(gather_repeats(p, shape[1:]))), 0
    if op == "leakyrelu":
        return max(1.0, abs(float(p["alpha"]))), 0
    if op == "prelu":
        return max(1.0, float(np.max(np.abs(p["slope"])))), 0
    if op == "affine":
        c = np.abs(np.asarray(p["c"], np.float64))
        if p["fn"] in ("add", "sub", "rsub") or not c.size:
            return 1.0, 0
        if p["fn"] == "mul":
            return float(c.max()), 0
        return float((1.0 / c).max()) * (1 + 2.0**-50), 0
    if op == "globalavgpool":
        K = shape[2] * shape[3]
        return up(1.0 / math.sqrt(K)), K
    if op == "avgpool":
        K = p["kernel"][0] * p["kernel"][1]
        return up(math.sqrt(ops.window_overlap(p) / smallest_window(shape, p))), K
    return 1.0, 0


def smallest_window(shape, p):
    """The smallest divisor of an average-pooling window: K with count_include_pad,
    else the fewest real (not padded) elements in any window."""
    K = p["kernel"][0] * p["kernel"][1]
    if p.get("count_include_pad", 0):
        return K
    ones = np.ones((1, 1) + tuple(shape[2:]))
    counts = ops.pool(ones, {**p, "count_include_pad": 1}, "avg") * K
    return max(1.0, float(counts.min()))


def offset_norm(node, shape):
    """||c|| broadcast over one sample of an x of `shape`, for an affine add/sub/rsub
    (else 0)."""
    p = node.params
    if node.op != "affine" or p["fn"] not in ("add", "sub", "rsub"):
        return 0.0
    c = np.asarray(p["c"], np.float64)
    c = np.broadcast_to(c, np.broadcast_shapes(c.shape, (1,) + tuple(shape[1:])))
    return math.sqrt(float(np.sum(c * c)) * (1 + 2 * gamma(c.size + 2))) * UP
