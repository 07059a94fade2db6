"""Piecewise-linear networks: the layers lrmpi infers, and its own weight file.

A Model is a list of layers applied in order to a batch (samples first):
Dense and Conv2d are linear (weights + bias); ReLU, LeakyReLU, MaxPool are
piecewise linear; AvgPool and Flatten are linear without weights; the last
layer may be Softmax or Sigmoid (the scores). BatchNorm is folded into the
linear layer before it when a model is loaded (fold_batchnorm).

lrmpi's own format is an `.npz` with keys `layer{i}.{field}` and a JSON
`layers` description; nothing is pickled.
"""
import json
from dataclasses import dataclass, field

import numpy as np

from lrmpi.errors import InputError


@dataclass
class Dense:
    W: np.ndarray            # (out, in)
    b: np.ndarray            # (out,)


@dataclass
class Conv2d:
    W: np.ndarray            # (out_channels, in_channels, kh, kw)
    b: np.ndarray            # (out_channels,)
    stride: tuple = (1, 1)
    pad: tuple = (0, 0, 0, 0)  # top, left, bottom, right


@dataclass
class ReLU:
    pass


@dataclass
class LeakyReLU:
    alpha: float = 0.01


@dataclass
class MaxPool:
    kernel: tuple = (2, 2)
    stride: tuple = (2, 2)


@dataclass
class AvgPool:
    kernel: tuple = (2, 2)
    stride: tuple = (2, 2)


@dataclass
class Flatten:
    pass


@dataclass
class Softmax:
    pass


@dataclass
class Sigmoid:
    pass


LINEAR = (Dense, Conv2d)
ACTIVATIONS = (ReLU, LeakyReLU)
OUTPUTS = (Softmax, Sigmoid)
KINDS = {cls.__name__: cls for cls in (Dense, Conv2d, ReLU, LeakyReLU, MaxPool, AvgPool,
                                        Flatten, Softmax, Sigmoid)}


@dataclass
class Model:
    layers: list = field(default_factory=list)
    input_shape: tuple = ()   # per sample: (features,) or (channels, height, width)

    @property
    def output(self):
        """'softmax', 'sigmoid' or None (raw scores)."""
        last = self.layers[-1] if self.layers else None
        return type(last).__name__.lower() if isinstance(last, OUTPUTS) else None

    def validate(self):
        if not self.layers or not any(isinstance(l, LINEAR) for l in self.layers):
            raise InputError("model: no Dense or Conv layer")
        for i, layer in enumerate(self.layers):
            if isinstance(layer, OUTPUTS) and i != len(self.layers) - 1:
                raise InputError(f"model: {type(layer).__name__} is only supported as the "
                                 "last layer")
            if isinstance(layer, LINEAR):
                for name in ("W", "b"):
                    arr = getattr(layer, name)
                    if not np.all(np.isfinite(arr)):
                        raise InputError(f"model: layer {i} ({type(layer).__name__}) has "
                                         f"NaN or Inf in {name}")
        return self


def forward(model, X, weights=None):
    """One-shot float64 forward pass (the reference the layered pass must match).

    weights: optional list of (W, b) replacing those of the linear layers, in order.
    """
    h = np.asarray(X, np.float64)
    it = iter(weights) if weights is not None else None
    for layer in model.layers:
        if isinstance(layer, LINEAR):
            W, b = next(it) if it is not None else (layer.W, layer.b)
            h = linear(layer, h, W) + bias_shape(layer, b)
        else:
            h = apply(layer, h)
    return h


def bias_shape(layer, b):
    return b[None, :, None, None] if isinstance(layer, Conv2d) else b[None, :]


def linear(layer, h, W):
    """The layer's linear map with weights W, no bias: h @ W.T or a convolution."""
    if isinstance(layer, Dense):
        return h @ W.T
    return conv2d(h, W, layer.stride, layer.pad)


def conv2d(x, W, stride, pad):
    """Cross-correlation (as ONNX Conv) of x (N, C, H, W) with W (O, C, kh, kw), via im2col."""
    N, C, H, Wd = x.shape
    O, _, kh, kw = W.shape
    t, l, b, r = pad
    if any(pad):
        x = np.pad(x, ((0, 0), (0, 0), (t, b), (l, r)))
    win = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))
    win = win[:, :, ::stride[0], ::stride[1]]              # (N, C, Ho, Wo, kh, kw)
    Ho, Wo = win.shape[2], win.shape[3]
    cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(N * Ho * Wo, C * kh * kw)
    out = cols @ W.reshape(O, -1).T                         # (N*Ho*Wo, O)
    return out.reshape(N, Ho, Wo, O).transpose(0, 3, 1, 2)


def _pool(x, kernel, stride, reduce):
    win = np.lib.stride_tricks.sliding_window_view(x, kernel, axis=(2, 3))
    win = win[:, :, ::stride[0], ::stride[1]]
    return reduce(win, axis=(4, 5))


def apply(layer, h):
    """A layer without weights (activation, pooling, flatten, output)."""
    if isinstance(layer, ReLU):
        return np.maximum(h, 0.0)
    if isinstance(layer, LeakyReLU):
        return np.where(h >= 0, h, layer.alpha * h)
    if isinstance(layer, MaxPool):
        return _pool(h, layer.kernel, layer.stride, np.max)
    if isinstance(layer, AvgPool):
        return _pool(h, layer.kernel, layer.stride, np.mean)
    if isinstance(layer, Flatten):
        return h.reshape(h.shape[0], -1)
    if isinstance(layer, Softmax):
        z = h - h.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)
    if isinstance(layer, Sigmoid):
        return 1.0 / (1.0 + np.exp(-h))
    raise TypeError(f"not a weightless layer: {layer!r}")


def fold_batchnorm(layer, scale, bias, mean, var, eps):
    """The linear layer followed by BatchNorm as one linear layer (inference mode)."""
    g = scale / np.sqrt(var + eps)
    shape = (-1,) + (1,) * (layer.W.ndim - 1)
    layer.W = layer.W * g.reshape(shape)
    layer.b = (layer.b - mean) * g + bias
    return layer


# --- lrmpi's own weight file ---

def save(model, path):
    desc, arrays = [], {}
    for i, layer in enumerate(model.layers):
        d = {"kind": type(layer).__name__}
        for k, v in vars(layer).items():
            if isinstance(v, np.ndarray):
                arrays[f"layer{i}.{k}"] = v
            else:
                d[k] = list(v) if isinstance(v, tuple) else v
        desc.append(d)
    np.savez(path, layers=np.array(json.dumps({"layers": desc,
                                                "input_shape": list(model.input_shape)})),
             **arrays)


def load_npz(path):
    try:  # our own handle: numpy leaks it when a damaged zip fails to open
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as f:
            meta = json.loads(str(f["layers"]))
            layers = []
            for i, d in enumerate(meta["layers"]):
                kind = d.pop("kind")
                if kind not in KINDS:
                    raise InputError(f"{path}: layer {i}: unknown kind {kind!r}")
                cls = KINDS[kind]
                kw = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
                for name in ("W", "b"):
                    if f"layer{i}.{name}" in f:
                        kw[name] = np.asarray(f[f"layer{i}.{name}"], np.float64)
                layers.append(cls(**kw))
            return Model(layers, tuple(meta.get("input_shape", ()))).validate()
    except InputError:
        raise
    except Exception as exc:  # zip, npy and JSON errors of a damaged file (found by fuzzing)
        raise InputError(f"{path}: not a readable lrmpi model file "
                         f"({type(exc).__name__}: {exc})") from None
