"""ONNX models -> lrmpi.model.Model (the chain from the input to the score output).

Supported operators: Gemm, MatMul(+Add), Conv(+Add), BatchNormalization (folded
into the linear layer before it), Relu, LeakyRelu, MaxPool, AveragePool,
Flatten, Reshape to (N, -1), Sigmoid, Softmax; Cast, Identity and Dropout are
skipped, and a binary classifier's Concat([1 - p, p]) is read as the score p. Nodes not on the path to the score output (e.g. a label branch with
ArgMax) are ignored. External data must stay inside the model's folder.
"""
import os

import numpy as np

from lrmpi.errors import InputError
from lrmpi.nn import model as M

SKIPPED = {"Cast", "Identity", "Dropout"}


def load(path):
    try:
        import onnx
        from onnx import numpy_helper
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
        g = proto.graph
        inits = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in g.initializer}
        producers = {out: node for node in g.node for out in node.output}
        inputs = [i for i in g.input if i.name not in inits]
        if len(inputs) != 1:
            raise InputError(f"{path}: expected one data input, found {len(inputs)}")
        chain = _chain(path, g, producers, inits, inputs[0].name)
        layers = _convert(path, chain, inits)
        dims = [d.dim_value for d in inputs[0].type.tensor_type.shape.dim][1:]
        return M.Model(layers, tuple(dims)).validate()
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


def _score_output(g):
    outs = list(g.output)
    for o in outs:
        if "prob" in o.name.lower():
            return o.name
    floats = [o for o in outs if o.type.tensor_type.elem_type in (1, 10, 11)]  # float types
    return (floats or outs)[0].name


def _chain(path, g, producers, inits, input_name):
    """Nodes from the data input to the score output, in order."""
    chain, name = [], _score_output(g)
    while name != input_name:
        node = producers.get(name)
        if node is None:
            raise InputError(f"{path}: tensor {name!r} has no producer and is not the input")
        data = [i for i in node.input if i and i not in inits]
        if node.op_type == "Concat" and len(data) == 2:
            # a binary classifier's [1 - p, p] (skl2onnx): follow p, keep one score
            first = producers.get(data[0])
            if first is not None and first.op_type == "Sub" and data[1] in first.input:
                name = data[1]
                continue
        if node.op_type == "ZipMap":
            # skl2onnx's default classifier output: a map per sample of the probability
            # tensor that feeds it: use that tensor
            name = node.input[0]
            continue
        chain.append(node)
        if not data:
            raise InputError(f"{path}: node {node.name or node.op_type!r} has no data input")
        name = data[0]
    return chain[::-1]


def _attrs(node):
    from onnx import helper
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _convert(path, chain, inits):
    layers = []

    def where(node):
        return f"{path}: node {node.name or '?'} ({node.op_type})"

    for node in chain:
        op, a = node.op_type, _attrs(node)
        params = [inits[i] for i in node.input if i in inits]
        if op in SKIPPED:
            continue
        if op == "Gemm":
            if a.get("transA", 0):
                raise InputError(f"{where(node)}: transA=1 is not supported")
            W = params[0] if a.get("transB", 0) else params[0].T
            b = params[1] if len(params) > 1 else np.zeros(W.shape[0])
            layers.append(M.Dense(W * a.get("alpha", 1.0), b * a.get("beta", 1.0)))
        elif op == "MatMul":
            layers.append(M.Dense(params[0].T.copy(), np.zeros(params[0].shape[1])))
        elif op == "Add":
            if not layers or not isinstance(layers[-1], M.LINEAR) or not params:
                raise InputError(f"{where(node)}: Add is supported only as the bias of a "
                                 "MatMul/Conv")
            layers[-1].b = layers[-1].b + params[0].reshape(-1)
        elif op == "Conv":
            if a.get("group", 1) != 1 or any(d != 1 for d in a.get("dilations", [1, 1])):
                raise InputError(f"{where(node)}: grouped or dilated convolution is not supported")
            W = params[0]
            b = params[1] if len(params) > 1 else np.zeros(W.shape[0])
            p = a.get("pads", [0, 0, 0, 0])
            layers.append(M.Conv2d(W, b, tuple(a.get("strides", [1, 1])),
                                   (p[0], p[1], p[2], p[3])))
        elif op == "BatchNormalization":
            if not layers or not isinstance(layers[-1], M.LINEAR):
                raise InputError(f"{where(node)}: BatchNormalization must follow Conv/Gemm")
            scale, bias, mean, var = params[:4]
            M.fold_batchnorm(layers[-1], scale, bias, mean, var, a.get("epsilon", 1e-5))
        elif op == "Relu":
            layers.append(M.ReLU())
        elif op == "LeakyRelu":
            layers.append(M.LeakyReLU(float(a.get("alpha", 0.01))))
        elif op in ("MaxPool", "AveragePool"):
            if any(a.get("pads", [0])) or a.get("ceil_mode", 0):
                raise InputError(f"{where(node)}: padded or ceil-mode pooling is not supported")
            k = tuple(a["kernel_shape"])
            cls = M.MaxPool if op == "MaxPool" else M.AvgPool
            layers.append(cls(k, tuple(a.get("strides", k))))
        elif op in ("Flatten", "Reshape"):
            layers.append(M.Flatten())
        elif op == "Sigmoid":
            layers.append(M.Sigmoid())
        elif op == "Softmax":
            layers.append(M.Softmax())
        else:
            raise InputError(f"{where(node)}: unsupported ONNX operator {op!r}")
    return layers


def load_model(path):
    """A model from `.onnx` or lrmpi's own `.npz` weights."""
    if not os.path.exists(path):
        raise InputError(f"model: no such file: {path}")
    if path.endswith(".onnx"):
        return load(path)
    if path.endswith(".npz"):
        return M.load_npz(path)
    raise InputError(f"model: {path}: expected a .onnx or .npz file")
