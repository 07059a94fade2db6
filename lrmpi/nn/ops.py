"""The float64 operations of a graph (graph.py), the reference forward pass, and
the pieces the quantized pass shares with it (im2col, pooling).

Every non-linear node here is computed the same way at every resolution and in
the reference, so two passes that feed a node the same bits get the same bits
out. Linear and conv nodes go through `linear(node, h)`: the float64 product here
(`float_linear`), or the exact digit-plane product of a resolution (quantized.py).
"""
import math

import numpy as np

from lrmpi.nn.operators import LINEAR_OPS, conv_geometry, pool_geometry  # noqa: F401


# --- the pass ---

def forward(graph, X, linear=None, keep=(), after=None):
    """The graph's output (logits) for a batch X (N, *input_shape); `linear(node, h)`
    computes the linear and conv nodes (default: float64); `after(node, args, y)`
    sees every other node's result. Tensors are dropped after their last reader;
    those named in `keep` are returned too: (logits, {name: tensor})."""
    linear = linear or float_linear
    last = {}
    for i, n in enumerate(graph.nodes):
        for t in n.inputs:
            last[t] = i
    env, kept = {graph.input: np.asarray(X, np.float64)}, {}
    for i, n in enumerate(graph.nodes):
        args = [env[t] for t in n.inputs]
        if n.op in LINEAR_OPS:
            env[n.output] = linear(n, args[0])
        else:
            env[n.output] = apply(n, args)
            if after is not None:
                after(n, args, env[n.output])
        if n.output in keep:
            kept[n.output] = env[n.output]
        for t in n.inputs:
            if last.get(t) == i and t != graph.output:
                del env[t]
    out = env[graph.output]
    out = out.reshape(len(out), -1)  # (K, 1, ..., 1) per sample: K scores (graph.py)
    return (out, kept) if keep else out


def scores(graph, logits):
    """The head applied to the logits: probabilities (softmax), a score (sigmoid) or
    the logits themselves."""
    if graph.head == "softmax":
        z = logits - logits.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)
    if graph.head == "sigmoid":
        return 1.0 / (1.0 + np.exp(-logits))
    return logits


def decisions(graph, logits):
    """The predicted class of each sample (one logit: > 0, i.e. score > 0.5)."""
    if logits.shape[1] == 1:
        return (logits[:, 0] > 0).astype(np.int64)
    return logits.argmax(axis=1)


# --- linear and conv in float64 ---

def float_linear(node, h):
    p = node.params
    if node.op == "linear":
        return h.reshape(h.shape[0], -1) @ p["W"].T + p["b"]
    return conv(h, p["W"], p, lambda cols, Wg: cols @ Wg.T) + p["b"][None, :, None, None]


def im2col(x, kh, kw, p, fill=0):
    """Rows (N*Ho*Wo, C*kh*kw) of the windows of x (N, C, H, W), any dtype: the
    columns in (c, u, v) order, as W.reshape(O, -1)."""
    (sh, sw), (dh, dw) = p.get("strides", (1, 1)), p.get("dilations", (1, 1))
    t, l, b, r = p.get("pads", (0, 0, 0, 0))
    if t or l or b or r:
        x = np.pad(x, ((0, 0), (0, 0), (t, b), (l, r)), constant_values=fill)
    win = np.lib.stride_tricks.sliding_window_view(
        x, (dh * (kh - 1) + 1, dw * (kw - 1) + 1), axis=(2, 3))
    win = win[:, :, ::sh, ::sw, ::dh, ::dw]                 # (N, C, Ho, Wo, kh, kw)
    N, C, Ho, Wo = win.shape[:4]
    return win.transpose(0, 2, 3, 1, 4, 5).reshape(N * Ho * Wo, C * kh * kw), (N, Ho, Wo)


def conv(x, W, p, product):
    """ONNX Conv of x (N, C, H, W) with W (O, C/g, kh, kw): `product(cols, Wg)` of each
    group's windows with its weights (O/g, C/g*kh*kw) gives (rows, O/g)."""
    g = int(p.get("group", 1))
    O, Cg, kh, kw = W.shape
    Og = O // g
    outs = []
    for gi in range(g):
        cols, (N, Ho, Wo) = im2col(x[:, gi * Cg:(gi + 1) * Cg], kh, kw, p)
        outs.append(product(cols, W[gi * Og:(gi + 1) * Og].reshape(Og, -1)))
    y = np.concatenate(outs, axis=1) if g > 1 else outs[0]
    return y.reshape(N, Ho, Wo, O).transpose(0, 3, 1, 2)


# --- everything else ---

def zero_padding(node):
    """The node, or for a pad its twin that pads with 0 (what moves a difference)."""
    if node.op != "pad":
        return node
    return type(node)(node.op, node.inputs, node.output, {**node.params, "value": 0.0})


def apply(node, args):
    p, x = node.params, args[0]
    op = node.op
    if op == "relu":
        return np.maximum(x, 0.0)
    if op == "leakyrelu":
        return np.where(x >= 0, x, p["alpha"] * x)
    if op == "prelu":
        return np.where(x >= 0, x, p["slope"] * x)
    if op == "clip":
        return np.minimum(np.maximum(x, p.get("lo", -np.inf)), p.get("hi", np.inf))
    if op == "add":
        out = args[0] + args[1]
        for a in args[2:]:
            out = out + a
        return out
    if op == "concat":
        return np.concatenate(args, axis=1)
    if op == "affine":
        c = p["c"]
        if p["fn"] == "rsub":
            return np.subtract(c, x)
        return {"add": np.add, "sub": np.subtract, "mul": np.multiply,
                "div": np.divide}[p["fn"]](x, c)
    if op == "maxpool":
        return pool(x, p, "max")
    if op == "avgpool":
        return pool(x, p, "avg")
    if op == "globalavgpool":
        return x.mean(axis=(2, 3), keepdims=True)
    if op == "pad":
        return np.pad(x, [(0, 0)] + [tuple(v) for v in p["pads"]],
                      constant_values=p.get("value", 0.0))
    if op == "flatten":
        return x.reshape(x.shape[0], -1)
    if op == "reshape":
        return x.reshape((x.shape[0],) + tuple(p["shape"]))
    if op == "transpose":  # one contiguous copy, as onnxruntime makes
        return np.ascontiguousarray(x.transpose((0,) + tuple(int(a) + 1 for a in p["perm"])))
    if op == "slice":
        sl = [slice(None)] * x.ndim
        for ax, start, stop, step in zip(p["axes"], p["starts"], p["stops"], p["steps"]):
            sl[int(ax) + 1] = slice(int(start), int(stop), int(step))
        return x[tuple(sl)]
    if op == "gather":
        idx = np.asarray(p["indices"], np.int64).reshape(tuple(p["index_shape"]))
        return np.take(x, idx, axis=int(p["axis"]) + 1)
    raise ValueError(f"not an elementwise node: {op}")


def pool(x, p, kind):
    """Max or average pooling with pads, strides, dilations and ceil_mode (ONNX)."""
    N, C, H, W = x.shape
    (kh, kw), (sh, sw) = p["kernel"], p.get("strides", p["kernel"])
    (dh, dw) = p.get("dilations", (1, 1))
    t, l, b, r = p.get("pads", (0, 0, 0, 0))
    Ho, Wo = pool_geometry(H, W, p)
    # pad enough for every window (ceil_mode may read past the end padding)
    bb = max(b, (Ho - 1) * sh + dh * (kh - 1) + 1 - H - t)
    rr = max(r, (Wo - 1) * sw + dw * (kw - 1) + 1 - W - l)
    fill = -np.inf if kind == "max" else 0.0
    xp = np.pad(x, ((0, 0), (0, 0), (t, bb), (l, rr)), constant_values=fill)
    win = np.lib.stride_tricks.sliding_window_view(
        xp, (dh * (kh - 1) + 1, dw * (kw - 1) + 1), axis=(2, 3))
    win = win[:, :, ::sh, ::sw, ::dh, ::dw][:, :, :Ho, :Wo]
    # one elementwise max/add per kernel offset over strided slices: a reduction
    # over the last two axes of the window view is 5-10x slower (measured)
    out = win[:, :, :, :, 0, 0].copy()
    for u in range(kh):
        for v in range(kw):
            if u or v:
                (np.maximum if kind == "max" else np.add)(out, win[:, :, :, :, u, v], out=out)
    if kind == "max":
        return out
    total = out
    if p.get("count_include_pad", 0):
        inside = np.ones((1, 1, H + t + b, W + l + r))
        inside = np.pad(inside, ((0, 0), (0, 0), (0, bb - b), (0, rr - r)))
    else:
        inside = np.pad(np.ones((1, 1, H, W)), ((0, 0), (0, 0), (t, bb), (l, rr)))
    cnt = np.lib.stride_tricks.sliding_window_view(
        inside, (dh * (kh - 1) + 1, dw * (kw - 1) + 1), axis=(2, 3))
    cnt = cnt[:, :, ::sh, ::sw, ::dh, ::dw][:, :, :Ho, :Wo].sum(axis=(4, 5))
    return total / cnt


def window_overlap(p, kernel=None):
    """At most how many windows read one input element (the norms of pooling and of
    convolution): each tap of a window reads it for at most one window, and with
    dilation 1 only every s-th tap can: ceil(k/s) per axis, else k."""
    (kh, kw) = kernel or p["kernel"]
    (sh, sw) = p.get("strides", kernel or p["kernel"])
    (dh, dw) = p.get("dilations", (1, 1))
    return ((math.ceil(kh / sh) if dh == 1 else kh)
            * (math.ceil(kw / sw) if dw == 1 else kw))
