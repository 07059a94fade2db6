"""The operators a graph (graph.py) may hold: their kinds, their groups, and the
per-sample shape each one writes, inferred from its inputs' shapes and its
parameters without computing anything (a zero sample through ResNet-50 at
224 x 224 costs seconds; this costs microseconds a node).

Everything else in nn/ imports the op lists from here: graph.py (validation),
ops.py (the float64 operations), onnx_import (the importer), the bounds. This
module imports nothing of nn/, so imports run one way.

Shapes are per sample (the batch axis is not part of them). `output_shape`
raises ShapeError with the reason when the inputs do not fit the node; callers
name the node.
"""
import math

import numpy as np

LINEAR_OPS = ("linear", "conv")
HEADS = ("softmax", "sigmoid")
# data movement: each output element is one input element (a permutation or a
# selection), so it is exact on digit planes and never increases a norm or an
# entry's error: the bounds pass errors through unchanged
MOVEMENT = ("flatten", "reshape", "transpose", "slice", "gather")
OPS = LINEAR_OPS + ("add", "concat", "affine", "relu", "leakyrelu", "prelu", "clip",
                    "maxpool", "avgpool", "globalavgpool", "pad") + MOVEMENT


class ShapeError(ValueError):
    """The inputs' shapes (or the node's parameters) do not fit the node."""


def conv_geometry(x_shape, W_shape, p):
    """(Ho, Wo) of a convolution of x (N, C, H, W) with W (O, C/g, kh, kw)."""
    _, _, H, Wd = x_shape
    _, _, kh, kw = W_shape
    (sh, sw), (dh, dw) = p.get("strides", (1, 1)), p.get("dilations", (1, 1))
    t, l, b, r = p.get("pads", (0, 0, 0, 0))
    Ho = (H + t + b - dh * (kh - 1) - 1) // sh + 1
    Wo = (Wd + l + r - dw * (kw - 1) - 1) // sw + 1
    return Ho, Wo


def pool_geometry(H, W, p):
    """(Ho, Wo) of a max or average pooling of an (H, W) image (ONNX rules)."""
    (kh, kw), (sh, sw) = p["kernel"], p.get("strides", p["kernel"])
    (dh, dw) = p.get("dilations", (1, 1))
    t, l, b, r = p.get("pads", (0, 0, 0, 0))
    rnd = math.ceil if p.get("ceil_mode", 0) else math.floor
    Ho = int(rnd((H + t + b - dh * (kh - 1) - 1) / sh)) + 1
    Wo = int(rnd((W + l + r - dw * (kw - 1) - 1) / sw)) + 1
    # ONNX: with ceil_mode the last window must start inside the (left-padded) input
    if p.get("ceil_mode", 0):
        Ho -= (Ho - 1) * sh >= H + t
        Wo -= (Wo - 1) * sw >= W + l
    return Ho, Wo


def maxpool_taps(p, Ho, Wo):
    """A max pooling's geometry for the C kernels: (kh, kw, sh, sw, dh, dw, pad top,
    pad left, Ho, Wo); a tap outside the image changes no maximum (skipped)."""
    (kh, kw) = p["kernel"]
    (sh, sw), (dh, dw) = p.get("strides", p["kernel"]), p.get("dilations", (1, 1))
    t, l = p.get("pads", (0, 0, 0, 0))[:2]
    return (kh, kw, sh, sw, dh, dw, t, l, Ho, Wo)


def slice_length(n, start, stop, step):
    """How many elements slice(start, stop, step) takes of an axis of n (Python's rule)."""
    return len(range(*slice(start, stop, step).indices(n)))


def output_shape(node, shapes):
    """The per-sample shape `node` writes from inputs of per-sample `shapes`."""
    rule = _RULES.get(node.op)
    if rule is None:
        raise ShapeError(f"unknown op {node.op!r}")
    out = tuple(int(d) for d in rule(node.params, [tuple(s) for s in shapes]))
    if any(d < 1 for d in out):
        raise ShapeError(f"the output would have shape {out}")
    return out


def _need(cond, why):
    if not cond:
        raise ShapeError(why)


def _same(p, s):
    return s[0]


def _linear(p, s):
    W, b = p["W"], p["b"]
    k = int(np.prod(s[0]))
    _need(W.ndim == 2 and W.shape[1] == k, f"weights {W.shape} for inputs of {k} values")
    _need(np.shape(b) == (W.shape[0],), f"bias of shape {np.shape(b)} for {W.shape[0]} outputs")
    return (W.shape[0],)


def _conv(p, s):
    W, b, g = p["W"], p["b"], int(p.get("group", 1))
    _need(len(s[0]) == 3, f"a 2-D convolution needs (C, H, W) inputs, got {s[0]}")
    _need(W.ndim == 4 and g >= 1 and W.shape[0] % g == 0 and W.shape[1] * g == s[0][0],
          f"weights {W.shape} (group {g}) on {s[0][0]} channels")
    _need(np.shape(b) == (W.shape[0],), f"bias of shape {np.shape(b)} for {W.shape[0]} channels")
    Ho, Wo = conv_geometry((1,) + s[0], W.shape, p)
    return (W.shape[0], Ho, Wo)


def _add(p, s):
    _need(all(x == s[0] for x in s), f"operands of different shapes {s} (no broadcasting)")
    return s[0]


def _concat(p, s):
    _need(all(len(x) == len(s[0]) and x[1:] == s[0][1:] for x in s),
          f"operands {s} differ outside the channel axis")
    return (sum(x[0] for x in s),) + s[0][1:]


def _broadcast_into(c, shape, what):
    """A constant must broadcast into the samples (never make them larger)."""
    try:
        got = np.broadcast_shapes((1,) + shape, np.shape(c))
    except ValueError:
        got = None
    _need(got == (1,) + shape, f"{what} of shape {np.shape(c)} does not broadcast over "
                               f"samples of shape {shape}")


def _affine(p, s):
    _need(p.get("fn") in ("add", "sub", "rsub", "mul", "div"), f"affine fn {p.get('fn')!r}")
    _broadcast_into(p["c"], s[0], "the constant")
    return s[0]


def _prelu(p, s):
    _broadcast_into(p["slope"], s[0], "the slope")
    return s[0]


def _pool(p, s):
    _need(len(s[0]) == 3, f"2-D pooling needs (C, H, W) inputs, got {s[0]}")
    return (s[0][0],) + pool_geometry(s[0][1], s[0][2], p)


def _global(p, s):
    _need(len(s[0]) == 3, f"global pooling needs (C, H, W) inputs, got {s[0]}")
    return (s[0][0], 1, 1)


def _pad(p, s):
    pads = [tuple(v) for v in p["pads"]]
    _need(len(pads) == len(s[0]) and all(len(v) == 2 and min(v) >= 0 for v in pads),
          f"pads {pads} for samples of shape {s[0]}")
    return tuple(d + a + b for d, (a, b) in zip(s[0], pads))


def _flatten(p, s):
    return (int(np.prod(s[0])),)


def _reshape(p, s):
    shape = tuple(int(d) for d in p["shape"])
    _need(int(np.prod(shape)) == int(np.prod(s[0])), f"{s[0]} cannot become {shape}")
    return shape


def _transpose(p, s):
    perm = tuple(int(a) for a in p["perm"])
    _need(sorted(perm) == list(range(len(s[0]))), f"perm {perm} for samples of shape {s[0]}")
    return tuple(s[0][a] for a in perm)


def _slice(p, s):
    out = list(s[0])
    for ax, start, stop, step in zip(p["axes"], p["starts"], p["stops"], p["steps"]):
        _need(0 <= ax < len(out) and step != 0, f"slice of axis {ax} step {step} of {s[0]}")
        out[ax] = slice_length(s[0][ax], start, stop, step)
    return tuple(out)


def _gather(p, s):
    ax, idx = int(p["axis"]), np.asarray(p["indices"], np.int64)
    _need(0 <= ax < len(s[0]), f"axis {ax} of samples of shape {s[0]}")
    _need(idx.size == int(np.prod(p["index_shape"])), "indices and index_shape differ")
    _need(idx.size == 0 or (idx.min() >= -s[0][ax] and idx.max() < s[0][ax]),
          f"indices outside 0..{s[0][ax] - 1}")
    return s[0][:ax] + tuple(p["index_shape"]) + s[0][ax + 1:]


def gather_repeats(p, shape):
    """How often the most repeated element of a gather's axis is taken (1: a pure
    selection; the bounds multiply errors by its square root)."""
    n = shape[int(p["axis"])]
    idx = np.asarray(p["indices"], np.int64) % max(n, 1)
    return int(np.bincount(idx).max()) if idx.size else 1


_RULES = {"linear": _linear, "conv": _conv, "add": _add, "concat": _concat,
          "affine": _affine, "relu": _same, "leakyrelu": _same, "clip": _same,
          "prelu": _prelu, "maxpool": _pool, "avgpool": _pool, "globalavgpool": _global,
          "pad": _pad, "flatten": _flatten, "reshape": _reshape, "transpose": _transpose,
          "slice": _slice, "gather": _gather}
