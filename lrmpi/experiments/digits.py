"""Real data and small trained models for demos and tests: scikit-learn's digits.

Nothing is downloaded: load_digits ships inside scikit-learn (1797 8x8 images).
The MLPs are trained by scikit-learn in about a second and exported by
skl2onnx (a real exporter) when it is installed, else built with onnx.helper
from the trained weights. The CNN has fixed random 3x3 filters, a BatchNorm
with the data's statistics (so loading folds it), ReLU, 2x2 max-pool and a
trained logistic-regression head: a small, real, trained ONNX CNN.
"""
import numpy as np

from lrmpi.errors import InputError

TRAIN = 1200  # first TRAIN samples train, the rest test


def load(binary=False):
    """(X (N, 64) in [0, 1], y) — y is even/odd (the paper's task) if binary."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise InputError("the digits data needs scikit-learn (pip install scikit-learn)") \
            from None
    X, y = load_digits(return_X_y=True)
    return X / 16.0, (y % 2 if binary else y)


def mlp_onnx(path, binary=False, hidden=(64, 32), seed=0):
    """Train a ReLU MLP on the digits and write it as ONNX; returns the test split."""
    import warnings

    from sklearn.neural_network import MLPClassifier
    X, y = load(binary)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter
        clf = MLPClassifier(hidden, max_iter=400, random_state=seed).fit(X[:TRAIN], y[:TRAIN])
    try:
        from skl2onnx import to_onnx
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            proto = to_onnx(clf, X[:1].astype(np.float32), options={id(clf): {"zipmap": False}})
    except ImportError:
        proto = _mlp_helper(clf, X.shape[1], binary)
    with open(path, "wb") as f:
        f.write(proto.SerializeToString())
    return X[TRAIN:], y[TRAIN:]


def _mlp_helper(clf, n_in, binary):
    from onnx import TensorProto, helper, numpy_helper
    nodes, inits, name = [], [], "x"
    for i, (W, b) in enumerate(zip(clf.coefs_, clf.intercepts_)):
        inits += [numpy_helper.from_array(W.T.astype(np.float32), f"W{i}"),
                  numpy_helper.from_array(b.astype(np.float32), f"b{i}")]
        nodes.append(helper.make_node("Gemm", [name, f"W{i}", f"b{i}"], [f"z{i}"], transB=1))
        name = f"z{i}"
        if i < len(clf.coefs_) - 1:
            nodes.append(helper.make_node("Relu", [name], [f"a{i}"]))
            name = f"a{i}"
    nodes.append(helper.make_node("Sigmoid" if binary else "Softmax", [name], ["probabilities"],
                                  **({} if binary else {"axis": 1})))
    out_dim = 1 if binary else clf.coefs_[-1].shape[1]
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, n_in])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, out_dim])],
        inits)
    return helper.make_model(graph)


def cnn_onnx(path, channels=8, seed=0):
    """A small CNN on the 8x8 digits (see module docstring); returns the test split."""
    from onnx import TensorProto, helper, numpy_helper
    from sklearn.linear_model import LogisticRegression

    from lrmpi.nn import graph as G
    from lrmpi.nn import ops
    X, y = load()
    imgs = X.reshape(-1, 1, 8, 8)
    rng = np.random.default_rng(seed)
    Wc = rng.standard_normal((channels, 1, 3, 3)) / 3.0
    bc = np.zeros(channels)
    conv = {"W": Wc, "b": bc, "pads": (1, 1, 1, 1)}
    z = ops.forward(G.sequential([("conv", conv), ("flatten", {})], (1, 8, 8)), imgs[:TRAIN])
    z = z.reshape(-1, channels, 8, 8)
    mean, var = z.mean(axis=(0, 2, 3)), z.var(axis=(0, 2, 3))
    scale, shift = np.ones(channels), np.zeros(channels)
    g = scale / np.sqrt(var + 1e-5)  # the batch norm, folded as the importer folds it
    folded = {"W": Wc * g[:, None, None, None], "b": (bc - mean) * g + shift,
              "pads": (1, 1, 1, 1)}
    feats = ops.forward(G.sequential([("conv", folded), ("relu", {}),
                                      ("maxpool", {"kernel": (2, 2)}), ("flatten", {})],
                                     (1, 8, 8)), imgs)
    head = LogisticRegression(max_iter=2000).fit(feats[:TRAIN], y[:TRAIN])
    f32 = np.float32
    inits = [numpy_helper.from_array(a.astype(f32), n) for n, a in [
        ("Wc", Wc), ("bc", bc), ("scale", scale), ("shift", shift), ("mean", mean),
        ("var", var), ("Wd", head.coef_), ("bd", head.intercept_)]]
    nodes = [
        helper.make_node("Conv", ["x", "Wc", "bc"], ["c"], pads=[1, 1, 1, 1],
                         kernel_shape=[3, 3]),
        helper.make_node("BatchNormalization", ["c", "scale", "shift", "mean", "var"], ["n"],
                         epsilon=1e-5),
        helper.make_node("Relu", ["n"], ["r"]),
        helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "Wd", "bd"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1, 8, 8])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 10])], inits)
    with open(path, "wb") as f:
        f.write(helper.make_model(graph).SerializeToString())
    return imgs[TRAIN:], y[TRAIN:]
