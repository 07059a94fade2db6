"""Which estimate each linear node gets at a resolution: the precision plan.

The difference bound's radius grows through the depth by the product of the
nodes' Lipschitz constants (operator norms), and what the estimate leaves out at
a node enters the radius there. So a node's estimate must be the more precise
the larger its sensitivity C_l, the Lipschitz bound from its output to the logits
(a backward pass over the graph: a linear node multiplies by S, a ReLU by 1, a
sum passes it to every addend, ...). Per node, relative to its own local error:

    mode p (1..3)  what p digit planes leave out: about KAPPA 2^(-bits p)
    mode "f64"     the float64 evaluation's rounding: about KAPPA 2 (k+1) u A/S
                   2^(bits r) (it is the same size at every resolution, the local
                   error shrinks by 2^-bits per resolution)
    mode 0         no estimate: the whole local error (the operator-norm bound)

and costs (in pair products of the node: one int8 product of its shape)

    mode p: 2 p^2 (u~ W and h dW, each p x p pairs);  "f64": F64_COST;  0: nothing.

`choose` spends at most `budget` x r^2 pair products per sample (the resolution
costs r^2) greedily where sum_l C_l eta_l falls most per pair product, every node
at mode 1 at least (a node without estimate would drop the estimate of all before
it); if even that does not fit, the cheap bound (mode 0 everywhere) stands. It
stops once the estimate's part of a logit's radius is predicted to be a tenth of
the deviation (`tightness`), where more precision changes nothing; `hopeless` says
when even the best affordable plan cannot reach a margin. (docs/design.md,
"Inference")
"""
import math

from lrmpi.nn.lipschitz import lipschitz
from lrmpi.nn.verified import U

KAPPA = 8.0        # measured: p planes leave out ~8 x 2^-(bits p) of a local error
F64_COST = 20.0    # a float64 product in int8 pair products (AMX: 21-25x numpy float64)
MAX_PLANES = 4


def macs(node, shapes):
    """Multiply-adds of one pair product of a linear/conv node, per sample."""
    W = node.params["W"]
    per_output = 1
    for d in W.shape[1:]:
        per_output *= int(d)
    out = 1
    for d in shapes[node.output]:
        out *= int(d)
    return per_output * out


def sensitivities(graph, operator):
    """{tensor: C}, the Lipschitz bound of the logits in a tensor (l2 to the logits'
    l2); `operator(node)` is a linear node's operator norm."""
    C = {graph.output: 1.0}
    for node in reversed(graph.nodes):
        c = C.get(node.output, 0.0)
        if not c:
            continue
        L = operator(node) if node.op in ("linear", "conv") else \
            lipschitz(node, (1,) + tuple(graph.shapes[node.inputs[0]]))[0]
        for t in node.inputs:
            C[t] = C.get(t, 0.0) + c * L
    return C


def eta(mode, node_norms, r, bits, level="tight"):
    """What a mode's estimate leaves out of the node's local error (a fraction)."""
    if mode == 0:
        return 1.0
    if mode == "f64":
        S = max(node_norms.operator(level), 1e-300)
        return KAPPA * 2 * (node_norms.k + 1) * U * node_norms.A / S * 2.0 ** (bits * r)
    return KAPPA * 2.0 ** (-bits * mode)


def cost(mode):
    return 0.0 if mode == 0 else F64_COST if mode == "f64" else 2.0 * mode * mode


def choose(graph, norms, r, bits, budget, with_f64=False, lower=False):
    """(plan {node output: mode}, predicted estimate error / layers, cost fraction of
    the resolution's products). `lower`: from lower bounds of the operator norms
    (no factorisation: NodeNorms.lower), an optimistic prediction that tells whether
    the tight norms are worth computing at all."""
    nodes = graph.linear
    if not nodes:
        return {}, 0.0, 0.0
    sens = sensitivities(graph, (lambda n: norms.nodes[n.output].lower()) if lower else
                         (lambda n: norms.nodes[n.output].operator("tight")))
    level = "cheap" if lower else "tight"  # f64's share: A / S, S from above when optimistic
    w = {n.output: macs(n, graph.shapes) for n in nodes}
    total = sum(w.values()) * r * r
    allowed = budget * total
    plan = {n.output: 1 for n in nodes}
    spent = sum(cost(1) * w[n.output] for n in nodes)
    if spent > allowed or 53 // bits - r < 1:
        plan = {n.output: 0 for n in nodes}
        return plan, _error(plan, nodes, sens, norms, r, bits, level), 0.0
    # the estimate's part of a logit's radius is about the layers' summed errors
    # (err x layers) spread over the last linear node's inputs (a logit sees their
    # norm: sqrt(inputs) x an entry), the true deviation about sqrt(layers) local
    # errors: precision beyond a tenth of it changes nothing
    limit = 0.1 / (tightness(graph, 1.0) - 1)
    while _error(plan, nodes, sens, norms, r, bits, level) > limit:
        best = None
        for n in nodes:
            for m in _upgrades(plan[n.output], r, bits, with_f64):
                extra = (cost(m) - cost(plan[n.output])) * w[n.output]
                if extra <= 0 or spent + extra > allowed:
                    continue
                nn_ = norms.nodes[n.output]
                gain = sens.get(n.output, 0.0) * (eta(plan[n.output], nn_, r, bits, level)
                                                  - eta(m, nn_, r, bits, level))
                if gain > 0 and (best is None or gain / extra > best[0]):
                    best = (gain / extra, n.output, m, extra)
        if best is None:
            break
        plan[best[1]] = best[2]
        spent += best[3]
    return plan, _error(plan, nodes, sens, norms, r, bits, level), spent / total


def _upgrades(mode, r, bits, with_f64):
    out = []
    if mode != "f64":
        out += [p for p in range(mode + 1, min(MAX_PLANES, 53 // bits - r) + 1)]
    if with_f64 and mode != "f64":
        out.append("f64")
    return out


def _error(plan, nodes, sens, norms, r, bits, level="tight"):
    return sum(sens.get(n.output, 0.0) * eta(plan[n.output], norms.nodes[n.output], r, bits,
                                             level) for n in nodes) / len(nodes)


def tightness(graph, err):
    """The radius over the deviation a plan's predicted error amounts to (module
    docstring): 1 + err sqrt(layers x the last linear node's inputs)."""
    nodes = graph.linear
    inputs = 1
    for d in graph.shapes[nodes[-1].inputs[0]]:
        inputs *= int(d)
    return 1 + err * math.sqrt(len(nodes) * inputs)


HOPELESS = 0.3  # predicted radius / logit range beyond which no margin is reached


def hopeless(graph, err, r, bits, slack=1.0):
    """Whether a bound of that predicted tightness cannot certify at resolution r:
    the deviation is about 8 2^(-bits r) of the logits' range (measured on the bench
    models: 5e-4 to 2e-3 at r = 2) and margins seldom exceed a third of the range;
    the prediction is rough (measured 0.3x to 25x the true tightness on the bench
    models), so a wasted pass costs time, never validity. `slack`: that many times
    beyond it (for an optimistic prediction)."""
    return tightness(graph, err) * 8 * 2.0 ** (-bits * r) > HOPELESS * slack


def planes_needed(plan, r):
    """The q of W - Q_q(W) whose norms a plan at resolution r reads."""
    qs = {r}
    for mode in plan.values():
        if mode not in (0, "f64"):
            qs.update((mode, r + mode))
    return sorted(qs)
