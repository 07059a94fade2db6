"""ONNX operators that compute: linear layers, convolutions, normalisation,
elementwise arithmetic, activations, pooling, padding and the score heads.

Each converter `fn(imp, node, a, ins, data, out)` adds graph nodes through the
importer `imp` (onnx_import.py): `ins` are the node's input names (aliases
resolved), `data` those that are activations, `a` its attributes. A
BatchNormalization, or a constant per-channel Mul or Add/Sub, right after a
Gemm/MatMul/Conv whose output feeds nothing else is folded into its weights and
bias (once, in float64: the float model lrmpi refines is the folded one);
otherwise it becomes an affine node.
"""
import numpy as np


def gemm(imp, node, a, ins, data, out):
    if a.get("transA", 0):
        raise imp.err(node, "transA=1 is not supported")
    if ins[0] not in data or not imp.is_const(ins[1]):
        raise imp.err(node, "needs data times constant weights")
    B = imp.value(ins[1])
    W = imp.f64(B if a.get("transB", 0) else B.T)   # (out, in), float64, a copy
    if a.get("alpha", 1.0) != 1.0:
        W *= a["alpha"]
    b = np.zeros(W.shape[0])
    if len(ins) > 2 and ins[2]:
        b = b + np.broadcast_to(imp.value(ins[2]).astype(np.float64).reshape(-1),
                                (W.shape[0],)) * a.get("beta", 1.0)
    imp.add("linear", [ins[0]], out, {"W": W, "b": b}, node)


def matmul(imp, node, a, ins, data, out):
    if ins[0] not in data or not imp.is_const(ins[1]) or imp.value(ins[1]).ndim != 2:
        raise imp.err(node, "needs data times a constant matrix")
    if len(imp.shape[ins[0]]) != 1:
        raise imp.err(node, "supported on flat (samples x features) data only")
    B = imp.value(ins[1])
    imp.add("linear", [ins[0]], out, {"W": imp.f64(B.T), "b": np.zeros(B.shape[1])}, node)


def conv(imp, node, a, ins, data, out):
    if not imp.is_const(ins[1]):
        raise imp.err(node, "needs constant weights")
    W = imp.f64(imp.value(ins[1]))
    if W.ndim != 4:
        raise imp.err(node, "only 2-D convolutions are supported")
    b = imp.value(ins[2]).astype(np.float64) if len(ins) > 2 and ins[2] else \
        np.zeros(W.shape[0])
    kh, kw = W.shape[2:]
    strides = tuple(a.get("strides", (1, 1)))
    dil = tuple(a.get("dilations", (1, 1)))
    pads = pads_of(imp, node, a, ins[0], (kh, kw), strides, dil)
    group = int(a.get("group", 1))
    src = imp.shape[ins[0]]
    if group == 1 and not any(pads) and dil == (1, 1) and src[1:] == (kh, kw) \
            and src[0] == W.shape[1]:
        # one window covering the whole input (a classifier's 1 x 1 conv after a global
        # pool): the same products as a dense layer on the flattened input, whose
        # bound has a radius per output unit; (O, 1, 1) again after it
        flat = out + "/dense"
        imp.add("linear", [ins[0]], flat, {"W": np.ascontiguousarray(W.reshape(W.shape[0], -1)),
                                           "b": b}, node)
        imp.add("reshape", [flat], out, {"shape": (W.shape[0], 1, 1)}, node)
        return
    imp.add("conv", [ins[0]], out, {"W": W, "b": b, "strides": strides, "dilations": dil,
                                    "pads": pads, "group": group}, node)


def pads_of(imp, node, a, t, kernel, strides, dil):
    mode = a.get("auto_pad", b"NOTSET")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode in ("NOTSET", ""):
        p = a.get("pads", [0, 0, 0, 0])
        return (int(p[0]), int(p[1]), int(p[2]), int(p[3]))
    if mode == "VALID":
        return (0, 0, 0, 0)
    H, W = imp.shape[t][-2:]
    total = []
    for size, k, s, d in ((H, kernel[0], strides[0], dil[0]),
                          (W, kernel[1], strides[1], dil[1])):
        o = -(-size // s)
        total.append(max(0, (o - 1) * s + d * (k - 1) + 1 - size))
    (th, tw) = total
    if mode == "SAME_UPPER":
        return (th // 2, tw // 2, th - th // 2, tw - tw // 2)
    return (th - th // 2, tw - tw // 2, th // 2, tw // 2)


def batchnorm(imp, node, a, ins, data, out):
    scale, bias, mean, var = (imp.value(t).astype(np.float64) for t in ins[1:5])
    g = scale / np.sqrt(var + a.get("epsilon", 1e-5))
    shift = bias - mean * g
    prev = fold_target(imp, ins[0])
    if prev is not None:  # exact in the sense of the float model: folded once
        _scale_units(prev, g)
        prev.params["b"] = prev.params["b"] + shift
        imp.fold_into(out, ins[0])
        return
    c = (-1,) + (1,) * (len(imp.shape[ins[0]]) - 1)
    mid = out + "/scale"
    imp.add("affine", [ins[0]], mid, {"fn": "mul", "c": g.reshape(c)}, node)
    imp.add("affine", [mid], out, {"fn": "add", "c": shift.reshape(c)}, node)


def _scale_units(prev, g):
    """Multiply a linear/conv node's output units (weights and bias) by g (in place:
    the importer made W, a float64 copy of the model's; a new array of a large
    model's weights costs its page faults again)."""
    W = prev.params["W"]
    W *= np.broadcast_to(g, (W.shape[0],)).reshape((-1,) + (1,) * (W.ndim - 1))
    prev.params["b"] = prev.params["b"] * g


def fold_target(imp, t):
    """The linear/conv node writing t, if nothing else reads t (so folding a
    per-channel affine step into it changes nothing else)."""
    i = imp.producer.get(t)
    if i is None or imp.nodes[i].op not in ("linear", "conv") or imp.readers.get(t, 0) != 1:
        return None
    return imp.nodes[i]


def _per_unit(c, shape):
    """c (broadcast over samples of `shape`) as one value per unit / channel (axis
    0 of the samples), or None if it varies along another axis."""
    cs = (1,) * (len(shape) + 1 - c.ndim) + c.shape
    if cs[0] != 1 or any(d != 1 for d in cs[2:]):
        return None
    return np.broadcast_to(c.reshape(-1), (shape[0],)) if c.size > 1 else \
        np.full(shape[0], float(c.reshape(-1)[0]) if c.size else 0.0)


def elementwise(imp, node, ins, data, out, fn):
    if len(data) == 2 and fn == "add":
        imp.add("add", data, out, {}, node)
        return
    if len(data) == 2 and fn == "sub":  # a - b = a + (-1) b: the negation is exact
        negated = f"{out}/negated"
        imp.add("affine", [ins[1]], negated, {"fn": "mul", "c": np.array(-1.0)}, node)
        imp.add("add", [ins[0], negated], out, {}, node)
        return
    if len(data) != 1:
        raise imp.err(node, f"{node.op_type} of activations is supported only as Add/Sub/Sum")
    c = next(imp.value(t) for t in ins if t not in data).astype(np.float64)
    x = data[0]
    if fn == "sub" and ins[0] not in data:  # c - x
        fn = "rsub"
    if fn == "div" and ins[0] not in data:
        raise imp.err(node, "constant divided by data is not supported")
    shape = imp.shape[x]
    try:
        np.broadcast_to(c, (1,) + shape)
    except ValueError:
        raise imp.err(node, f"constant of shape {c.shape} does not broadcast over "
                            f"samples of shape {shape}") from None
    prev = fold_target(imp, x)
    unit = _per_unit(c, shape) if prev is not None else None
    if unit is not None and fn in ("add", "sub", "mul"):
        if fn == "mul":
            _scale_units(prev, unit)
        else:
            prev.params["b"] = prev.params["b"] + (unit if fn == "add" else -unit)
        imp.fold_into(out, x)
        return
    c = c.reshape(c.shape[1:]) if c.ndim == len(shape) + 1 and c.shape[0] == 1 else c
    imp.add("affine", [x], out, {"fn": fn, "c": c[None] if c.ndim else c}, node)


def add(imp, node, a, ins, data, out):
    elementwise(imp, node, ins, data, out, "add")


def sub(imp, node, a, ins, data, out):
    elementwise(imp, node, ins, data, out, "sub")


def mul(imp, node, a, ins, data, out):
    elementwise(imp, node, ins, data, out, "mul")


def div(imp, node, a, ins, data, out):
    elementwise(imp, node, ins, data, out, "div")


def sum_(imp, node, a, ins, data, out):
    if len(data) != len([t for t in ins if t]):
        raise imp.err(node, "Sum of activations and constants is not supported")
    imp.add("add", data, out, {}, node)


def concat(imp, node, a, ins, data, out):
    if len(data) == 2 and len(ins) == 2:  # skl2onnx's binary [1 - p, p]: the score p
        first = imp.producer.get(data[0])
        n = imp.nodes[first] if first is not None else None
        if n is not None and n.op == "affine" and n.params["fn"] == "rsub" \
                and n.inputs == [data[1]] and np.all(n.params["c"] == 1):
            imp.alias[out] = data[1]
            return
    rank = len(imp.shape[data[0]]) + 1
    axis = int(a.get("axis", 1))
    if (axis + rank if axis < 0 else axis) != 1:
        raise imp.err(node, f"Concat along axis {axis} (only channels, axis 1)")
    if len(data) != len(ins):
        raise imp.err(node, "Concat of activations and constants is not supported")
    imp.add("concat", data, out, {}, node)


def relu(imp, node, a, ins, data, out):
    imp.add("relu", data, out, {}, node)


def leakyrelu(imp, node, a, ins, data, out):
    imp.add("leakyrelu", data, out, {"alpha": float(a.get("alpha", 0.01))}, node)


def prelu(imp, node, a, ins, data, out):
    slope = imp.value(ins[1]).astype(np.float64)
    shape = imp.shape[data[0]]
    if slope.ndim == 1 and len(shape) > 1 and slope.size == shape[0]:
        slope = slope.reshape((-1,) + (1,) * (len(shape) - 1))
    imp.add("prelu", data, out, {"slope": slope}, node)


def clip(imp, node, a, ins, data, out):
    lo = imp.value(ins[1]).item() if len(ins) > 1 and ins[1] else a.get("min", -np.inf)
    hi = imp.value(ins[2]).item() if len(ins) > 2 and ins[2] else a.get("max", np.inf)
    imp.add("clip", data, out, {"lo": float(lo), "hi": float(hi)}, node)


def pool_params(imp, node, a, t):
    k = tuple(a["kernel_shape"])
    if len(k) != 2:
        raise imp.err(node, "only 2-D pooling is supported")
    s = tuple(a.get("strides", k))
    d = tuple(a.get("dilations", (1, 1)))
    return {"kernel": k, "strides": s, "dilations": d,
            "pads": pads_of(imp, node, a, t, k, s, d), "ceil_mode": int(a.get("ceil_mode", 0)),
            "count_include_pad": int(a.get("count_include_pad", 0))}


def maxpool(imp, node, a, ins, data, out):
    if len(node.output) > 1 and node.output[1]:
        raise imp.err(node, "MaxPool's indices output is not supported")
    imp.add("maxpool", data, out, pool_params(imp, node, a, data[0]), node)


def averagepool(imp, node, a, ins, data, out):
    imp.add("avgpool", data, out, pool_params(imp, node, a, data[0]), node)


def globalaveragepool(imp, node, a, ins, data, out):
    imp.add("globalavgpool", data, out, {}, node)


def globalmaxpool(imp, node, a, ins, data, out):
    H, W = imp.shape[data[0]][-2:]
    imp.add("maxpool", data, out, {"kernel": (H, W), "strides": (H, W)}, node)


def pad(imp, node, a, ins, data, out):
    mode = a.get("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode != "constant":
        raise imp.err(node, f"Pad mode {mode!r} (only constant)")
    pads = [int(x) for x in (imp.value(ins[1]) if len(ins) > 1 and ins[1] else a["pads"])]
    value = float(imp.value(ins[2]).item()) if len(ins) > 2 and ins[2] else \
        float(a.get("value", 0.0))
    n = len(pads) // 2
    if pads[0] or pads[n]:
        raise imp.err(node, "padding the batch axis is not supported")
    if min(pads) < 0:
        raise imp.err(node, f"negative pads {pads} (cropping) are not supported")
    per = [(pads[i], pads[n + i]) for i in range(1, n)]
    imp.add("pad", data, out, {"pads": per, "value": value}, node)


def softmax(imp, node, a, ins, data, out):
    """A softmax head over the classes: the axis (opset >= 13) or the axes from it
    on (older opsets, which flatten there) must hold every class, the others being
    of size 1 (a (K, 1, 1) classifier output)."""
    shape = imp.shape[data[0]]
    rank = len(shape) + 1
    given = int(a.get("axis", -1 if imp.opset >= 13 else 1))
    axis = given + rank if given < 0 else given
    over = {axis} if imp.opset >= 13 else set(range(axis, rank))
    if axis == 0 or any(d != 1 for i, d in enumerate(shape, start=1) if i not in over):
        raise imp.err(node, f"Softmax over axis {given} of samples of shape {shape} "
                            "(only over the classes)")
    imp.add("softmax", data, out, {}, node)


def sigmoid(imp, node, a, ins, data, out):
    imp.add("sigmoid", data, out, {}, node)


CONVERTERS = {"Gemm": gemm, "MatMul": matmul, "Conv": conv, "BatchNormalization": batchnorm,
              "Add": add, "Sub": sub, "Mul": mul, "Div": div, "Sum": sum_, "Concat": concat,
              "Relu": relu, "LeakyRelu": leakyrelu, "PRelu": prelu, "Clip": clip,
              "MaxPool": maxpool, "AveragePool": averagepool,
              "GlobalAveragePool": globalaveragepool, "GlobalMaxPool": globalmaxpool,
              "Pad": pad, "Softmax": softmax, "Sigmoid": sigmoid}
