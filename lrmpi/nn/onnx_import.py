"""ONNX models -> lrmpi graphs (graph.py), and `load_model` for .onnx and .npz.

The importer keeps the graph: tensors by name, fan-out and fan-in. The scores
are the model's one float output, or the one chosen by name (integer outputs,
a classifier's labels, are not scores); nodes not on its path (a label branch
with ArgMax) are dropped. Constants are folded (initializers, Constant and
ConstantOfShape nodes, shape arithmetic; onnx_movement.py); Identity, Dropout
and Cast are skipped; the operators that compute are in onnx_layers.py, those
that move data in onnx_movement.py. A skl2onnx ZipMap is read through to the
probability tensor feeding it, and a binary classifier's Concat([1 - p, p]) as
the score p. An unsupported operator is an error naming the node and the reason,
found before anything else is checked. External data must stay inside the
model's folder.
"""
import os

import numpy as np

from lrmpi.errors import InputError
from lrmpi.nn import graph as G
from lrmpi.nn import onnx_layers, onnx_movement, onnx_proto
from lrmpi.nn.operators import HEADS, ShapeError, output_shape

SKIPPED = {"Identity", "Dropout", "Cast"}
NOT_PIECEWISE_LINEAR = {"Tanh", "Exp", "Log", "Erf", "Gelu", "Elu", "Selu", "Softplus",
                        "HardSwish", "HardSigmoid", "Mish", "Sin", "Cos", "Sqrt", "Pow",
                        "Reciprocal", "LRN", "LpNormalization", "InstanceNormalization",
                        "LayerNormalization", "GroupNormalization"}
RECURRENT = {"LSTM", "GRU", "RNN", "Loop", "Scan"}
CONVERTERS = {**onnx_layers.CONVERTERS, **onnx_movement.CONVERTERS}
READ_THROUGH = {"Constant", "Shape", "ZipMap"}  # handled in convert() itself
SCORE_TYPES = (1, 10, 11, 16)  # float, float16, double, bfloat16 tensors


def load_model(path, output=None, arena=None):
    """A graph from `.onnx` or lrmpi's own `.npz` weights; `output`: the name of the
    output holding the scores, when the model has several; `arena`: where an ONNX
    model's large float64 weights are made (cache.Arena: its cache entry), or None."""
    path = str(path)
    if not os.path.exists(path):
        raise InputError(f"model: no such file: {path}")
    if path.endswith(".onnx"):
        return load(path, output, arena)
    if path.endswith(".npz"):
        g = G.load_npz(path)
        if output is not None and output != g.output:
            raise InputError(f"model: {path} has no output {output!r} (its output: "
                             f"{g.output!r})")
        return g
    raise InputError(f"model: {path}: expected a .onnx or .npz file")


def load(path, output=None, arena=None):
    try:
        proto, digest = onnx_proto.load(path, digest=True)
    except InputError:
        raise
    except Exception as exc:  # protobuf raises DecodeError, OSError, ...
        raise InputError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {exc})") \
            from None
    external = onnx_proto.load_external(proto, path)
    opset = max([o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] or [1])
    try:
        g = _Importer(path, proto.graph, opset, output, arena).run()
        # what it was made from (loading.py keys its cache entry by them)
        g.sources = (digest, external)
        return g
    except InputError:
        raise
    except Exception as exc:  # missing attributes or parameters of a malformed graph
        raise InputError(f"{path}: malformed ONNX model ({type(exc).__name__}: {exc})") \
            from None


def _listed(names, most=6):
    """'a', 'b', ... (at most `most` names, then how many more)."""
    names = list(names)
    shown = ", ".join(repr(n) for n in names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")




class _Importer:
    def __init__(self, path, g, opset=13, output=None, arena=None):
        self.path, self.g, self.opset, self.output_name = path, g, opset, output
        self.arena = arena    # where large float64 weights are made (cache.Arena), or None
        self.const = {t.name: onnx_proto.to_array(t) for t in g.initializer}
        self.alias = {}       # tensor -> the tensor it is (skipped and folded nodes)
        self.nodes = []       # graph.Node, in order
        self.shape = {}       # data tensor -> per-sample shape
        self.producer = {}    # data tensor -> index in self.nodes
        self.readers = {}     # tensor -> how many onnx nodes read it

    def where(self, node):
        if node.name:
            return f"{self.path}: node {node.name} ({node.op_type})"
        out = node.output[0] if node.output else ""
        return f"{self.path}: the {node.op_type} node writing {out!r}"

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

    def f64(self, a):
        """A float64 C-contiguous copy of array `a` (exact for ONNX's float types), made
        in the arena when it takes it (large: the cache entry's pages, loading.py)."""
        a = np.asarray(a)
        if self.arena is not None:   # None from it: too small to be kept there, or no room
            out = self.arena.take(a.shape)
            if out is not None:
                np.copyto(out, a, casting="unsafe")
                return out
        return np.ascontiguousarray(a, np.float64) if a.dtype != np.float64 else a.copy()

    def const_or_none(self, t):
        return self.value(t) if t and self.is_const(t) else None

    def fold_into(self, out, x):
        """`out` is `x` from now on (a step folded into x's producer): x's readers
        are out's."""
        self.alias[out] = x
        self.readers[x] = self.readers.get(x, 0) - 1 + self.readers.get(out, 0)

    # --- the whole graph ---
    def run(self):
        wanted = self.wanted_output()
        needed = self.needed(wanted)
        for node in needed:  # an operator lrmpi cannot take, before anything else
            if node.op_type not in CONVERTERS and node.op_type not in SKIPPED | READ_THROUGH \
                    | onnx_movement.FOLDABLE:
                self.unsupported(node)
        self.input = self.data_input()
        for node in needed:
            for t in node.input:
                if t:
                    self.readers[t] = self.readers.get(t, 0) + 1
        for node in needed:
            self.convert(node)
        out, head = self.score_output(wanted)
        nodes = self.prune(out)
        return G.Graph(self.input, self.shape[self.input], nodes, out, head).validate()

    def data_input(self):
        inputs = [i for i in self.g.input if i.name not in self.const]
        if len(inputs) != 1:
            names = _listed(i.name for i in inputs)
            raise InputError(f"{self.path}: the model has {len(inputs)} data inputs"
                             f"{' (' + names + ')' if names else ''}; lrmpi takes one")
        x = inputs[0]
        dims = [d.dim_value for d in x.type.tensor_type.shape.dim][1:]
        if any(d <= 0 for d in dims):
            raise InputError(f"{self.path}: input {x.name!r} has unknown per-sample dims {dims}")
        self.shape[x.name] = tuple(dims)
        return x.name

    def wanted_output(self):
        """The output holding the scores: the one named, else the one float output
        (integer outputs are labels, not scores; a ZipMap's maps count as scores)."""
        outs = list(self.g.output)
        names = _listed(o.name for o in outs)
        if self.output_name is not None:
            if self.output_name not in [o.name for o in outs]:
                raise InputError(f"{self.path}: no output named {self.output_name!r} (the "
                                 f"model's outputs: {names})")
            return self.output_name
        scores = [o for o in outs if o.type.tensor_type.elem_type in SCORE_TYPES
                  or o.type.HasField("sequence_type") or o.type.HasField("map_type")]
        if len(scores) == 1:
            return scores[0].name
        if not scores:
            raise InputError(f"{self.path}: no output holds scores (float values); the "
                             f"model's outputs: {names}")
        raise InputError(f"{self.path}: the model has {len(scores)} outputs "
                         f"({_listed(o.name for o in scores)}); choose the one "
                         "holding the scores with --model-output NAME")

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

    def score_output(self, wanted):
        """(logits tensor, head) of the wanted output. Reshapes that only turn K
        logits into (K, 1, ..., 1) are stepped over: the bound of the node before
        them has a radius per logit."""
        name = self.name(wanted)
        node = self.producer.get(name)
        head = None
        if node is not None and self.nodes[node].op in HEADS:
            head = self.nodes[node].op
            name = self.nodes[node].inputs[0]
        if name not in self.producer:
            raise InputError(f"{self.path}: the score output is not computed from the input")
        while True:
            n = self.nodes[self.producer[name]]
            src = n.inputs[0] if n.inputs else None
            if n.op not in ("reshape", "flatten") or src not in self.producer or \
                    any(d != 1 for d in self.shape[src][1:]) or \
                    self.shape[src][0] != self.shape[name][0]:
                return name, head
            name = src

    def prune(self, out):
        """The nodes the output depends on (a label branch falls away); heads other
        than the final one are errors."""
        need, keep = {out}, []
        for n in reversed(self.nodes):
            if n.output in need:
                if n.op in HEADS:
                    raise InputError(f"{self.path}: {n.name or n.op}: {n.op} is only supported "
                                     "as the last node (the scores)")
                keep.append(n)
                need.update(n.inputs)
        return keep[::-1]

    # --- one ONNX node ---
    def add(self, op, inputs, output, params, node):
        """A graph node; its per-sample shape inferred (operators.py)."""
        n = G.Node(op, list(inputs), output, params, node.name or output)
        shapes = [self.shape[t] for t in inputs]
        try:
            self.shape[output] = shapes[0] if op in HEADS else output_shape(n, shapes)
        except ShapeError as exc:
            raise self.err(node, f"shapes do not fit ({', '.join(map(str, shapes))}: {exc})") \
                from None
        self.producer[output] = len(self.nodes)
        self.nodes.append(n)

    def convert(self, node):
        op, a = node.op_type, onnx_proto.attributes(node)
        ins = [self.name(t) for t in node.input]
        data = [t for t in ins if t and t not in self.const]
        out = node.output[0] if node.output else None
        if op == "Constant":
            self.const[out] = a["value"] if "value" in a else \
                np.asarray(a.get("value_float", a.get("value_floats", a.get("value_int",
                           a.get("value_ints")))))
            return
        if op in SKIPPED:
            self.alias[out] = ins[0]
            return
        if not data:  # all inputs constant: fold
            if op not in onnx_movement.FOLDABLE:
                raise self.err(node, "cannot fold this operator on constants")
            v = onnx_movement.fold(node, a, [self.value(t) if t else None for t in ins])
            for name, value in zip(node.output, v if isinstance(v, list) else [v]):
                self.const[name] = value
            return
        if op == "Shape":  # of an activation: batch 1 (exporters' Flatten arithmetic)
            self.const[out] = np.asarray((1,) + self.shape[data[0]], np.int64)
            return
        if op == "ZipMap":
            self.alias[out] = ins[0]  # the probability tensor feeding it
            return
        CONVERTERS.get(op, lambda *args: self.unsupported(node))(self, node, a, ins, data, out)

    def unsupported(self, node):
        op = node.op_type
        if op in NOT_PIECEWISE_LINEAR:
            why = f"{op} is not piecewise linear (lrmpi infers piecewise-linear networks)"
        elif op in RECURRENT:
            why = f"{op} is a recurrent operator (lrmpi infers feed-forward networks)"
        else:
            why = f"unsupported ONNX operator {op!r}"
        raise self.err(node, why)
