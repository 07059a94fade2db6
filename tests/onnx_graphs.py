"""ONNX graphs for the tests: small hand-made ones, and the model zoo's classic
architectures as the ONNX package ships them (onnx/backend/test/data/light),
with random weights in place of their constant ones."""
import os

import numpy as np
import pytest


def model(path, nodes, inits, in_shape, outputs=("y",), opset=17, in_name="x"):
    """Write a model with one data input `in_name` (symbolic batch) to `path`."""
    from onnx import TensorProto, helper, numpy_helper
    g = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(in_name, TensorProto.FLOAT,
                                                   [None, *in_shape])],
        [o if not isinstance(o, str) else helper.make_tensor_value_info(o, TensorProto.FLOAT, None)
         for o in outputs],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = min(m.ir_version, 8)  # onnxruntime reads IR <= 8 at opset <= 17
    with open(path, "wb") as f:
        f.write(m.SerializeToString())
    return str(path)


def node(op, ins, out, name=None, **attrs):
    from onnx import helper
    outs = out if isinstance(out, list) else [out]
    return helper.make_node(op, ins, outs, name=outs[0] if name is None else name, **attrs)


def ort_run(path, X, outputs=None):
    """onnxruntime float32's outputs (all, or those named) on X."""
    ort = pytest.importorskip("onnxruntime")
    so = ort.SessionOptions()
    so.log_severity_level = 3
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return s.run(outputs, {s.get_inputs()[0].name: X.astype(np.float32)})


def external_model(folder, seed, location="w.bin"):
    """A Gemm + Add model, folder/m.onnx, whose weights lie in folder/`location` (ONNX
    external data)."""
    import onnx
    from onnx import external_data_helper
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    path = model(os.path.join(folder, "m.onnx"),
                 [node("Gemm", ["x", "W"], "z", transB=1), node("Add", ["z", "b"], "y")],
                 {"W": rng.standard_normal((3, 4)).astype(np.float32),
                  "b": rng.standard_normal(3).astype(np.float32)}, (4,))
    proto = onnx.load(path)
    external_data_helper.convert_model_to_external_data(proto, location=location,
                                                        size_threshold=0)
    onnx.save(proto, path)
    return path


# --- the model zoo's classic graphs ---

ZOO = ("squeezenet", "densenet121", "resnet50", "inception_v2", "shufflenet")


def zoo_source(name):
    onnx = pytest.importorskip("onnx")
    path = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light",
                        f"light_{name}.onnx")
    if not os.path.exists(path):
        pytest.skip(f"this onnx package does not ship {os.path.basename(path)}")
    return path


def zoo_model(name, folder, seed=0, batch=True):
    """The zoo graph `name` with random He-style weights (each ConstantOfShape
    output becomes an initializer fitting the slot it feeds), written to
    folder/name.onnx; with `batch`, the batch axis is symbolic and Reshape targets
    that hard-code batch 1 take the batch (a leading 1 becomes 0: "copy"). Also
    lists the logits (the softmax's input, if any) as an output, for comparison.
    Returns (path, input shape per sample, logits output name)."""
    import onnx
    from onnx import numpy_helper
    m = onnx.load(zoo_source(name))
    g = m.graph
    rng = np.random.default_rng(seed)
    shapes = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    slot = {}
    for n in g.node:
        for i, t in enumerate(n.input):
            slot.setdefault(t, (n.op_type, i))
    for n in g.node:  # a parameter reshaped first: the role of what it becomes
        if n.op_type == "Unsqueeze" and n.output[0] in slot:
            slot[n.input[0]] = slot[n.output[0]]
    keep, inits = [], []
    for n in g.node:
        if n.op_type != "ConstantOfShape":
            keep.append(n)
            continue
        shape = tuple(int(x) for x in shapes[n.input[0]])
        inits.append(numpy_helper.from_array(_weights(rng, shape, *slot[n.output[0]]),
                                             n.output[0]))
    used = {t for n in keep for t in n.input}
    old = [t for t in g.initializer if t.name in used]
    del g.node[:]
    g.node.extend(keep)
    del g.initializer[:]
    g.initializer.extend(old + inits)
    names = {t.name for t in g.initializer}
    data = [i for i in g.input if i.name not in names and i.name in used]
    del g.input[:]
    g.input.extend(data)
    x = g.input[0]
    if batch:
        x.type.tensor_type.shape.dim[0].dim_param = "N"
        for o in g.output:
            o.type.tensor_type.shape.dim[0].dim_param = "N"
        for t in g.initializer:
            if any(n.op_type == "Reshape" and n.input[1] == t.name for n in keep):
                v = numpy_helper.to_array(t).copy()
                if v[0] == 1:
                    v[0] = 0
                    t.CopyFrom(numpy_helper.from_array(v, t.name))
    logits = g.output[0].name
    last = [n for n in keep if logits in n.output][0]
    if last.op_type == "Softmax":
        logits = last.input[0]
        g.output.append(onnx.helper.make_tensor_value_info(logits, onnx.TensorProto.FLOAT,
                                                           None))
    path = os.path.join(str(folder), f"{name}.onnx")
    onnx.save(m, path)
    return path, tuple(d.dim_value for d in x.type.tensor_type.shape.dim[1:]), logits


def _weights(rng, shape, op, slot):
    """Random weights for the input `slot` of an `op` node: He-style for conv and
    dense weights (std sqrt(2 / fan-in)), normalisation parameters near identity,
    small biases."""
    f = np.float32
    if op == "Conv" and slot == 1 or op == "Gemm" and slot == 1:
        fan_in = int(np.prod(shape[1:]))
        return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(f)
    if op == "BatchNormalization":
        if slot in (1,):    # scale
            return (1 + 0.1 * rng.standard_normal(shape)).astype(f)
        if slot == 4:       # variance
            return (1 + 0.2 * rng.random(shape)).astype(f)
        return (0.1 * rng.standard_normal(shape)).astype(f)
    if op == "Mul":
        return (1 + 0.1 * rng.standard_normal(shape)).astype(f)
    return (0.05 * rng.standard_normal(shape)).astype(f)
