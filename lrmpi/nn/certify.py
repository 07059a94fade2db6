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

Module map (imports go one way, to certify): verified.py (verified linear algebra),
norms.py (per-node norms and their cache), lipschitz.py, plan.py (the precision
plan), estimate.py (the estimate's products), difference.py (the tracker), certify.py.
Invariants: docs/design.md, "Inference".
"""
import time

import numpy as np

from lrmpi import config
from lrmpi.log import logger
from lrmpi.nn import ops, plan as P
from lrmpi.nn.difference import DiffTracker
from lrmpi.nn.estimate import EstimateWeights
from lrmpi.nn.norms import TIGHT_CHEAP, ModelNorms

HOPELESS_SLACK = 100.0  # an optimistic prediction this far beyond hopeless: no tight norms
RETRY_SHRINK = 0.5    # a retry plan predicted to shrink the error less than this: none


class Bounds:
    """The bound machinery of a prepared model: norms, the estimates' weights and
    one plan per resolution. `prepare(r)` runs on rank 0 before resolution r is
    shared out; `values(r)` / `use(r, v)` carry its result to the other ranks."""

    def __init__(self, graph, weights, bits, budget=None, should_stop=None):
        self.graph, self.bits = graph, bits
        self.budget = config.get().bound_budget if budget is None else budget
        self.norms = ModelNorms(graph, weights, should_stop)
        self.estimates = {n.output: EstimateWeights(n, bits) for n in graph.linear}
        self.retry_budget = config.get().bound_retry
        self.plans = {}     # r -> (plan, predicted error, cost fraction, level)
        self.retries = {}   # r -> the same, of the retry plan (None: no retry)
        self.cost = {}      # r -> samples, retried, CPU seconds (this rank's share)

    def prepare(self, r, should_stop=None):
        """Choose resolution r's plan and compute the norms it reads (cached)."""
        if r in self.plans:
            return self.plans[r]
        # mode 0 everywhere: with the tight norms where they cost little (small models)
        level = "tight" if self.norms.tight_cost <= TIGHT_CHEAP else "cheap"
        cheap = ({n.output: 0 for n in self.graph.linear}, None, 0.0, level)
        self.plans[r], self.retries[r], why = cheap, None, "budget"
        skip = self._hopeless_anyway(r) if self._fits(r) else "budget"
        if skip:
            why = skip
        else:
            self.norms.prepare([], "tight", should_stop)   # S: the sensitivities
            f64 = config.get().bound_f64
            plan, err, spent = P.choose(self.graph, self.norms, r, self.bits, self.budget, f64)
            retry = None
            if self.retry_budget > self.budget:
                rplan, rerr, rspent = P.choose(self.graph, self.norms, r, self.bits,
                                               self.retry_budget, f64)
                if rerr < err:
                    retry = (rplan, rerr, rspent, "tight")
            best = retry[1] if retry else err
            if P.hopeless(self.graph, best, r, self.bits):
                why = f"predicted tightness {P.tightness(self.graph, best):.2g}"
            elif retry and P.hopeless(self.graph, err, r, self.bits):
                # the budget's plan could certify none: the cheapest plan of the budgets
                # doubled up to the retry's that is predicted to reach the margins comes
                # first (the retry's behind it), else the retry plan alone
                self.plans[r], self.retries[r] = self._cheapest(r, retry, f64)
            else:
                self.plans[r], self.retries[r] = (plan, err, spent, "tight"), retry
        plan, err, spent, level = self.plans[r]
        qs = set(P.planes_needed(plan, r))
        if self.retries[r]:
            qs.update(P.planes_needed(self.retries[r][0], r))
        self.norms.prepare(sorted(qs), level, should_stop)
        _log_plan(r, self.plans[r], self.retries[r], self.budget, why)
        return self.plans[r]

    def _cheapest(self, r, retry, f64):
        """(plan, retry) when the budget's plan is predicted hopeless and the retry's
        is not (measured, ResNet-18-sized at r = 3: the plan of budget 1 certified
        every sample at 0.62x the CPU of the retry budget's plan, 2)."""
        b = 2 * self.budget
        while b < self.retry_budget:
            plan, err, spent = P.choose(self.graph, self.norms, r, self.bits, b, f64)
            if not P.hopeless(self.graph, err, r, self.bits):
                # only with a retry that _worth_retrying can use (less than half the
                # error): a sample this plan does not certify still gets the retry's
                if retry[1] >= RETRY_SHRINK * err:
                    break
                return (plan, err, spent, "tight"), retry
            b *= 2
        return retry, None

    def _hopeless_anyway(self, r):
        """Why the tight norms are not worth computing at resolution r, or None: even
        the operator norms' lower bounds predict a hopeless bound, by a wide margin (a
        cold ResNet-50's tight norms took 13-34 s, for a bound predicted at 5e20 times
        the deviation). A function of the model alone, as every choice of a bound is:
        tight norms in the cache change nothing here (design.md, "Inference")."""
        _, err, _ = P.choose(self.graph, self.norms, r, self.bits,
                             max(self.budget, self.retry_budget), config.get().bound_f64,
                             lower=True)
        if P.hopeless(self.graph, err, r, self.bits, slack=HOPELESS_SLACK):
            return (f"predicted tightness at least {P.tightness(self.graph, err):.2g}, from "
                    "the operator norms' lower bounds")
        return None

    def _fits(self, r):
        """Whether the cheapest estimate (one plane everywhere: 2 pair products per
        node, against r^2) fits the budget at all."""
        return self.budget > 0 and P.cost(1) <= self.budget * r * r and 53 // self.bits > r

    def summary(self, r):
        """What resolution r's bound was, for its record (HDF5 attributes)."""
        plan, err, spent, _ = self.plans[r]
        retry = self.retries.get(r)
        return {"bound_method": "operator-norm" if err is None else "difference",
                "bound_cost": float(spent),
                "bound_retry_cost": float(retry[2]) if retry else 0.0}

    def values(self, r):
        return {"plan": self.plans.get(r), "retry": self.retries.get(r),
                "norms": self.norms.values()}

    def use(self, r, values):
        if values.get("plan") is not None:
            self.plans[r], self.retries[r] = values["plan"], values.get("retry")
        self.norms.use(values["norms"])

    def tracker(self, r, n, retry=False, product=None, buffers=None):
        if r not in self.plans:
            self.prepare(r)
        plan, _, _, level = self.retries[r] if retry else self.plans[r]
        return DiffTracker(self.graph, self.norms, lambda node: self.estimates[node.output],
                           r, self.bits, n, plan, level, product, buffers)

    def evaluate(self, X, r, forward, product=None, buffers=None):
        """(logits, radius) of the samples X at resolution r: the resolution's plan for
        all, then the retry plan for those it did not certify but would have if what
        its estimate leaves out shrank as the retry plan predicts (a decision on the
        sample's own values: it does not depend on the batch). `forward(X, tracker)`
        is the resolution's pass feeding the tracker's hook (nn-interface: any pass
        that calls tracker.linear / tracker.other in graph order), returning logits;
        `product`: the estimate's products through the pass's kernels, `buffers` the
        pass's reused arrays (DiffTracker)."""
        tracker = self.tracker(r, len(X), product=product, buffers=buffers)
        logits, radius = forward(X, tracker), tracker.logit_radius
        again = self._worth_retrying(r, logits, radius, tracker.logit_estimate)
        cost = self.cost.setdefault(r, {"samples": 0, "retried": 0, "bound_s": 0.0,
                                        "retry_s": 0.0})
        cost["samples"] += len(X)
        cost["bound_s"] += tracker.seconds
        if np.any(again):
            t = time.thread_time()
            t2 = self.tracker(r, int(again.sum()), retry=True, product=product,
                              buffers=buffers)   # the first pass's arrays are read by now
            forward(X[again], t2)
            r2 = t2.logit_radius
            radius = radius.copy()
            radius[again] = np.minimum(radius[again], r2)
            cost["retried"] += int(again.sum())
            cost["retry_s"] += time.thread_time() - t   # its forward pass included
        return logits, radius

    def _worth_retrying(self, r, logits, radius, estimate):
        n = len(logits)
        retry = self.retries.get(r)
        if retry is None or estimate is None or retry[1] is None or not self.plans[r][1]:
            return np.zeros(n, bool)
        shrink = retry[1] / self.plans[r][1]
        if shrink >= RETRY_SHRINK:
            return np.zeros(n, bool)
        est = np.abs(estimate)
        predicted = est + 2 * shrink * np.maximum(radius - est, 0.0)
        return ~certified(logits, radius) & certified(logits, predicted)

    def __getstate__(self):  # the estimates' planes are made again where they are used
        d = dict(self.__dict__)
        d["estimates"] = {k: EstimateWeights(v.node, v.bits) for k, v in self.estimates.items()}
        return d


def _log_plan(r, plan, retry, budget, why):
    plan, err, spent, _ = plan
    if err is None:
        reason = (f"the difference bound's cheapest estimate costs more than {budget:.2g} of "
                  "the resolution's products") if why == "budget" else (
            f"the difference bound cannot reach the margins at this resolution ({why})")
        logger.info("lrmpi: bounds at resolution %d: the operator-norm bound stands (%s)",
                    r, reason)
        return
    modes = sorted({str(m) for m in plan.values()})
    again = "" if retry is None else (
        f"; samples it does not certify but a finer estimate would: modes "
        f"{','.join(sorted({str(m) for m in retry[0].values()}))}, error {retry[1]:.2g}, "
        f"cost {retry[2]:.2f} more")
    logger.info("lrmpi: bounds at resolution %d: difference bound, estimate modes %s, "
                "predicted estimate error %.2g per layer, cost %.2f of the resolution's "
                "products%s", r, ",".join(modes), err, spent, again)


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
