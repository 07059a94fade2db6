"""ONNX models -> lrmpi graphs (graph.py), and `load_model` for .onnx and .npz.

The importer keeps the graph: tensors by name, fan-out and fan-in. Constants are
folded (initializers, Constant nodes, the Shape-Gather-Unsqueeze-Concat arithmetic
of exported Flatten/Reshape); Identity, Dropout and Cast are skipped; a
BatchNormalization or constant Add/Mul right after a Gemm/MatMul/Conv whose output
feeds nothing else is folded into it, otherwise it becomes a per-channel affine
node. Nodes not on the path to the score output (a label branch with ArgMax) are
dropped. A skl2onnx ZipMap is read through to the probability tensor feeding it,
and a binary classifier's Concat([1 - p, p]) as the score p. An unsupported
operator is an error naming the node and the reason. External data must stay
inside the model's folder.
"""
import os

import numpy as np

from lrmpi.errors import InputError
from lrmpi.nn import graph as G
from lrmpi.nn import ops

SKIPPED = {"Identity", "Dropout", "Cast"}
NOT_PIECEWISE_LINEAR = {"Tanh", "Exp", "Log", "Erf", "Gelu", "Elu", "Selu", "Softplus",
                        "HardSwish", "Mish", "Sin", "Cos", "Sqrt", "Pow", "Reciprocal"}
CONST_OPS = {"Shape", "Gather", "Unsqueeze", "Squeeze", "Concat", "Slice", "Add", "Sub",
             "Mul", "Div", "Transpose", "Reshape", "Cast", "Identity", "Flatten"}


def load_model(path):
    """A graph from `.onnx` or lrmpi's own `.npz` weights."""
    path = str(path)
    if not os.path.exists(path):
        raise InputError(f"model: no such file: {path}")
    if path.endswith(".onnx"):
        return load(path)
    if path.endswith(".npz"):
        return G.load_npz(path)
    raise InputError(f"model: {path}: expected a .onnx or .npz file")


def load(path):
    try:
        import onnx
    except ImportError:
        raise InputError("reading .onnx models needs the onnx package (pip install onnx)") \
            from None
    try:
        proto = onnx.load(path, load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError, OSError, ...
        raise InputError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {exc})") \
            from None
    _load_external(proto, path)
    try:
        return _Importer(path, proto.graph).run()
    except InputError:
        raise
    except Exception as exc:  # missing attributes or parameters of a malformed graph
        raise InputError(f"{path}: malformed ONNX model ({type(exc).__name__}: {exc})") \
            from None


def _load_external(proto, path):
    """Load external tensors, refusing any location outside the model's folder."""
    from onnx import external_data_helper
    base = os.path.dirname(os.path.abspath(path))
    for t in external_data_helper._get_all_tensors(proto):
        if not external_data_helper.uses_external_data(t):
            continue
        loc = {e.key: e.value for e in t.external_data}.get("location", "")
        full = os.path.realpath(os.path.join(base, loc))
        if os.path.isabs(loc) or os.path.commonpath([full, os.path.realpath(base)]) != \
                os.path.realpath(base):
            raise InputError(f"{path}: tensor {t.name!r} points to external data outside the "
                             f"model's folder ({loc!r})")
        if not os.path.exists(full):
            raise InputError(f"{path}: external data {loc!r} of tensor {t.name!r} is missing")
    try:
        external_data_helper.load_external_data_for_model(proto, base)
    except Exception as exc:
        raise InputError(f"{path}: cannot load external data ({exc})") from None


def _attrs(node):
    from onnx import helper
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


class _Importer:
    def __init__(self, path, g):
        from onnx import numpy_helper
        self.path, self.g = path, g
        self.const = {t.name: numpy_helper.to_array(t) for t in g.initializer}
        self.alias = {}       # tensor -> the tensor it is (skipped nodes)
        self.nodes = []       # graph.Node, in order
        self.shape = {}       # data tensor -> per-sample shape
        self.producer = {}    # data tensor -> index in self.nodes
        self.readers = {}     # onnx tensor -> how many onnx nodes read it

    def where(self, node):
        return f"{self.path}: node {node.name or '?'} ({node.op_type})"

    def err(self, node, why):
        return InputError(f"{self.where(node)}: {why}")

    # --- tensors ---
    def name(self, t):
        while t in self.alias:
            t = self.alias[t]
        return t

    def is_const(self, t):
        return self.name(t) in self.const

    def value(self, t):
        return self.const[self.name(t)]

    def run(self):
        g = self.g
        inputs = [i for i in g.input if i.name not in self.const]
        if len(inputs) != 1:
            raise InputError(f"{self.path}: expected one data input, found {len(inputs)}")
        x = inputs[0]
        dims = [d.dim_value for d in x.type.tensor_type.shape.dim][1:]
        if any(d <= 0 for d in dims):
            raise InputError(f"{self.path}: input {x.name!r} has unknown per-sample dims {dims}")
        self.input = x.name
        self.shape[x.name] = tuple(dims)
        needed = self.needed(self.wanted_output())
        for node in needed:
            for t in node.input:
                if t:
                    self.readers[t] = self.readers.get(t, 0) + 1
        for node in needed:
            self.convert(node)
        out, head = self.score_output()
        nodes = self.prune(out)
        graph = G.Graph(self.input, self.shape[self.input], nodes, out, head)
        return graph.validate()

    def wanted_output(self):
        """The graph output the user wants the scores of: a probability output, else
        the first float one."""
        outs = list(self.g.output)
        prob = [o for o in outs if "prob" in o.name.lower()]
        floats = [o for o in outs if o.type.tensor_type.elem_type in (1, 10, 11)]
        return (prob or floats or outs)[0].name

    def needed(self, out):
        """The ONNX nodes the output depends on, in order (a label branch with ArgMax
        falls away before anything is converted)."""
        producer = {t: n for n in self.g.node for t in n.output}
        need, todo = set(), [out]
        while todo:
            n = producer.get(todo.pop())
            if n is not None and id(n) not in need:
                need.add(id(n))
                todo.extend(t for t in n.input if t)
        return [n for n in self.g.node if id(n) in need]

    def score_output(self):
        """(logits tensor, head) of the wanted output."""
        name = self.name(self.wanted_output())
        node = self.producer.get(name)
        head = None
        if node is not None and self.nodes[node].op in G.HEADS:
            head = self.nodes[node].op
            name = self.nodes[node].inputs[0]
        if name not in self.producer:
            raise InputError(f"{self.path}: the score output is not computed from the input")
        return name, head

    def prune(self, out):
        """The nodes the output depends on (a label branch falls away); heads other
        than the final one are errors."""
        need, keep = {out}, []
        for n in reversed(self.nodes):
            if n.output in need:
                if n.op in G.HEADS:
                    raise InputError(f"{self.path}: {n.name or n.op}: {n.op} is only supported "
                                     "as the last node (the scores)")
                keep.append(n)
                need.update(n.inputs)
        return keep[::-1]

    # --- one ONNX node ---
    def add(self, op, inputs, output, params, node):
        x = [self.shape[t] for t in inputs]
        n = G.Node(op, list(inputs), output, params, node.name or output)
        try:
            sample = [np.zeros((1,) + s) for s in x]
            y = ops.float_linear(n, sample[0]) if op in G.LINEAR_OPS else \
                (sample[0] if op in G.HEADS else ops.apply(n, sample))
        except (ValueError, IndexError) as exc:
            raise self.err(node, f"shapes do not fit ({exc})") from None
        self.shape[output] = y.shape[1:]
        self.producer[output] = len(self.nodes)
        self.nodes.append(n)

    def convert(self, node):
        op, a = node.op_type, _attrs(node)
        ins = [self.name(t) for t in node.input]
        data = [t for t in ins if t and t not in self.const]
        out = node.output[0] if node.output else None
        if op == "Constant":
            from onnx import numpy_helper
            self.const[out] = numpy_helper.to_array(a["value"]) if "value" in a else \
                np.asarray(a.get("value_float", a.get("value_floats", a.get("value_int",
                           a.get("value_ints")))))
            return
        if op in SKIPPED:
            self.alias[out] = ins[0]
            return
        if not data:  # all inputs constant: fold
            if op not in CONST_OPS:
                raise self.err(node, "cannot fold this operator on constants")
            self.const[out] = self.fold(op, a, [self.value(t) for t in ins if t])
            return
        if op == "Shape":
            self.const[out] = np.asarray((1,) + self.shape[data[0]], np.int64)
            return
        if op == "ZipMap":
            self.alias[out] = ins[0]  # the probability tensor feeding it
            return
        getattr(self, "op_" + op, self.unsupported)(node, a, ins, data, out)

    def unsupported(self, node, a, ins, data, out):
        op = node.op_type
        why = f"{op} is not piecewise linear (lrmpi infers piecewise-linear networks)" \
            if op in NOT_PIECEWISE_LINEAR else f"unsupported ONNX operator {op!r}"
        raise self.err(node, why)

    def fold(self, op, a, v):
        if op == "Gather":
            return np.take(v[0], v[1].astype(np.int64), axis=a.get("axis", 0))
        if op == "Unsqueeze":
            axes = a.get("axes", list(v[1]) if len(v) > 1 else [])
            out = v[0]
            for ax in sorted(int(x) for x in axes):
                out = np.expand_dims(out, ax)
            return out
        if op == "Squeeze":
            axes = a.get("axes", list(v[1]) if len(v) > 1 else None)
            return np.squeeze(v[0], axis=tuple(int(x) for x in axes) if axes is not None else None)
        if op == "Concat":
            return np.concatenate([np.atleast_1d(x) for x in v], axis=a.get("axis", 0))
        if op == "Slice":
            starts, ends = v[1], v[2]
            axes = v[3] if len(v) > 3 else range(len(starts))
            steps = v[4] if len(v) > 4 else [1] * len(starts)
            sl = [slice(None)] * v[0].ndim
            for s, e, ax, st in zip(starts, ends, axes, steps):
                sl[int(ax)] = slice(int(s), int(e), int(st))
            return v[0][tuple(sl)]
        if op in ("Add", "Sub", "Mul", "Div"):
            f = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}[op]
            return f(v[0], v[1])
        if op == "Transpose":
            return np.transpose(v[0], a.get("perm"))
        if op == "Reshape":
            return v[0].reshape([int(x) for x in v[1]])
        if op in ("Cast", "Identity"):
            return v[0]
        if op == "Flatten":
            ax = a.get("axis", 1)
            return v[0].reshape(int(np.prod(v[0].shape[:ax])), -1)
        raise ValueError(op)

    # --- data operators ---
    def op_Gemm(self, node, a, ins, data, out):
        if a.get("transA", 0):
            raise self.err(node, "transA=1 is not supported")
        if ins[0] not in data or not self.is_const(ins[1]):
            raise self.err(node, "needs data times constant weights")
        B = self.value(ins[1]).astype(np.float64)
        W = (B if a.get("transB", 0) else B.T) * a.get("alpha", 1.0)
        b = np.zeros(W.shape[0])
        if len(ins) > 2 and ins[2]:
            b = b + np.broadcast_to(self.value(ins[2]).astype(np.float64).reshape(-1),
                                    (W.shape[0],)) * a.get("beta", 1.0)
        self.add("linear", [ins[0]], out, {"W": np.ascontiguousarray(W), "b": b}, node)

    def op_MatMul(self, node, a, ins, data, out):
        if ins[0] not in data or not self.is_const(ins[1]) or self.value(ins[1]).ndim != 2:
            raise self.err(node, "needs data times a constant matrix")
        if len(self.shape[ins[0]]) != 1:
            raise self.err(node, "supported on flat (samples x features) data only")
        B = self.value(ins[1]).astype(np.float64)
        self.add("linear", [ins[0]], out, {"W": np.ascontiguousarray(B.T),
                                           "b": np.zeros(B.shape[1])}, node)

    def op_Conv(self, node, a, ins, data, out):
        if not self.is_const(ins[1]):
            raise self.err(node, "needs constant weights")
        W = self.value(ins[1]).astype(np.float64)
        if W.ndim != 4:
            raise self.err(node, "only 2-D convolutions are supported")
        b = self.value(ins[2]).astype(np.float64) if len(ins) > 2 and ins[2] else \
            np.zeros(W.shape[0])
        kh, kw = W.shape[2:]
        strides = tuple(a.get("strides", (1, 1)))
        dil = tuple(a.get("dilations", (1, 1)))
        pads = self.pads(node, a, ins[0], (kh, kw), strides, dil)
        self.add("conv", [ins[0]], out, {"W": W, "b": b, "strides": strides, "dilations": dil,
                                         "pads": pads, "group": int(a.get("group", 1))}, node)

    def pads(self, node, a, t, kernel, strides, dil):
        mode = a.get("auto_pad", b"NOTSET")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        if mode in ("NOTSET", ""):
            p = a.get("pads", [0, 0, 0, 0])
            return (int(p[0]), int(p[1]), int(p[2]), int(p[3]))
        if mode == "VALID":
            return (0, 0, 0, 0)
        H, W = self.shape[t][-2:]
        total = []
        for size, k, s, d in ((H, kernel[0], strides[0], dil[0]),
                              (W, kernel[1], strides[1], dil[1])):
            o = -(-size // s)
            total.append(max(0, (o - 1) * s + d * (k - 1) + 1 - size))
        (th, tw) = total
        if mode == "SAME_UPPER":
            return (th // 2, tw // 2, th - th // 2, tw - tw // 2)
        return (th - th // 2, tw - tw // 2, th // 2, tw // 2)

    def op_BatchNormalization(self, node, a, ins, data, out):
        scale, bias, mean, var = (self.value(t).astype(np.float64) for t in ins[1:5])
        g = scale / np.sqrt(var + a.get("epsilon", 1e-5))
        shift = bias - mean * g
        prev = self.fold_target(ins[0])
        if prev is not None:  # exact in the sense of the float model: folded once
            W = prev.params["W"]
            prev.params["W"] = W * g.reshape((-1,) + (1,) * (W.ndim - 1))
            prev.params["b"] = prev.params["b"] * g + shift
            self.alias[out] = ins[0]
            return
        c = (-1,) + (1,) * (len(self.shape[ins[0]]) - 1)
        mid = out + "/scale"
        self.add("affine", [ins[0]], mid, {"fn": "mul", "c": g.reshape(c)}, node)
        self.add("affine", [mid], out, {"fn": "add", "c": shift.reshape(c)}, node)

    def fold_target(self, t):
        """The linear/conv node writing t, if nothing else reads t (so folding a
        per-channel affine step into it changes nothing else)."""
        i = self.producer.get(t)
        if i is None or self.nodes[i].op not in G.LINEAR_OPS or self.readers.get(t, 0) != 1:
            return None
        return self.nodes[i]

    def elementwise(self, node, ins, data, out, fn):
        if len(data) == 2 and fn == "add":
            self.add("add", data, out, {}, node)
            return
        if len(data) != 1:
            raise self.err(node, f"{node.op_type} of activations is supported only as Add/Sum")
        c = next(self.value(t) for t in ins if t not in data).astype(np.float64)
        x = data[0]
        if fn == "sub" and ins[0] not in data:  # c - x
            fn = "rsub"
        if fn == "div" and ins[0] not in data:
            raise self.err(node, "constant divided by data is not supported")
        shape = self.shape[x]
        try:
            np.broadcast_to(c, (1,) + shape)
        except ValueError:
            raise self.err(node, f"constant of shape {c.shape} does not broadcast over "
                                 f"samples of shape {shape}") from None
        prev = self.fold_target(x)
        per_unit = c.size == 1 or (c.ndim >= 1 and c.size == shape[0]
                                   and c.reshape(-1).size == shape[0])
        if prev is not None and fn in ("add", "sub") and per_unit:
            v = np.broadcast_to(c.reshape(-1), prev.params["b"].shape)
            prev.params["b"] = prev.params["b"] + (v if fn == "add" else -v)
            self.alias[node.output[0]] = x
            return
        c = c.reshape(c.shape[1:]) if c.ndim == len(shape) + 1 and c.shape[0] == 1 else c
        if fn == "add" and c.ndim < len(shape) and c.size == shape[0] and len(shape) > 1:
            c = c.reshape((-1,) + (1,) * (len(shape) - 1))
        self.add("affine", [x], out, {"fn": fn, "c": c[None] if c.ndim else c}, node)

    def op_Add(self, node, a, ins, data, out):
        self.elementwise(node, ins, data, out, "add")

    def op_Sub(self, node, a, ins, data, out):
        self.elementwise(node, ins, data, out, "sub")

    def op_Mul(self, node, a, ins, data, out):
        self.elementwise(node, ins, data, out, "mul")

    def op_Div(self, node, a, ins, data, out):
        self.elementwise(node, ins, data, out, "div")

    def op_Sum(self, node, a, ins, data, out):
        if len(data) != len([t for t in ins if t]):
            raise self.err(node, "Sum of activations and constants is not supported")
        self.add("add", data, out, {}, node)

    def op_Concat(self, node, a, ins, data, out):
        axis = a.get("axis", 1)
        if len(data) == 2 and len(ins) == 2:
            first = self.producer.get(data[0])
            n = self.nodes[first] if first is not None else None
            if n is not None and n.op == "affine" and n.params["fn"] == "rsub" \
                    and n.inputs == [data[1]] and np.all(n.params["c"] == 1):
                self.alias[out] = data[1]
                return
        if axis not in (1, -len(self.shape[data[0]]) - 1 + 1) and axis != 1:
            raise self.err(node, f"Concat along axis {axis} (only channels, axis 1)")
        if len(data) != len(ins):
            raise self.err(node, "Concat of activations and constants is not supported")
        self.add("concat", data, out, {}, node)

    def op_Relu(self, node, a, ins, data, out):
        self.add("relu", data, out, {}, node)

    def op_LeakyRelu(self, node, a, ins, data, out):
        self.add("leakyrelu", data, out, {"alpha": float(a.get("alpha", 0.01))}, node)

    def op_PRelu(self, node, a, ins, data, out):
        slope = self.value(ins[1]).astype(np.float64)
        shape = self.shape[data[0]]
        if slope.ndim == 1 and len(shape) > 1 and slope.size == shape[0]:
            slope = slope.reshape((-1,) + (1,) * (len(shape) - 1))
        self.add("prelu", data, out, {"slope": slope}, node)

    def op_Clip(self, node, a, ins, data, out):
        lo = self.value(ins[1]).item() if len(ins) > 1 and ins[1] else a.get("min", -np.inf)
        hi = self.value(ins[2]).item() if len(ins) > 2 and ins[2] else a.get("max", np.inf)
        self.add("clip", data, out, {"lo": float(lo), "hi": float(hi)}, node)

    def pool_params(self, node, a, t):
        k = tuple(a["kernel_shape"])
        if len(k) != 2:
            raise self.err(node, "only 2-D pooling is supported")
        s = tuple(a.get("strides", k))
        d = tuple(a.get("dilations", (1, 1)))
        return {"kernel": k, "strides": s, "dilations": d,
                "pads": self.pads(node, a, t, k, s, d), "ceil_mode": int(a.get("ceil_mode", 0)),
                "count_include_pad": int(a.get("count_include_pad", 0))}

    def op_MaxPool(self, node, a, ins, data, out):
        if len(node.output) > 1 and node.output[1]:
            raise self.err(node, "MaxPool's indices output is not supported")
        self.add("maxpool", data, out, self.pool_params(node, a, data[0]), node)

    def op_AveragePool(self, node, a, ins, data, out):
        self.add("avgpool", data, out, self.pool_params(node, a, data[0]), node)

    def op_GlobalAveragePool(self, node, a, ins, data, out):
        self.add("globalavgpool", data, out, {}, node)

    def op_GlobalMaxPool(self, node, a, ins, data, out):
        H, W = self.shape[data[0]][-2:]
        self.add("maxpool", data, out, {"kernel": (H, W), "strides": (H, W)}, node)

    def op_Pad(self, node, a, ins, data, out):
        mode = a.get("mode", b"constant")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        if mode != "constant":
            raise self.err(node, f"Pad mode {mode!r} (only constant)")
        pads = [int(x) for x in (self.value(ins[1]) if len(ins) > 1 and ins[1]
                                 else a["pads"])]
        value = float(self.value(ins[2]).item()) if len(ins) > 2 and ins[2] else \
            float(a.get("value", 0.0))
        n = len(pads) // 2
        if pads[0] or pads[n]:
            raise self.err(node, "padding the batch axis is not supported")
        per = [(pads[i], pads[n + i]) for i in range(1, n)]
        self.add("pad", data, out, {"pads": per, "value": value}, node)

    def op_Flatten(self, node, a, ins, data, out):
        if a.get("axis", 1) != 1:
            raise self.err(node, f"Flatten with axis {a.get('axis')} (only 1)")
        self.add("flatten", data, out, {}, node)

    def op_Reshape(self, node, a, ins, data, out):
        shape = [int(x) for x in self.value(ins[1])]
        if not shape or shape[0] not in (0, 1, -1):
            raise self.err(node, f"Reshape to {shape}: the first axis must stay the samples")
        per = shape[1:]
        src = self.shape[data[0]]
        per = [src[i] if v == 0 and i < len(src) else v for i, v in enumerate(per)]
        if per == [-1]:
            self.add("flatten", data, out, {}, node)
        else:
            known = int(np.prod([v for v in per if v != -1]))
            per = [int(np.prod(src)) // known if v == -1 else v for v in per]
            self.add("reshape", data, out, {"shape": tuple(per)}, node)

    def op_Softmax(self, node, a, ins, data, out):
        if a.get("axis", -1) not in (1, -1):
            raise self.err(node, "Softmax over another axis than the classes")
        self.add("softmax", data, out, {}, node)

    def op_Sigmoid(self, node, a, ins, data, out):
        self.add("sigmoid", data, out, {}, node)
