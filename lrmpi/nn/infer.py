"""Layered-resolution inference with adaptive refinement. MPI-free.

Inputs (per sample) and weights (per output unit / channel) are split into
digit planes; resolution r uses X_r and W_r, their truncations to r planes
(biases stay exact). Each linear layer keeps its pre-activations Z and moves
from resolution r-1 to r with

    dZ = W_{r-1} dh + (W_r - W_{r-1}) (h + dh),    Z <- Z + dZ

where h is the layer's input at r-1 and dh its change; a piecewise-linear
activation (and max-pool) passes on dh' = f(Z + dZ) - f(Z). Hidden states are
float64 and these products use float64 BLAS: measured on this machine, the
int8 kernels only apply to the first layer (the only one whose both operands
are digit planes), and a fixed-point grid for hidden states would change the
model. Invariant: the scores at resolution r equal the one-shot float64
forward pass with X_r and W_r, up to float64 rounding (tests: rtol 1e-10).

Adaptive resolution: after each resolution only samples whose decision is
still uncertain are refined — binary (one sigmoid output): score inside the
gray zone [lo, hi] (default [0.3, 0.6], as in the paper); multi-class: top-1
minus top-2 probability below `margin`. Frozen samples cost nothing further.
Each resolution also carries a bound on every refined sample's score error
against the full-precision model, by interval propagation of the truncation
errors (|X - X_r| < 2^(e - b r), |W - W_r| < 2^(e_row - b r); activations and
max-pool are 1-Lipschitz; softmax p_i moves by at most p_i (e^(2 d) - 1) for
logits moving by d; sigmoid by d / 4), up to float64 rounding.
"""
import time
from dataclasses import dataclass

import numpy as np

from lrmpi.errors import ConfigError, InputError
from lrmpi.nn import model as M
from lrmpi.numerics import planes as P
from lrmpi.numerics import validate


@dataclass(frozen=True, eq=False)
class InferResolution:
    index: int            # 1-based
    planned: int
    scores: np.ndarray    # (N, outputs): current scores of every sample
    predicted: np.ndarray  # (N,) int
    refined: np.ndarray   # (N,) bool: refined at this resolution
    active: np.ndarray    # (N,) bool: still uncertain after it (refined next)
    bound: np.ndarray     # (N,) bound on each sample's score error (vs full precision)
    work: float           # multiply-adds done at this resolution
    work_all: float       # ... had every sample been refined
    elapsed: float


class Quantized:
    """A tensor split into planes, rows as scaling units, and its truncations."""

    def __init__(self, X2d, bits, planes, name):
        self.shape = X2d.shape
        amax, bad = P.kernels.rowmax(X2d)
        validate.finite(bad, name)
        self.enc = P.encode(X2d, bits, planes, exps=P.exponents(X2d, amax=amax))
        self.bits = bits

    def upto(self, r):
        return P.dequantize(self.enc, r) if r > 0 else np.zeros(self.shape)

    def trunc_error(self, r):
        """Per-row bound on |X - X_r| (strict): 2^(e - b r)."""
        return np.ldexp(1.0, self.enc.exps.astype(np.int64) - self.bits * r)


def decide(scores, gray, margin):
    """(predicted class, uncertain?) for each sample."""
    if scores.shape[1] == 1:  # one sigmoid score
        s = scores[:, 0]
        return (s > 0.5).astype(np.int64), (s >= gray[0]) & (s <= gray[1])
    top2 = np.sort(scores, axis=1)[:, -2:]
    return scores.argmax(axis=1), (top2[:, 1] - top2[:, 0]) < margin


class LayeredInference:
    """Iterate over the resolutions of a model's predictions on X.

    Parameters
    ----------
    model : lrmpi.model.Model
    X : array (N, *model.input_shape)
    bits, planes : digit planes of inputs and weights
    adaptive : refine only uncertain samples after each resolution
    gray : (lo, hi), the binary gray zone;  margin : multi-class top-1/top-2 margin
    """

    def __init__(self, model, X, *, bits=7, planes=4, adaptive=True, gray=(0.3, 0.6),
                 margin=0.1):
        self.model = model.validate()
        self.bits, self.planes = validate.bits(bits), validate.planes(planes)
        if not (0.0 <= gray[0] <= gray[1] <= 1.0):
            raise ConfigError(f"gray zone must satisfy 0 <= lo <= hi <= 1, got {gray}")
        if not 0.0 <= margin <= 1.0:
            raise ConfigError(f"margin must be in 0..1, got {margin}")
        self.adaptive, self.gray, self.margin = adaptive, tuple(gray), margin
        X = np.asarray(X)
        if X.ndim < 2:
            raise InputError(f"data: expected samples x features, got shape {X.shape}")
        flat = X.reshape(X.shape[0], int(np.prod(X.shape[1:])))
        flat = validate.operand(flat, "data") if len(X) else flat.astype(np.float64)
        if model.input_shape and X.shape[1:] != tuple(model.input_shape):
            if int(np.prod(model.input_shape)) != flat.shape[1]:
                raise InputError(f"data: samples of shape {X.shape[1:]}, the model expects "
                                 f"{tuple(model.input_shape)}")
        self.sample_shape = tuple(model.input_shape) or X.shape[1:]
        self.X = flat
        self.N = flat.shape[0]
        self.linear = [l for l in model.layers if isinstance(l, M.LINEAR)]
        self.qx = Quantized(flat, self.bits, self.planes, "data")
        self.qw = [Quantized(np.ascontiguousarray(l.W.reshape(l.W.shape[0], -1)), self.bits,
                             self.planes, f"model weights of layer {i}")
                   for i, l in enumerate(self.linear)]

    @property
    def planned(self):
        return self.planes

    def one_shot(self, r):
        """Reference: the float64 forward pass with X_r and W_r (biases exact)."""
        Xr = self.qx.upto(r).reshape((self.N,) + self.sample_shape)
        ws = [(q.upto(r).reshape(l.W.shape), l.b) for q, l in zip(self.qw, self.linear)]
        return M.forward(self.model, Xr, ws)

    def __iter__(self):
        """Every resolution from the next one on (all `planes`, in lockstep across ranks:
        a shard whose samples are all frozen yields resolutions that refine nothing)."""
        t0 = time.perf_counter()
        shape = (self.N,) + self.sample_shape
        st = self.state
        for r in range(st["next"], self.planes + 1):
            idx = np.flatnonzero(st["active"])
            x_prev = self.qx.upto(r - 1).reshape(shape)
            x_r = self.qx.upto(r).reshape(shape)
            w_prev = [q.upto(r - 1).reshape(l.W.shape) for q, l in zip(self.qw, self.linear)]
            w_r = [q.upto(r).reshape(l.W.shape) for q, l in zip(self.qw, self.linear)]
            refined = np.zeros(self.N, bool)
            work = 0.0
            if len(idx):
                out, rho, work = self._step(idx, r, x_prev, x_r, w_prev, w_r, st["Z"])
                st["scores"][idx] = out
                st["bound"][idx] = rho
                pred, unsure = decide(out, self.gray, self.margin)
                st["predicted"][idx] = pred
                refined[idx] = True
                if self.adaptive and r < self.planes:
                    st["active"][:] = False
                    st["active"][idx[unsure]] = True
            if r == self.planes:
                st["active"][:] = False
            st["next"] = r + 1
            yield InferResolution(r, self.planes, st["scores"].copy(), st["predicted"].copy(),
                                  refined, st["active"].copy(), st["bound"].copy(), work,
                                  self._work(self.N, r), time.perf_counter() - t0)

    @property
    def state(self):
        """Everything needed to continue exactly: per-layer pre-activations, scores,
        decisions, bounds, the active set and the next resolution."""
        if not hasattr(self, "_state"):
            Z = []
            shapes, n_out = self._shapes()
            for layer, (in_shape, _) in zip(self.linear, shapes):
                out = M.linear(layer, np.zeros((1,) + in_shape), layer.W)
                z = np.empty((self.N,) + out.shape[1:])
                z[:] = M.bias_shape(layer, layer.b)[0]
                Z.append(z)
            self._state = {"Z": Z, "scores": np.zeros((self.N, n_out)),
                           "predicted": np.zeros(self.N, np.int64),
                           "bound": np.full(self.N, np.inf), "active": np.ones(self.N, bool),
                           "next": 1}
        return self._state

    def load_state(self, state):
        """Continue from a state() saved after some resolution."""
        self._state = state

    def _shapes(self):
        """Once: [(input shape, multiply-adds per sample)] of each linear layer, and
        the number of outputs (one zero sample through the model)."""
        if not hasattr(self, "_shape_cache"):
            linear, h = [], np.zeros((1,) + self.sample_shape)
            for layer in self.model.layers:
                if isinstance(layer, M.LINEAR):
                    out = M.linear(layer, h, layer.W)
                    linear.append((h.shape[1:], self._macs(layer, 1, out.shape, 1)))
                    h = out
                else:
                    h = M.apply(layer, h)
            self._shape_cache = (linear, h.shape[1])
        return self._shape_cache

    # --- one resolution for the samples idx ---
    def _step(self, idx, r, x_prev, x_r, w_prev, w_r, Z):
        h = x_prev[idx]
        dh = x_r[idx] - h
        # truncation error of the input, per sample, as an elementwise radius
        rho = np.broadcast_to(self.qx.trunc_error(r)[idx].reshape((-1,) + (1,) * len(
            self.sample_shape)), dh.shape)
        work, li = 0.0, 0
        for layer in self.model.layers:
            if isinstance(layer, M.LINEAR):
                W0, W1 = w_prev[li], w_r[li]
                h_new = h + dh
                dZ = M.linear(layer, h_new, W1 - W0)
                if r > 1:
                    dZ = dZ + M.linear(layer, dh, W0)
                z_old = Z[li][idx]
                z_new = z_old + dZ
                Z[li][idx] = z_new
                rho = self._radius(layer, li, r, h_new, rho)
                work += self._macs(layer, len(idx), dZ.shape, 2 if r > 1 else 1)
                h, dh = z_old, dZ
                li += 1
            elif isinstance(layer, M.OUTPUTS):
                logits = h + dh
                p = M.apply(layer, logits)
                d = rho.reshape(len(idx), int(np.prod(rho.shape[1:]))).max(axis=1)
                if isinstance(layer, M.Softmax):
                    bnd = np.minimum(1.0, p.max(axis=1) * np.expm1(2 * d))
                else:
                    bnd = np.minimum(1.0, d / 4)
                return p, bnd * (1 + 1e-9), work
            else:
                old = M.apply(layer, h)
                new = M.apply(layer, h + dh)
                h, dh = old, new - old
                if isinstance(layer, M.MaxPool):
                    rho = M.apply(layer, rho)
                elif isinstance(layer, (M.AvgPool, M.Flatten)):
                    rho = M.apply(layer, rho)
        return h + dh, rho.reshape(len(idx), int(np.prod(rho.shape[1:]))).max(axis=1) * (1 + 1e-9), work

    def _radius(self, layer, li, r, h_new, rho):
        """|true Z - Z_r| bound from the input radius and the weight truncation."""
        W1 = self.qw[li].upto(r).reshape(layer.W.shape)
        eps = self.qw[li].trunc_error(r)            # per output unit / channel
        a = np.abs(h_new) + rho
        if isinstance(layer, M.Dense):
            return rho @ np.abs(W1).T + a.sum(axis=1, keepdims=True) * eps[None, :]
        ones = np.ones((1,) + layer.W.shape[1:])
        return (M.conv2d(rho, np.abs(W1), layer.stride, layer.pad)
                + M.conv2d(a, ones, layer.stride, layer.pad) * eps[None, :, None, None])

    @staticmethod
    def _macs(layer, n, out_shape, products):
        per = int(np.prod(layer.W.shape[1:]))
        return float(products) * n * int(np.prod(out_shape[1:])) * per

    def _work(self, n, r):
        """Multiply-adds of one resolution for n samples (two products per linear
        layer after the first resolution, one at the first)."""
        per_sample = sum(macs for _, macs in self._shapes()[0])
        return float(2 if r > 1 else 1) * n * per_sample
