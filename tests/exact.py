"""Exact rational references and the data kinds the invariants are tested on."""
from fractions import Fraction

import numpy as np


def exact_matmul(A, B):
    """A @ B with exact rational entries (object array of Fraction)."""
    Af = [[Fraction(float(x)) for x in row] for row in np.asarray(A, dtype=np.float64)]
    Bf = [[Fraction(float(x)) for x in row] for row in np.asarray(B, dtype=np.float64).T]
    out = np.empty((len(Af), len(Bf)), dtype=object)
    for i, a in enumerate(Af):
        for j, b in enumerate(Bf):
            out[i, j] = sum((x * y for x, y in zip(a, b)), Fraction(0))
    return out


def rounded(F):
    """Correctly rounded float64 of an object array of Fractions."""
    return np.vectorize(float, otypes=[np.float64])(F)


def max_abs_error(C, F):
    """max |C - F| exactly, as a Fraction (C float array, F exact array)."""
    return max(abs(Fraction(float(c)) - f) for c, f in zip(C.ravel(), F.ravel()))


def datasets(rng, m=9, k=13, n=7):
    """Named (A, B) pairs covering the data kinds the invariants must hold on."""
    wide_a = rng.standard_normal((m, k)) * 10.0 ** rng.uniform(-30, 30, (m, 1))
    wide_b = rng.standard_normal((k, n)) * 10.0 ** rng.uniform(-30, 30, (1, n))
    span_a = rng.standard_normal((m, k)) * 10.0 ** rng.uniform(-30, 30, (m, k))
    zero_a = rng.standard_normal((m, k))
    zero_a[2] = 0.0
    zero_b = rng.standard_normal((k, n))
    zero_b[:, 1] = 0.0
    return {
        "normal": (rng.standard_normal((m, k)), rng.standard_normal((k, n))),
        "uniform": (rng.uniform(-1, 1, (m, k)), rng.uniform(0, 5, (k, n))),
        "integer": (rng.integers(-1000, 1000, (m, k)), rng.integers(-7, 8, (k, n))),
        "float32": (rng.standard_normal((m, k)).astype(np.float32),
                    rng.standard_normal((k, n)).astype(np.float32)),
        "zero_rows_cols": (zero_a, zero_b),
        "subnormal": (rng.standard_normal((m, k)) * 1e-310, rng.standard_normal((k, n))),
        "wide_rows_cols": (wide_a, wide_b),
        "span_1e-30_1e30": (span_a, rng.standard_normal((k, n))),
    }


# --- the resolution-r network with Python integers (inference) ---

def _integers(D, bits, r):
    """The integers sum_p D[p] 2^(bits (r - p)) of the first r digit planes, as an
    object array of Python ints."""
    out = np.zeros(D.shape[1:], dtype=object)
    for p in range(r):
        out = out + D[p].astype(object) * (1 << (bits * (r - 1 - p)))
    return out


def exact_linear(node, h, enc, r, bits):
    """z of a linear/conv node at resolution r, by exact integer arithmetic: the
    per-sample planes of h and the per-unit planes of W truncated to r planes,
    their exact product rounded once to float64, then the bias added in float64."""
    from lrmpi.nn import ops
    from lrmpi.numerics import planes
    flat = np.ascontiguousarray(h.reshape(h.shape[0], -1))
    amax = np.abs(flat).max(axis=1)
    e = np.frexp(amax)[1].astype(np.int32)
    Hd = planes.encode(flat, bits, r, exps=e).digits
    Hq = _integers(Hd, bits, r)                       # (N, d) ints
    Wq = _integers(enc.digits[:r], bits, r)           # (O, k) ints
    p = node.params
    if node.op == "linear":
        erow, P = e, np.dot(Hq, Wq.T)
    else:
        O, Cg, kh, kw = p["W"].shape
        g = int(p.get("group", 1))
        x = Hq.reshape(h.shape)
        outs = []
        for gi in range(g):
            cols, (N, Ho, Wo) = ops.im2col(x[:, gi * Cg:(gi + 1) * Cg], kh, kw, p, fill=0)
            outs.append(np.dot(cols, Wq[gi * (O // g):(gi + 1) * (O // g)].T))
        P = np.concatenate(outs, axis=1) if g > 1 else outs[0]
        erow = np.repeat(e, Ho * Wo)
    scale = [[Fraction(2) ** (int(a) + int(b) - 2 * bits * r) for b in enc.exps]
             for a in erow]
    C = np.array([[float(Fraction(int(P[i, j])) * scale[i][j]) for j in range(P.shape[1])]
                  for i in range(P.shape[0])])
    if node.op == "linear":
        return C + p["b"]
    N = h.shape[0]
    O = p["W"].shape[0]
    C = C.reshape(N, Ho, Wo, O).transpose(0, 3, 1, 2)
    return C + p["b"][None, :, None, None]


def exact_model_logits(graph, X):
    """The float model's logits in exact rational arithmetic (Fractions): the
    reference the bounds are proven against. Every operator of lrmpi's graphs."""
    from lrmpi.nn import ops
    F = np.vectorize(Fraction, otypes=[object])

    def lin(node, h):
        p = node.params
        if node.op == "linear":
            return np.dot(h.reshape(h.shape[0], -1), F(p["W"]).T) + F(p["b"])
        return ops.conv(h, F(p["W"]), p, lambda c, w: np.dot(c, w.T)) + \
            F(p["b"])[None, :, None, None]
    env = {graph.input: F(np.asarray(X, np.float64))}
    for n in graph.nodes:
        args = [env[t] for t in n.inputs]
        x, p = args[0], n.params
        if n.op in ("linear", "conv"):
            y = lin(n, x)
        elif n.op == "relu":
            y = np.where(x >= 0, x, Fraction(0))
        elif n.op == "leakyrelu":
            y = np.where(x >= 0, x, x * Fraction(p["alpha"]))
        elif n.op == "prelu":
            y = np.where(x >= 0, x, x * F(np.asarray(p["slope"], np.float64)))
        elif n.op == "clip":
            y = x
            if np.isfinite(p.get("lo", -np.inf)):
                y = np.where(y < Fraction(p["lo"]), Fraction(p["lo"]), y)
            if np.isfinite(p.get("hi", np.inf)):
                y = np.where(y > Fraction(p["hi"]), Fraction(p["hi"]), y)
        elif n.op == "add":
            y = sum(args[1:], args[0])
        elif n.op == "concat":
            y = np.concatenate(args, axis=1)
        elif n.op in ("flatten", "reshape", "transpose", "slice", "gather"):
            y = ops.apply(n, args)
        elif n.op == "pad":
            y = np.pad(x, [(0, 0)] + [tuple(v) for v in p["pads"]],
                       constant_values=Fraction(p.get("value", 0.0)))
        elif n.op in ("maxpool", "avgpool"):
            y = _pool_exact(x, p, n.op)
        elif n.op == "globalavgpool":
            y = x.sum(axis=(2, 3), keepdims=True) / Fraction(x.shape[2] * x.shape[3])
        elif n.op == "affine":
            c = F(np.asarray(p["c"], np.float64))
            y = {"add": lambda: x + c, "sub": lambda: x - c, "rsub": lambda: c - x,
                 "mul": lambda: x * c, "div": lambda: x / c}[p["fn"]]()
        else:
            raise NotImplementedError(n.op)
        env[n.output] = y
    return env[graph.output]


def _pool_exact(x, p, op):
    """Max or average pooling (pads, strides, dilations, ceil_mode,
    count_include_pad) window by window, exactly."""
    from lrmpi.nn import ops
    N, C, H, W = x.shape
    (kh, kw), (sh, sw) = p["kernel"], p.get("strides", p["kernel"])
    dh, dw = p.get("dilations", (1, 1))
    t, l, b, r = p.get("pads", (0, 0, 0, 0))
    Ho, Wo = ops.pool_geometry(H, W, p)
    out = np.empty((N, C, Ho, Wo), dtype=object)
    for i in range(Ho):
        for j in range(Wo):
            rows = [i * sh - t + u * dh for u in range(kh)]
            cols = [j * sw - l + v * dw for v in range(kw)]
            inside = [(a, c) for a in rows for c in cols if 0 <= a < H and 0 <= c < W]
            vals = [x[:, :, a, c] for a, c in inside]
            if op == "maxpool":
                m = vals[0]
                for v in vals[1:]:
                    m = np.where(v > m, v, m)
                out[:, :, i, j] = m
            else:
                if p.get("count_include_pad", 0):  # padded cells count, beyond the pads not
                    cnt = sum(1 for a in rows for c in cols if -t <= a < H + b and -l <= c < W + r)
                else:
                    cnt = len(inside)
                out[:, :, i, j] = sum(vals[1:], vals[0]) / Fraction(cnt)
    return out
