"""Rigorous bounds on the logits of a resolution, and certified decisions.

A sample's radius bounds |logits_r - logits_f| per logit, logits_f the float
model's (the float64 evaluation of the imported graph, ops.forward), through the
difference of the two networks (difference.py): an estimate of the difference
carried through the graph with cheap exact products, plus a rigorous radius for
what the estimate leaves out. How precise each node's estimate is at a resolution
(plan.py) is decided once per resolution, on rank 0, within a budget of the
resolution's products (config bound_budget); where even the cheapest estimate
does not fit (resolution 1), the operator-norm bound (mode 0: no products) stands.
The norms they need (norms.py) are computed once per model, kept in the cache
folder and shipped to the ranks with the plan.

A decision is certified when the top class's lower end is above every other
class's upper end (one sigmoid logit: the interval excludes 0): then it is the
float model's decision. Every sample's bound depends on that sample alone (the
plan is one per resolution), so results do not depend on batches or ranks.

Module map (imports go one way: verified <- norms <- plan, difference <- certify):
verified.py (verified linear algebra), norms.py (per-node norms and their cache),
plan.py (the precision plan), difference.py (the tracker), certify.py (this).
"""
import numpy as np

from lrmpi import config
from lrmpi.log import logger
from lrmpi.nn import ops, plan as P
from lrmpi.nn.difference import DiffTracker, EstimateWeights
from lrmpi.nn.norms import ModelNorms


class Bounds:
    """The bound machinery of a prepared model: norms, the estimates' weights and
    one plan per resolution. `prepare(r)` runs on rank 0 before resolution r is
    shared out; `values(r)` / `use(r, v)` carry its result to the other ranks."""

    def __init__(self, graph, weights, bits, budget=None, should_stop=None):
        self.graph, self.bits = graph, bits
        self.budget = config.get().bound_budget if budget is None else budget
        self.norms = ModelNorms(graph, weights, should_stop)
        self.estimates = {n.output: EstimateWeights(n, bits) for n in graph.linear}
        self.plans = {}     # r -> (plan, predicted error, cost fraction, level)

    def prepare(self, r, should_stop=None):
        """Choose resolution r's plan and compute the norms it reads (cached)."""
        if r in self.plans:
            return self.plans[r]
        level = "cheap"
        plan = {n.output: 0 for n in self.graph.linear}
        err, spent = None, 0.0
        if self._fits(r):
            self.norms.prepare([], "tight", should_stop)   # S: the sensitivities
            plan, err, spent = P.choose(self.graph, self.norms, r, self.bits, self.budget,
                                        config.get().bound_f64)
            level = "tight" if any(m != 0 for m in plan.values()) else "cheap"
        self.norms.prepare(P.planes_needed(plan, r), level, should_stop)
        self.plans[r] = (plan, err, spent, level)
        _log_plan(r, plan, err, spent, self.budget)
        return self.plans[r]

    def _fits(self, r):
        """Whether the cheapest estimate (one plane everywhere: 2 pair products per
        node, against r^2) fits the budget at all."""
        return self.budget > 0 and P.cost(1) <= self.budget * r * r and 53 // self.bits > r

    def values(self, r):
        return {"plan": self.plans.get(r), "norms": self.norms.values()}

    def use(self, r, values):
        if values.get("plan") is not None:
            self.plans[r] = values["plan"]
        self.norms.use(values["norms"])

    def tracker(self, r, n):
        if r not in self.plans:
            self.prepare(r)
        plan, _, _, level = self.plans[r]
        return DiffTracker(self.graph, self.norms, lambda node: self.estimates[node.output],
                           r, self.bits, n, plan, level)

    def __getstate__(self):  # the estimates' planes are made again where they are used
        d = dict(self.__dict__)
        d["estimates"] = {k: EstimateWeights(v.node, v.bits) for k, v in self.estimates.items()}
        return d


def _log_plan(r, plan, err, spent, budget):
    modes = sorted({str(m) for m in plan.values()})
    if err is None:
        logger.info("lrmpi: bounds at resolution %d: the operator-norm bound (the difference "
                    "bound's cheapest estimate costs more than %.2g of the resolution's "
                    "products)", r, budget)
    else:
        logger.info("lrmpi: bounds at resolution %d: difference bound, estimate modes %s, "
                    "predicted estimate error %.2g per layer, cost %.2f of the resolution's "
                    "products", r, ",".join(modes), err, spent)


def certified(logits, radius):
    """Per sample: True if its decision is proven, whatever the logits' errors within
    `radius` (per logit): the top class's lower end above every other's upper end;
    one logit: the interval [z - rho, z + rho] does not contain 0."""
    if logits.shape[1] == 1:
        return np.abs(logits[:, 0]) > radius[:, 0]
    top = logits.argmax(axis=1)
    rows = np.arange(len(logits))
    low = logits[rows, top] - radius[rows, top]
    high = logits + radius
    high[rows, top] = -np.inf
    return low > high.max(axis=1)


def forward_bounded(graph, X, linear, tracker):
    """The pass with the tracker fed at every node: (logits, per-logit radius).
    `linear(node, h)` returns (e, C, z): the per-sample exponents of h's planes, the
    exact product rounded once, and z = C + b."""
    def lin(node, h):
        e, C, z = linear(node, h)
        tracker.linear(node, h, e, C, z)
        return z
    logits = ops.forward(graph, X, lin, after=tracker.other)
    return logits, tracker.logit_radius
