"""Layered inference with adaptive, certified refinement. MPI-free.

Resolution r (quantized.py) is evaluated for the samples still active, in
batches; each refined sample gets its logits, scores, decision and a rigorous
bound per logit against the full-precision model (certify.py). Then a rule
decides which samples stay active:

    certified  (default) active while the decision is not proven equal to the
               full-precision model's; a certified decision never differs from it
    gray       the paper's rule: one sigmoid score inside the gray zone, or a
               top-1/top-2 probability margin below `class_margin`
    none       every sample at every resolution

Frozen samples cost nothing afterwards. Every resolution reports how many of the
samples it refined each rule would freeze, and the multiply-adds done against
refining everything. The state (per sample: logits, scores, decision, bound,
certified, active) is all a resume or a re-shard needs: a resolution is
recomputed from the data, so results do not depend on batches or ranks.
"""
import time
from dataclasses import dataclass

import numpy as np

from lrmpi import stages
from lrmpi.errors import ConfigError, InputError
from lrmpi.nn import certify, ops
from lrmpi.nn.fused import FusedModel
from lrmpi.nn.graph import Graph
from lrmpi.nn.quantized import NodeWeights
from lrmpi.numerics import validate

RULES = ("certified", "gray", "none")
# samples per pass: the fused layers block for the caches themselves, so a pass
# only has to make its per-node Python overhead small: thread CPU per sample at
# r = 1 (amx, shared machine) MLP 14.9 us at 256, 13.5 at 1024, 11.8 at 2048,
# 12.1 at 4096; VGG 578 us at 64, 542 at 128 = 545 at 256; ResNet-18 2529 us at
# 16, 2411 at 32 = 2427 at 64 (those two are held to BATCH_MACS anyway)
BATCH = 2048
# ... and at most this many multiply-adds per pass (pair products included): a
# pass is also how long a rank may take to notice a stop (VGG at r = 4 is 0.4 G
# per sample: 256 samples took 30 s on AVX2 and a deadline stop overran)
BATCH_MACS = 4e9
# ... and then, while a pass takes less than half of this (wall seconds), twice the
# samples: MAC-limited batches of deep nets are a few samples (ResNet-18 at r = 3: 3),
# which costs ~15 % CPU per sample against 8 or more (amx, 18.0 vs 21.1 ms); a pass
# this long still notices a stop promptly on every ISA
PASS_S = 0.25


class PreparedModel:
    """A graph with its weights as digit planes and its operator norms (once). The
    weights packed for this rank's kernels (FusedModel) are made where they are
    used, on first use: they are not sent to the other ranks (whose ISA may differ)."""

    def __init__(self, graph, bits=7, planes=4, should_stop=None):
        """`should_stop(what)`: called at least once a second while preparing; it
        raises lrmpi.errors.Stopped when the job must stop (jobs.job.Control)."""
        if not isinstance(graph, Graph):
            raise InputError("model: expected an lrmpi graph (load_model)")
        self.graph = graph
        self.bits, self.planes = validate.bits(bits), validate.planes(planes)
        check = should_stop or _never
        t0 = time.perf_counter()
        self.weights = {}
        for i, n in enumerate(graph.linear):
            check(f"preparing the model: weights of node {n.output!r} "
                  f"({i + 1} of {len(graph.linear)})")
            self.weights[n.output] = NodeWeights(n, self.bits, self.planes)
        t1 = time.perf_counter()
        self.norms = certify.Bounds(graph, self.weights, self.bits, should_stop=_naming(
            should_stop, "preparing the model: the bound's norms"))
        self.timings = {"planes_s": t1 - t0, "norms_s": time.perf_counter() - t1}  # the log's
        self.macs = sum(_macs(n, graph.shapes) for n in graph.linear)  # per sample, 1 pair
        self._fused = None

    def __getstate__(self):
        return {**self.__dict__, "_fused": None}

    @property
    def fused(self):
        if self._fused is None:
            self._fused = FusedModel(self.graph, self.weights, self.bits)
        return self._fused

    def prepare(self, r, should_stop=None):
        """What resolution r needs of the model (its bound's plan and norms): done once,
        before r's samples are shared out, so every rank has it."""
        self.norms.prepare(r, _naming(should_stop, f"preparing resolution {r}: the bound's "
                                                   "plan and norms"))
        return self

    def evaluate(self, X, r, batch=BATCH, stopping=None):
        """(logits, per-logit bound) of samples X at resolution r, at most `batch` at
        a time (the results do not depend on it: every sample is computed on its
        own); None if `stopping()` said so between batches."""
        cap = int(max(1, batch))
        batch = int(max(1, min(cap, BATCH_MACS // max(1.0, self.macs * r * r))))
        out, i = [], 0
        while i < len(X):
            if stopping is not None and i and stopping():
                return None
            t = time.perf_counter()
            out.append(self._evaluate(X[i:i + batch], r))
            i += batch
            if time.perf_counter() - t < PASS_S / 2:
                batch = min(cap, 2 * batch)
        if not out:
            return np.zeros((0, self.graph.outputs)), np.zeros((0, self.graph.outputs))
        return np.concatenate([o[0] for o in out]), np.concatenate([o[1] for o in out])

    def _evaluate(self, X, r):
        # the bound's plan for all samples, a second pass for those worth retrying:
        # both through the fused pass, which feeds the tracker's hook
        return self.norms.evaluate(X, r, lambda X, tracker: self.fused.forward(X, r, tracker),
                                   product=self.fused.product, buffers=self.fused.buffers)


def _never(what=None):
    return False


def _naming(should_stop, what):
    """should_stop for the bound's loops, which call it without an argument: the
    job's message then says what was being prepared."""
    return None if should_stop is None else (lambda: should_stop(what))


def _macs(node, shapes):
    out = shapes[node.output]
    W = node.params["W"]
    per_output = int(np.prod(W.shape[1:]))
    return per_output * int(np.prod(out))


@dataclass(frozen=True, eq=False)
class InferResolution:
    index: int              # 1-based
    planned: int
    refined: np.ndarray     # (n,) bool: refined at this resolution
    work: float             # multiply-adds done (pair products)
    work_all: float         # ... had every sample been refined
    frozen: dict            # rule -> how many of the refined samples it would freeze
    elapsed: float


def decide(graph, logits, probs, gray, class_margin):
    """The paper's rule: True for the samples still uncertain."""
    if logits.shape[1] == 1:
        s = probs[:, 0]
        return (s >= gray[0]) & (s <= gray[1])
    top2 = np.sort(probs, axis=1)[:, -2:]
    return (top2[:, 1] - top2[:, 0]) < class_margin


class LayeredInference:
    """Iterate over the resolutions of a model's decisions on X.

    Parameters
    ----------
    model : graph.Graph or PreparedModel
    X : array (n, *input_shape)
    bits, planes : digit planes of every layer's inputs and weights
    rule : "certified" | "gray" | "none"  (see the module docstring)
    gray : (lo, hi), the binary gray zone;  class_margin : the top-1/top-2 margin
    """

    def __init__(self, model, X, *, bits=7, planes=4, rule="certified", gray=(0.3, 0.6),
                 class_margin=0.1, batch=BATCH):
        if not isinstance(model, PreparedModel):
            model = PreparedModel(model, bits, planes)
        self.model = model
        self.graph = g = model.graph
        self.planes = model.planes
        check_rule(rule, gray, class_margin)
        self.rule, self.gray, self.class_margin, self.batch = rule, tuple(gray), class_margin, batch
        self.X = as_samples(X, g.input_shape)
        n, k = len(self.X), g.outputs
        self.state = {"logits": np.zeros((n, k)), "scores": np.zeros((n, k)),
                      "predicted": np.zeros(n, np.int64), "bound": np.full(n, np.inf),
                      "certified": np.zeros(n, bool), "active": np.ones(n, bool),
                      "next": 1}

    @property
    def planned(self):
        return self.planes

    def load_state(self, state):
        """Continue from a state saved after some resolution."""
        self.state = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in state.items()}

    def __iter__(self):
        while self.state["next"] <= self.planes:
            yield self.step()

    def step(self, run=None):
        """Resolution state["next"] for the active samples. `run(r, chunks)`: the
        (logits, bounds) of each chunk of sample indices (default: here, in order),
        or None when the job must stop; then step returns None and changes nothing."""
        t0 = time.perf_counter()
        st, r = self.state, self.state["next"]
        idx = np.flatnonzero(st["active"])
        chunks = [idx[i:i + self.batch] for i in range(0, len(idx), self.batch)]
        if run is None:
            results = [self.model.evaluate(self.X[c], r, self.batch) for c in chunks]
        else:
            results = run(r, chunks)
            if results is None:
                return None
        refined = np.zeros(len(self.X), bool)
        frozen = {rule: 0 for rule in RULES}
        for rows, (logits, radius) in zip(chunks, results):
            self._record(rows, logits, radius, frozen)
            refined[rows] = True
        if r == self.planes:
            st["active"][:] = False
        st["next"] = r + 1
        work = float(len(idx)) * self.model.macs * r * r
        return InferResolution(r, self.planes, refined, work,
                               float(len(self.X)) * self.model.macs * r * r, frozen,
                               time.perf_counter() - t0)

    def _record(self, rows, logits, radius, frozen):
        st, g = self.state, self.graph
        probs = ops.scores(g, logits)
        cert = certify.certified(logits, radius)
        unsure = decide(g, logits, probs, self.gray, self.class_margin)
        st["logits"][rows], st["scores"][rows] = logits, probs
        st["predicted"][rows] = ops.decisions(g, logits)
        st["bound"][rows] = radius.max(axis=1)
        st["certified"][rows] = cert
        frozen["certified"] += int(cert.sum())
        frozen["gray"] += int((~unsure).sum())
        keep = {"certified": ~cert, "gray": unsure, "none": np.ones(len(rows), bool)}[self.rule]
        st["active"][rows] = keep


def check_rule(rule, gray, class_margin):
    """ConfigError unless the rule's options are valid (before any work)."""
    if rule not in RULES:
        raise ConfigError(f"rule must be one of {', '.join(RULES)}; got {rule!r}")
    if not (0.0 <= gray[0] <= gray[1] <= 1.0):
        raise ConfigError(f"gray zone must satisfy 0 <= lo <= hi <= 1, got {gray}")
    if not 0.0 <= class_margin <= 1.0:
        raise ConfigError(f"class margin must be in 0..1, got {class_margin}")


def as_samples(X, input_shape):
    """X as samples of the model's input shape. Accepted: samples of exactly that
    shape, or (D19) a flat vector per sample of the right size (N, prod(shape)), read
    in C order; anything else is refused rather than reshaped. float32 and float64
    are kept as they are (float32 converts to float64 exactly, batch by batch: half
    the memory and the bytes sent to the ranks), other real types become float64."""
    X = np.asarray(X)
    if X.ndim < 2:
        raise InputError(f"data: expected samples x features, got shape {X.shape}")
    if X.dtype == object or X.dtype == bool or not (np.issubdtype(X.dtype, np.floating)
                                                    or np.issubdtype(X.dtype, np.integer)):
        raise InputError(f"data: dtype {X.dtype} is not a real numeric type")
    shape = tuple(input_shape)
    size = int(np.prod(shape))
    if X.shape[1:] != shape:
        if X.ndim != 2 or X.shape[1] != size:
            hint = f"; one sample? give it the samples axis: shape {(1,) + shape}" \
                if X.shape == shape else ""
            raise InputError(f"data: samples of shape {X.shape[1:]}, the model expects "
                             f"{shape} (or a flat vector of {size} values per sample){hint}")
        X = X.reshape((len(X),) + shape)
    X = np.ascontiguousarray(X, X.dtype if X.dtype in (np.float32, np.float64) else np.float64)
    flat = X.reshape(-1)
    for i in range(0, flat.size, 1 << 22):  # in slices: no mask of X's size
        if not np.all(np.isfinite(flat[i:i + (1 << 22)])):
            raise InputError("data: contains NaN or Inf")
    return X
