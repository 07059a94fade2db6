"""Small graphs with every operator, and the helpers the bound tests share."""
from fractions import Fraction

import numpy as np

from lrmpi.nn import certify
from lrmpi.nn import graph as G
from lrmpi.nn.difference import DiffTracker
from lrmpi.nn.engine import PreparedModel
from lrmpi.nn.quantized import linear_at

MODES = (0, 1, 2, 3, "f64")


def _n(op, ins, out, **params):
    return G.Node(op, list(ins), out, params)


def graphs(rng):
    """(name, graph, X): every operator, with varied per-sample scales."""
    d = 10
    mlp = G.sequential([
        ("linear", {"W": rng.standard_normal((12, d)), "b": rng.standard_normal(12)}),
        ("relu", {}),
        ("linear", {"W": rng.standard_normal((12, 12)) / 3, "b": rng.standard_normal(12)}),
        ("leakyrelu", {"alpha": 0.1}),
        ("affine", {"fn": "sub", "c": rng.standard_normal(12)}),
        ("linear", {"W": rng.standard_normal((4, 12)), "b": rng.standard_normal(4)})],
        (d,), head="softmax")
    conv = G.Graph("x", (2, 8, 8), [
        _n("conv", ["x"], "c1", W=rng.standard_normal((4, 2, 3, 3)), b=rng.standard_normal(4),
           pads=(1, 0, 2, 1), strides=(1, 2)),
        _n("prelu", ["c1"], "a1", slope=rng.uniform(-0.5, 1.5, (4, 1, 1))),
        _n("maxpool", ["a1"], "m1", kernel=(2, 2), strides=(1, 1), pads=(1, 1, 0, 0),
           ceil_mode=1),
        _n("conv", ["m1"], "c2", W=rng.standard_normal((4, 2, 3, 2)) / 2,
           b=rng.standard_normal(4), dilations=(2, 1), group=2, pads=(2, 1, 2, 1)),
        _n("clip", ["c2"], "k2", lo=-1.0, hi=2.5),
        _n("avgpool", ["k2"], "p2", kernel=(3, 2), strides=(2, 2), pads=(1, 1, 1, 1),
           count_include_pad=0),
        _n("flatten", ["p2"], "f"),
        _n("linear", ["f"], "y", W=None, b=rng.standard_normal(3))], "y", "softmax")
    conv.nodes[-1].params["W"] = rng.standard_normal((3, 60))
    conv.validate()
    res = G.Graph("x", (3, 6, 6), [
        _n("conv", ["x"], "a", W=rng.standard_normal((3, 3, 3, 3)) / 3, b=rng.standard_normal(3),
           pads=(1, 1, 1, 1)),
        _n("relu", ["a"], "ra"),
        _n("add", ["ra", "x"], "s"),
        _n("affine", ["s"], "t", fn="mul", c=np.array([[[0.5]], [[2.0]], [[-1.5]]])),
        _n("conv", ["t"], "dw", W=rng.standard_normal((3, 1, 3, 3)), b=rng.standard_normal(3),
           pads=(1, 1, 1, 1), group=3),
        _n("clip", ["dw"], "r6", lo=0.0, hi=6.0),
        _n("affine", ["s"], "u", fn="div", c=np.array(3.0)),
        _n("concat", ["r6", "u"], "cat"),
        _n("pad", ["cat"], "pd", pads=((0, 0), (1, 0), (0, 2)), value=0.25),
        _n("conv", ["pd"], "pw", W=rng.standard_normal((4, 6, 1, 1)), b=rng.standard_normal(4)),
        _n("affine", ["pw"], "q", fn="rsub", c=np.array(1.0)),
        _n("leakyrelu", ["q"], "lq", alpha=1.5),
        _n("globalavgpool", ["lq"], "gp"),
        _n("reshape", ["gp"], "rs", shape=(4,)),
        _n("affine", ["rs"], "ad", fn="add", c=rng.standard_normal(4)),
        _n("linear", ["ad"], "y", W=rng.standard_normal((5, 4)), b=rng.standard_normal(5))],
        "y", "softmax").validate()
    scale = lambda n, k: np.exp(rng.uniform(-2, 2, (n,) + (1,) * k))  # noqa: E731
    return [("mlp", mlp, rng.standard_normal((6, d)) * scale(6, 1)),
            ("conv", conv, rng.standard_normal((4, 2, 8, 8)) * scale(4, 3)),
            ("residual", res, rng.standard_normal((4, 3, 6, 6)) * scale(4, 3))]


def prepared(graph, planes=4):
    model = PreparedModel(graph, 7, planes)
    model.norms.norms.prepare(range(1, 8), "tight")
    return model


def bounded(model, X, r, mode, level="tight"):
    """(logits, radius) of resolution r with every linear node's estimate in `mode`."""
    g, b = model.graph, model.norms
    plan = {n.output: mode for n in g.linear}
    tr = DiffTracker(g, b.norms, lambda n: b.estimates[n.output], r, model.bits, len(X), plan,
                     level)
    return certify.forward_bounded(
        g, X, lambda node, h: linear_at(node, h, model.weights[node.output], r, model.bits), tr)


def violations(logits, reference, radius):
    """Entries where |logits - reference| > radius, exactly (Fractions): a float
    subtraction could round a violation away."""
    bad = []
    for idx in np.ndindex(logits.shape):
        ref = reference[idx]
        ref = ref if isinstance(ref, Fraction) else Fraction(float(ref))
        if abs(Fraction(float(logits[idx])) - ref) > Fraction(float(radius[idx])):
            bad.append(idx)
    return bad


# --- the mutation suite: cases in which one term of the bound is what covers ---

def _one(W, b, op_after=None, **params):
    """x -> linear(W, b) [-> op_after] as a graph."""
    nodes = [_n("linear", ["x"], "z", W=np.asarray(W, np.float64), b=np.asarray(b, np.float64))]
    out = "z"
    if op_after:
        nodes.append(_n(op_after, ["z"], "y", **params))
        out = "y"
    return G.Graph("x", (np.asarray(W).shape[1],), nodes, out).validate()


def _bits(rng, shape, bits):
    """Random values with exactly `bits` significant bits below 1 (in [-1, 1))."""
    return rng.integers(-2**bits, 2**bits, shape) / 2.0**bits


def mutation_cases(rng):
    """(label, graph, X, r, mode, reference "f64" | "exact", baseline DROPPED, level):
    the bound minus `baseline` is valid for the case, and minus one more term (the
    one the case is built for) it must not be."""
    cases = []
    x53 = rng.uniform(0.5, 1, (20, 1))                      # 53-bit values
    cases.append(("input truncation", _one([[1.0]], [0.0]), x53, 2, 0, "f64", ()))
    cases.append(("weight truncation", _one([[1 + 2**-20 + 2**-37]], [0.0]),
                  np.full((3, 1), 0.75), 2, 0, "f64", ()))
    cases.append(("estimate input", _one([[1.0]], [0.0]), x53, 2, 1, "f64", ()))
    cases.append(("estimate weights", _one([[1 + 2**-10]], [0.0]),
                  np.array([[1 + 2**-20]]), 2, 1, "f64", ()))
    cases.append(("estimate residual weights", _one([[1 + 2**-10 + 2**-17]], [0.0]),
                  np.array([[1.0]]), 1, 1, "f64", ()))
    cases.append(("estimate h planes", _one([[1 + 2**-20]], [0.0]),
                  np.array([[1 + 2**-10]]), 2, 1, "f64", ()))
    # 28-bit data: exact in 4 planes; the 56-bit products round (cancellation)
    W28, X28 = _bits(rng, (3, 64), 27), _bits(rng, (40, 64), 27)
    for mode in (0, 2):
        cases.append(("float rounding", _one(W28, [0.0, 0.0, 0.0]), X28, 4, mode, "f64", ()))
        cases.append(("r rounding", _one(W28, [0.0, 0.0, 0.0]), X28, 4, mode, "exact",
                      ("float_rounding", "shadow")))
    cases.append(("shadow", _one(W28, [0.0, 0.0, 0.0]), X28, 4, "f64", "exact",
                  ("float_rounding",)))
    # an exact r-network (7-bit weights, the input's first plane) and an estimate
    # exact to the rounding of its product: the 56-bit values of that product and
    # of x_r - D (the float model's estimate at the ReLU) round
    W7 = rng.integers(-127, 128, (2, 256)) / 128.0
    X49 = _bits(rng, (10, 256), 49)
    X49[:, 0] = 1 - 2.0**-49  # each sample's exponent: planes from 2^-7
    cases.append(("estimate rounding", _one(W7, [0.0, 0.0], "relu"), X49, 3, 4, "exact",
                  ("float_rounding", "shadow", "r_rounding")))
    # pooling the exact input: only the pooling's own rounding differs from exact
    pool = G.Graph("x", (2, 4, 4), [
        _n("avgpool", ["x"], "p", kernel=(3, 3), strides=(1, 1)), _n("flatten", ["p"], "y"),
        _n("flatten", ["x"], "fx"),
        _n("linear", ["fx"], "unused", W=np.ones((1, 32)), b=np.zeros(1))], "y").validate()
    cases.append(("op rounding", pool, rng.standard_normal((20, 2, 4, 4)) * 1e3, 2, 0, "exact",
                  ("float_rounding", "shadow")))
    cases = [c + ("tight",) for c in cases]
    # the cheap bound (no tensor read: |h| < 2^e, |dh| < 2^(e - 7r)): weights whose
    # residual is near its plane's step times inputs near 2^e exact in r planes,
    # and roundings at r = 10, where the input's step no longer covers them
    cases.append(("weight truncation, cheap", _one([[0.5 + 0.99 * 2**-14]], [0.0]),
                  np.array([[1 - 2.0**-14]]), 2, 0, "f64", (), "cheap"))
    cases.append(("input truncation, cheap", _one([[1.0]], [0.0]), x53, 2, 0, "f64", (),
                  "cheap"))
    cases.append(("float rounding, cheap", _one(W28, [0.0, 0.0, 0.0]), X28, 10, 0, "f64", (),
                  "cheap"))
    cases.append(("r rounding, cheap", _one(W28, [0.0, 0.0, 0.0]), X28, 10, 0, "exact",
                  ("float_rounding", "shadow"), "cheap"))
    cases.append(("op rounding, cheap", pool, rng.standard_normal((20, 2, 4, 4)) * 1e3, 2, 0,
                  "exact", ("float_rounding", "shadow"), "cheap"))
    return cases
