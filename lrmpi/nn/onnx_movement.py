"""ONNX operators that only move data: folded on constants, graph nodes on data.

Shape arithmetic (Shape, Gather, Unsqueeze, Concat, ...) and constant weights
(ConstantOfShape, Transpose of an initializer, ...) are folded at import. On
activations, Transpose, Reshape, Flatten, Squeeze, Unsqueeze, Split, Slice and
Gather (constant indices) become the graph's movement nodes (operators.py) as
long as they act on the per-sample axes: each output element is one input
element, so they are exact on digit planes and on the bounds. One that would
move or select along the batch axis is refused, naming the node.

ONNX axes count the batch (axis 0); the graph's count the per-sample axes only.
Models exported with batch 1 hard-code it in Reshape targets such as [1, 2048]:
a leading 1 (or 0, or -1) there is read as "the samples".
"""
import numpy as np

# operators folded when every input is a constant
FOLDABLE = {"Shape", "Gather", "Unsqueeze", "Squeeze", "Concat", "Slice", "Add", "Sub",
            "Mul", "Div", "Transpose", "Reshape", "Cast", "Identity", "Flatten",
            "ConstantOfShape", "Split"}


def fold(node, a, v):
    """The constant `node` computes from constant inputs `v` (None where an optional
    input is empty); a list for several outputs (Split)."""
    op = node.op_type
    if op == "Gather":
        return np.take(v[0], v[1].astype(np.int64), axis=a.get("axis", 0))
    if op == "Unsqueeze":
        out = v[0]
        for ax in sorted(_positive(axes_arg(a, v), out.ndim + len(axes_arg(a, v)))):
            out = np.expand_dims(out, ax)
        return out
    if op == "Squeeze":
        axes = axes_arg(a, v)
        return np.squeeze(v[0], axis=tuple(axes) if axes is not None else None)
    if op == "Concat":
        return np.concatenate([np.atleast_1d(x) for x in v if x is not None],
                              axis=a.get("axis", 0))
    if op == "Slice":
        sl = [slice(None)] * v[0].ndim
        for ax, s, e, st in zip(*slice_args(a, v, v[0].ndim)):
            sl[ax] = slice(s, e, st)
        return v[0][tuple(sl)]
    if op in ("Add", "Sub", "Mul", "Div"):
        f = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}[op]
        return f(v[0], v[1])
    if op == "Transpose":
        return np.transpose(v[0], a.get("perm"))
    if op == "Reshape":
        shape = [int(x) for x in v[1]]
        shape = [v[0].shape[i] if d == 0 and not a.get("allowzero", 0) else d
                 for i, d in enumerate(shape)]
        return v[0].reshape(shape)
    if op in ("Cast", "Identity"):
        return v[0]
    if op == "Flatten":
        ax = a.get("axis", 1) % max(1, v[0].ndim)
        return v[0].reshape(int(np.prod(v[0].shape[:ax])), -1)
    if op == "Shape":
        return np.asarray(v[0].shape, np.int64)
    if op == "ConstantOfShape":
        value = a["value"] if "value" in a else np.zeros(1, np.float32)
        return np.full([int(x) for x in v[0]], value.reshape(-1)[0], value.dtype)
    if op == "Split":
        axis = a.get("axis", 0)
        sizes = _split_sizes(node, a, v, v[0].shape[axis])
        return np.split(v[0], np.cumsum(sizes)[:-1], axis=axis)
    raise ValueError(op)


def axes_arg(a, v):
    """Squeeze/Unsqueeze axes: the attribute (opset < 13) or the second input; None
    if neither is given."""
    if "axes" in a:
        return [int(x) for x in a["axes"]]
    if len(v) > 1 and v[1] is not None:
        return [int(x) for x in np.asarray(v[1]).reshape(-1)]
    return None


def slice_args(a, v, rank):
    """(axes, starts, ends, steps) of a Slice, from attributes (opset < 10) or
    inputs, axes made non-negative."""
    def arg(i, name):
        if name in a:
            return [int(x) for x in a[name]]
        return [int(x) for x in np.asarray(v[i]).reshape(-1)] \
            if len(v) > i and v[i] is not None else None
    starts, ends = arg(1, "starts"), arg(2, "ends")
    axes = arg(3, "axes") or list(range(len(starts)))
    steps = arg(4, "steps") or [1] * len(starts)
    return _positive(axes, rank), starts, ends, steps


def _positive(axes, rank):
    return [int(x) + rank if int(x) < 0 else int(x) for x in axes]


def _split_sizes(node, a, v, n):
    sizes = a.get("split", v[1] if len(v) > 1 and v[1] is not None else None)
    if sizes is not None:
        return [int(x) for x in sizes]
    parts = int(a.get("num_outputs", len(node.output)))
    step = -(-n // parts)  # ONNX: equal parts, the last one smaller
    return [min(step, n - i * step) for i in range(parts)]


# --- movement nodes on activations: fn(imp, node, a, ins, data, out) ---

def _sample_axis(imp, node, axis, t, rank_extra=0):
    """The per-sample axis of ONNX axis `axis` of tensor t (batch axis: refused)."""
    rank = len(imp.shape[t]) + 1 + rank_extra
    ax = int(axis) + rank if int(axis) < 0 else int(axis)
    if not 0 <= ax < rank:
        raise imp.err(node, f"axis {axis} of a tensor of rank {rank}")
    if ax == 0:
        raise imp.err(node, f"{node.op_type} along the batch axis is not supported "
                            "(lrmpi computes every sample on its own)")
    return ax - 1


def transpose(imp, node, a, ins, data, out):
    rank = len(imp.shape[data[0]]) + 1
    perm = [int(p) for p in a.get("perm", range(rank - 1, -1, -1))]
    if not perm or perm[0] != 0:
        raise imp.err(node, f"Transpose with perm {perm} moves the batch axis")
    imp.add("transpose", data, out, {"perm": tuple(p - 1 for p in perm[1:])}, node)


def reshape(imp, node, a, ins, data, out):
    shape = [int(x) for x in imp.value(ins[1])]
    if not shape or shape[0] not in (0, 1, -1):
        raise imp.err(node, f"Reshape to {shape}: the first axis must stay the samples")
    if a.get("allowzero", 0) and 0 in shape:
        raise imp.err(node, "Reshape with allowzero and a zero in the shape")
    src = imp.shape[data[0]]
    per = [src[i] if v == 0 and i < len(src) else v for i, v in enumerate(shape[1:])]
    if per.count(-1) > 1:
        raise imp.err(node, f"Reshape to {shape}: more than one -1")
    if -1 in per:
        known = int(np.prod([v for v in per if v != -1]))
        total = int(np.prod(src))
        if known <= 0 or total % known:
            raise imp.err(node, f"Reshape of {src} to {shape}: the sizes do not fit")
        per = [total // known if v == -1 else v for v in per]
    _to_shape(imp, node, data[0], out, per)


def _to_shape(imp, node, t, out, per):
    """A reshape to per-sample `per` (a flatten when it is one axis)."""
    if len(per) == 1 and per[0] == int(np.prod(imp.shape[t])):
        imp.add("flatten", [t], out, {}, node)
    else:
        imp.add("reshape", [t], out, {"shape": tuple(int(d) for d in per)}, node)


def flatten(imp, node, a, ins, data, out):
    src = imp.shape[data[0]]
    ax = int(a.get("axis", 1))
    ax = ax + len(src) + 1 if ax < 0 else ax
    if ax == 0 or int(np.prod(src[:ax - 1])) != 1:
        raise imp.err(node, f"Flatten with axis {a.get('axis', 1)} merges the samples")
    imp.add("flatten", data, out, {}, node)


def squeeze(imp, node, a, ins, data, out):
    src = imp.shape[data[0]]
    axes = axes_arg(a, [imp.const_or_none(t) for t in ins])
    if axes is None:  # every axis of size 1, the batch's excepted
        keep = [d for d in src if d != 1]
    else:
        drop = {_sample_axis(imp, node, x, data[0]) for x in axes}
        if any(src[i] != 1 for i in drop):
            raise imp.err(node, f"Squeeze of axes {list(axes)} of size other than 1")
        keep = [d for i, d in enumerate(src) if i not in drop]
    _to_shape(imp, node, data[0], out, keep)


def unsqueeze(imp, node, a, ins, data, out):
    axes = axes_arg(a, [imp.const_or_none(t) for t in ins])
    per = list(imp.shape[data[0]])
    axes = [_sample_axis(imp, node, x, data[0], rank_extra=len(axes)) for x in axes]
    for ax in sorted(axes):
        per.insert(ax, 1)
    _to_shape(imp, node, data[0], out, per)


def slice_(imp, node, a, ins, data, out):
    src = imp.shape[data[0]]
    v = [imp.const_or_none(t) for t in ins]
    axes, starts, stops, steps = [], [], [], []
    for ax, s, e, st in zip(*slice_args(a, v, len(src) + 1)):
        if ax == 0:
            raise imp.err(node, "Slice along the batch axis is not supported")
        axes.append(ax - 1)
        starts.append(s)
        stops.append(e)
        steps.append(st)
    imp.add("slice", data, out, {"axes": tuple(axes), "starts": tuple(starts),
                                 "stops": tuple(stops), "steps": tuple(steps)}, node)


def split(imp, node, a, ins, data, out):
    ax = _sample_axis(imp, node, a.get("axis", 0), data[0])
    v = [imp.const_or_none(t) for t in ins]
    sizes = _split_sizes(node, a, v, imp.shape[data[0]][ax])
    if sum(sizes) != imp.shape[data[0]][ax] or len(sizes) != len(node.output):
        raise imp.err(node, f"Split sizes {sizes} of an axis of {imp.shape[data[0]][ax]}")
    at = 0
    for size, name in zip(sizes, node.output):
        if name:
            imp.add("slice", data, name, {"axes": (ax,), "starts": (at,), "stops": (at + size,),
                                          "steps": (1,)}, node)
        at += size


def gather(imp, node, a, ins, data, out):
    if ins[0] not in data or not imp.is_const(ins[1]):
        raise imp.err(node, "Gather needs data and constant indices")
    ax = _sample_axis(imp, node, a.get("axis", 0), data[0])
    idx = np.asarray(imp.value(ins[1]), np.int64)
    imp.add("gather", data, out, {"axis": ax, "indices": tuple(int(i) for i in idx.reshape(-1)),
                                  "index_shape": tuple(idx.shape)}, node)


CONVERTERS = {"Transpose": transpose, "Reshape": reshape, "Flatten": flatten,
              "Squeeze": squeeze, "Unsqueeze": unsqueeze, "Slice": slice_, "Split": split,
              "Gather": gather}
