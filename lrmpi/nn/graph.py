"""Models as graphs: named tensors, nodes in topological order (fan-out and fan-in).

A Graph has one data input (per-sample shape `input_shape`), nodes that each read
named tensors and write one, and one output tensor: the logits, optionally
followed by a `head` (softmax or sigmoid) that turns them into scores. Node
kinds (`op`) and their parameters:

    linear      W (out, in), b (out,)                     y = x W^T + b
    conv        W (O, C/g, kh, kw), b (O,), strides, pads (top, left, bottom,
                right), dilations, group                   ONNX Conv
    add         two or more activations                   y = x1 + x2 + ...
    concat      activations, along the channels (axis 1)
    affine      `fn` (add, sub, rsub: c - x, mul, div) with a constant c, broadcast
    relu, leakyrelu (alpha), prelu (slope), clip (lo, hi: ReLU6 is clip 0..6)
    maxpool, avgpool    kernel, strides, pads, dilations, ceil_mode, count_include_pad
    globalavgpool, pad (pads per per-sample axis, constant value)
    flatten, reshape (shape), transpose (perm), slice (axes, starts, stops, steps),
    gather (axis, indices, index_shape): data movement on the per-sample axes

Axes in parameters count the per-sample axes only (0 = the first axis after the
batch). Linear and conv nodes carry the products the digit planes compute; every
other node is exact or rounds once in float64 (ops.py), and is piecewise linear,
so a resolution's increments flow through it as through a dense layer. The
output holds the logits: per sample a vector of K scores, or (K, 1, ..., 1) as
exporters write a classifier that ends in a 1 x 1 convolution or a global pool
(read as the K scores; K = 1 is one logit). The op lists and the shape rules are
in operators.py.
"""
import json
from dataclasses import dataclass, field

import numpy as np

from lrmpi.errors import InputError
from lrmpi.nn.operators import HEADS, LINEAR_OPS, OPS, ShapeError, output_shape
from lrmpi.numerics.buffers import file_region


@dataclass
class Node:
    op: str
    inputs: list
    output: str
    params: dict = field(default_factory=dict)
    name: str = ""

    def where(self):
        return f"node {self.name or self.output!r} ({self.op})"

    def __getstate__(self):
        # to the ranks: parameters that float32 holds exactly (ONNX weights) travel as
        # float32 and become the same float64 values on arrival: half the bytes of a
        # model's broadcast (not for weights a BatchNorm was folded into, in float64)
        return {**self.__dict__, "params": {k: _narrowed(v) for k, v in self.params.items()}}

    def __setstate__(self, state):
        params = {k: np.asarray(v.values, np.float64) if isinstance(v, _Float32) else v
                  for k, v in state["params"].items()}
        self.__dict__.update({**state, "params": params})

    def shape(self, shapes):
        """The per-sample shape this node writes from inputs of `shapes`, or an
        InputError naming the node."""
        try:
            return output_shape(self, shapes)
        except ShapeError as exc:
            raise InputError(f"model: {self.where()}: shapes do not fit "
                             f"({', '.join(str(tuple(s)) for s in shapes)}: {exc})") from None


@dataclass
class _Float32:
    values: np.ndarray  # float32, equal to the float64 parameter it stands for


def _narrowed(v):
    if isinstance(v, np.ndarray) and v.dtype == np.float64 and v.size > 1024:
        if file_region(v) is not None:  # mapped from the cache: travels as its file's name
            return v
        head = v.reshape(-1)[:1024]
        if not np.array_equal(head.astype(np.float32), head):  # folded BatchNorm, say:
            return v  # no 200 MB conversion on the root before every broadcast
        v32 = v.astype(np.float32)
        if np.array_equal(v32, v):
            return _Float32(v32)
    return v


@dataclass
class Graph:
    input: str
    input_shape: tuple            # per sample
    nodes: list                   # topological order
    output: str                   # the logits
    head: str = None              # softmax | sigmoid | None (raw scores)
    shapes: dict = field(default_factory=dict)  # per-sample shape of every tensor

    @property
    def linear(self):
        return [n for n in self.nodes if n.op in LINEAR_OPS]

    def validate(self, shapes=None, finite=True):
        """Check the graph (ops, names, parameters) and fill in every tensor's shape
        (`shapes`: known already, e.g. kept with a cached copy of this graph;
        `finite=False`: the parameters are known to be finite)."""
        known = {self.input}
        if not any(n.op in LINEAR_OPS for n in self.nodes):
            raise InputError("model: no Dense/Gemm/MatMul or Conv node")
        for n in self.nodes:
            if n.op not in OPS:
                raise InputError(f"model: {n.where()}: unknown op {n.op!r}")
            missing = [t for t in n.inputs if t not in known]
            if missing:
                raise InputError(f"model: {n.where()} reads {missing[0]!r}, which no earlier "
                                 "node writes (the nodes must be in topological order)")
            for key in ("W", "b", "c", "slope") if finite else ():
                v = n.params.get(key)
                if v is not None and not np.all(np.isfinite(v)):
                    raise InputError(f"model: {n.where()} has NaN or Inf in {key}")
            known.add(n.output)
        if self.output not in known:
            raise InputError(f"model: output {self.output!r} is not written by any node")
        if self.head not in (None,) + HEADS:
            raise InputError(f"model: unknown head {self.head!r}")
        if shapes is None:
            shapes = {self.input: tuple(int(d) for d in self.input_shape)}
            for n in self.nodes:
                shapes[n.output] = n.shape([shapes[t] for t in n.inputs])
        self.shapes = shapes
        out = shapes[self.output]
        if not out or any(d != 1 for d in out[1:]):
            raise InputError(f"model: the output {self.output!r} has per-sample shape {out}; "
                             "expected scores: a vector (K,) or (K, 1, ..., 1)")
        if self.head == "sigmoid" and out[0] != 1:
            raise InputError("model: a sigmoid head needs one logit per sample")
        return self

    @property
    def outputs(self):
        """K: the logits per sample."""
        return self.shapes[self.output][0]


# --- lrmpi's own weight file: JSON description + arrays, nothing pickled ---

def save(graph, path):
    np.savez(path, **to_arrays(graph))


def to_arrays(graph, narrow=True):
    """The graph as arrays: a JSON description (`graph`) and the parameters'
    arrays (what save writes and load_npz / from_arrays read); with `narrow`,
    float32 for the parameters it holds exactly (half the bytes; readers convert)."""
    desc, arrays = [], {}
    for i, n in enumerate(graph.nodes):
        params = {}
        for k, v in n.params.items():
            if isinstance(v, np.ndarray):
                # float32 where that holds the values exactly (ONNX weights): half the
                # bytes to read; readers convert to float64, the same values
                v32 = v.astype(np.float32) if narrow else None
                arrays[f"node{i}.{k}"] = v32 if narrow and np.array_equal(v32, v) else v
            else:
                params[k] = list(v) if isinstance(v, tuple) else v
        desc.append({"op": n.op, "inputs": n.inputs, "output": n.output, "name": n.name,
                     "params": params})
    meta = {"input": graph.input, "input_shape": list(graph.input_shape), "output": graph.output,
            "head": graph.head, "nodes": desc}
    return {"graph": np.array(json.dumps(meta)), **arrays}


def from_arrays(f):
    """The graph of to_arrays' output (any mapping of names to arrays), validated."""
    meta = json.loads(str(f["graph"]))
    names = list(f.keys()) if hasattr(f, "keys") else f.files
    nodes = []
    for i, d in enumerate(meta["nodes"]):
        params = {k: tuple(v) if isinstance(v, list) else v for k, v in d["params"].items()}
        for key in names:
            if key.startswith(f"node{i}."):
                params[key.split(".", 1)[1]] = np.asarray(f[key], np.float64)
        nodes.append(Node(d["op"], list(d["inputs"]), d["output"], params, d.get("name", "")))
    return Graph(meta["input"], tuple(meta["input_shape"]), nodes, meta["output"],
                 meta.get("head"))


def load_npz(path):
    try:  # our own handle: numpy leaks it when a damaged zip fails to open
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as f:
            g = from_arrays(f)
    except InputError:
        raise
    except Exception as exc:  # zip, npy and JSON errors of a damaged file (found by fuzzing)
        raise InputError(f"{path}: not a readable lrmpi model file "
                         f"({type(exc).__name__}: {exc})") from None
    return g.validate()


def sequential(layers, input_shape, head=None):
    """A chain of (op, params) as a Graph: x -> t1 -> t2 -> ... (tests, small models)."""
    nodes, prev = [], "x"
    for i, (op, params) in enumerate(layers):
        out = f"t{i}"
        nodes.append(Node(op, [prev], out, dict(params), f"{op}{i}"))
        prev = out
    return Graph("x", tuple(input_shape), nodes, prev, head).validate()
