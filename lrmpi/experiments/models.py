"""ONNX models of the kinds users bring, with random weights, for tests and benchmarks.

Built with onnx.helper the way exporters write them: Conv + BatchNormalization +
Relu, residual Add, depthwise Conv (group = channels) with Clip (ReLU6), Flatten
as Shape-Gather-Unsqueeze-Concat-Reshape (PyTorch's export), Gemm with transB,
GlobalAveragePool, a Softmax head. He-scaled weights and batch-norm statistics
that keep activations of unit size, so the logits are of a realistic spread.
"""
import numpy as np


class Builder:
    def __init__(self, seed=0, opset=17):
        from onnx import helper  # noqa: F401  (fail early without onnx)
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits, self.n, self.opset = [], [], 0, opset

    def name(self, base):
        self.n += 1
        return f"{base}{self.n}"

    def const(self, array, base="w"):
        from onnx import numpy_helper
        name = self.name(base)
        self.inits.append(numpy_helper.from_array(np.asarray(array, np.float32), name))
        return name

    def node(self, op, inputs, **attrs):
        from onnx import helper
        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def conv(self, x, cin, cout, k=3, stride=1, groups=1, bias=False, pad=None, dilation=1):
        fan_in = cin // groups * k * k
        W = self.rng.standard_normal((cout, cin // groups, k, k)) * np.sqrt(2.0 / fan_in)
        p = k // 2 * dilation if pad is None else pad
        ins = [x, self.const(W)] + ([self.const(self.rng.standard_normal(cout) * 0.1, "b")]
                                   if bias else [])
        return self.node("Conv", ins, kernel_shape=[k, k], strides=[stride, stride],
                         pads=[p, p, p, p], group=groups, dilations=[dilation, dilation])

    def bn(self, x, c):
        r = self.rng
        return self.node("BatchNormalization",
                         [x, self.const(1 + 0.1 * r.standard_normal(c)),
                          self.const(0.1 * r.standard_normal(c)),
                          self.const(0.1 * r.standard_normal(c)),
                          self.const(1 + 0.1 * r.random(c))], epsilon=1e-5)

    def relu(self, x):
        return self.node("Relu", [x])

    def relu6(self, x):
        return self.node("Clip", [x, self.const(np.array(0.0)), self.const(np.array(6.0))])

    def flatten_like_pytorch(self, x):
        from onnx import helper  # noqa: F401
        shape = self.node("Shape", [x])
        first = self.node("Gather", [shape, self.const(np.array(0), "i")], axis=0)
        first = self.node("Unsqueeze", [first, self.const(np.array([0]), "i")])
        target = self.node("Concat", [first, self.const(np.array([-1]), "i")], axis=0)
        return self.node("Reshape", [x, target])

    def dense(self, x, nin, nout):
        W = self.rng.standard_normal((nout, nin)) * np.sqrt(2.0 / nin)
        return self.node("Gemm", [x, self.const(W), self.const(self.rng.standard_normal(nout) * 0.1)],
                         transB=1)

    def model(self, x_name, shape, out, outputs):
        from onnx import TensorProto, helper
        probs = self.node("Softmax", [out], axis=1)
        g = helper.make_graph(
            self.nodes, "model", [helper.make_tensor_value_info(x_name, TensorProto.FLOAT,
                                                                [None, *shape])],
            [helper.make_tensor_value_info(probs, TensorProto.FLOAT, [None, outputs])],
            self.inits)
        # int64 constants for the shape arithmetic
        for t in g.initializer:
            if t.name.startswith("i"):
                from onnx import numpy_helper
                arr = numpy_helper.to_array(t).astype(np.int64)
                t.CopyFrom(numpy_helper.from_array(arr, t.name))
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", self.opset)])


def mlp(sizes=(784, 1024, 1024, 10), seed=0):
    b = Builder(seed)
    h = "x"
    for i, (a, c) in enumerate(zip(sizes[:-1], sizes[1:])):
        h = b.dense(h, a, c)
        if i < len(sizes) - 2:
            h = b.relu(h)
    return b.model("x", (sizes[0],), h, sizes[-1])


def vgg_small(seed=0):
    """3x32x32: conv 32-32, pool, conv 64-64, pool, dense 256-10."""
    b = Builder(seed)
    h = "x"
    for cin, cout in ((3, 32), (32, 32)):
        h = b.relu(b.bn(b.conv(h, cin, cout), cout))
    h = b.node("MaxPool", [h], kernel_shape=[2, 2], strides=[2, 2])
    for cin, cout in ((32, 64), (64, 64)):
        h = b.relu(b.bn(b.conv(h, cin, cout), cout))
    h = b.node("MaxPool", [h], kernel_shape=[2, 2], strides=[2, 2])
    h = b.flatten_like_pytorch(h)
    h = b.relu(b.dense(h, 64 * 8 * 8, 256))
    return b.model("x", (3, 32, 32), b.dense(h, 256, 10), 10)


def _basic_block(b, x, cin, cout, stride):
    h = b.relu(b.bn(b.conv(x, cin, cout, stride=stride), cout))
    h = b.bn(b.conv(h, cout, cout), cout)
    short = x if stride == 1 and cin == cout else \
        b.bn(b.conv(x, cin, cout, k=1, stride=stride, pad=0), cout)
    return b.relu(b.node("Add", [h, short]))


def resnet_small(seed=0, size=16, width=8, classes=10):
    """A stem, a basic block with an identity shortcut, one with a projection (1x1
    conv, stride 2), global average pool, dense."""
    b = Builder(seed)
    h = b.relu(b.bn(b.conv("x", 3, width), width))
    h = _basic_block(b, h, width, width, 1)
    h = _basic_block(b, h, width, 2 * width, 2)
    h = b.node("GlobalAveragePool", [h])
    h = b.node("Flatten", [h], axis=1)
    return b.model("x", (3, size, size), b.dense(h, 2 * width, classes), classes)


def resnet18(seed=0, size=64, classes=10):
    """ResNet-18-sized: stem (conv 7x7/2, max-pool), 4 stages of 2 basic blocks
    (64, 128, 256, 512 channels), global average pool, dense."""
    b = Builder(seed)
    h = b.relu(b.bn(b.conv("x", 3, 64, k=7, stride=2, pad=3), 64))
    h = b.node("MaxPool", [h], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        h = _basic_block(b, h, cin, cout, stride)
        h = _basic_block(b, h, cout, cout, 1)
        cin = cout
    h = b.node("GlobalAveragePool", [h])
    h = b.node("Flatten", [h], axis=1)
    return b.model("x", (3, size, size), b.dense(h, 512, classes), classes)


def resnet_deep(seed=0, size=32, classes=10, blocks=3, widths=(16, 32, 64)):
    """A deep residual net of the CIFAR kind (ResNet-20 with the defaults): a 3x3
    stem, `blocks` basic blocks per stage (stride 2 and a 1x1 projection entering
    stages 2 and 3), global average pool, dense: 1 + 6 blocks + 2 = 21 conv layers
    on 3 x size x size."""
    b = Builder(seed)
    h = b.relu(b.bn(b.conv("x", 3, widths[0]), widths[0]))
    cin = widths[0]
    for i, cout in enumerate(widths):
        for j in range(blocks):
            stride = 2 if i > 0 and j == 0 else 1
            h = _basic_block(b, h, cin, cout, stride)
            cin = cout
    h = b.node("GlobalAveragePool", [h])
    h = b.node("Flatten", [h], axis=1)
    return b.model("x", (3, size, size), b.dense(h, cin, classes), classes)


def mobilenet_small(seed=0, size=16, classes=10):
    """Depthwise-separable blocks (3x3 depthwise, group = channels; 1x1 pointwise)
    with ReLU6, one of stride 2, global average pool, dense."""
    b = Builder(seed)
    h = b.relu6(b.bn(b.conv("x", 3, 16, stride=1), 16))
    for cin, cout, stride in ((16, 32, 1), (32, 32, 2)):
        h = b.relu6(b.bn(b.conv(h, cin, cin, stride=stride, groups=cin), cin))
        h = b.relu6(b.bn(b.conv(h, cin, cout, k=1, pad=0), cout))
    h = b.node("GlobalAveragePool", [h])
    h = b.node("Flatten", [h], axis=1)
    return b.model("x", (3, size, size), b.dense(h, 32, classes), classes)


def save(model, path):
    with open(path, "wb") as f:
        f.write(model.SerializeToString())
    return str(path)
