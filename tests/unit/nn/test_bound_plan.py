"""The precision plan, the per-model norms, their cache and the ranks' copies."""
import logging

import numpy as np
import pytest
from bound_cases import graphs

from lrmpi import config
from lrmpi.nn import certify, ops, plan as P
from lrmpi.nn import graph as G
from lrmpi.nn.engine import PreparedModel
from lrmpi.nn.norms import TIGHT_CHEAP, ModelNorms

GRAPHS = graphs(np.random.default_rng(3))


def _chain(rng, widths=(8, 16, 16, 16, 4)):
    layers = []
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [("linear", {"W": rng.standard_normal((b, a)), "b": np.zeros(b)}), ("relu", {})]
    return G.sequential(layers[:-1], (widths[0],))


def test_sensitivities_multiply_along_a_chain_and_add_over_branches():
    g = _chain(np.random.default_rng(1))
    model = PreparedModel(g, 7, 4)
    S = {n.output: model.norms.norms.nodes[n.output].operator("tight") for n in g.linear}
    C = P.sensitivities(g, lambda n: S[n.output])
    names = [n.output for n in g.linear]
    assert C[names[-1]] == 1.0
    assert C[names[-2]] == pytest.approx(S[names[-1]])
    assert C[names[0]] == pytest.approx(S[names[-1]] * S[names[-2]] * S[names[-3]])
    res = GRAPHS[2][1]   # x feeds a conv and the residual sum: both paths count
    Sr = {n.output: 2.0 for n in res.linear}
    Cr = P.sensitivities(res, lambda n: Sr[n.output])
    assert Cr["x"] > Cr["s"] * 2.0


@pytest.mark.parametrize("budget", [0.5, 1.0, 3.0])
def test_the_plan_fits_its_budget_and_resolution_1_keeps_the_cheap_bound(budget):
    g = _chain(np.random.default_rng(2))
    b = certify.Bounds(g, PreparedModel(g, 7, 4).weights, 7, budget=budget)
    for r in (1, 2, 3, 4):
        plan, err, spent, level = b.prepare(r)
        assert spent <= budget + 1e-12
        if P.cost(1) > budget * r * r or r == 1:   # r = 1: also predicted hopeless
            small = b.norms.tight_cost <= TIGHT_CHEAP  # small models: tight norms anyway
            assert set(plan.values()) == {0} and level == ("tight" if small else "cheap")
        else:
            assert min(plan.values()) >= 1 and level == "tight"
    with config.configure(bound_budget=0.0):
        off = certify.Bounds(g, PreparedModel(g, 7, 4).weights, 7)
        assert set(off.prepare(3)[0].values()) == {0}


def test_more_budget_buys_precision_where_the_sensitivity_is_largest():
    g = _chain(np.random.default_rng(3), widths=(8, 32, 32, 32, 32, 4))
    w = PreparedModel(g, 7, 4).weights
    plan, err, spent, _ = certify.Bounds(g, w, 7, budget=0.3).prepare(3)
    rich, err2, _, _ = certify.Bounds(g, w, 7, budget=6.0).prepare(3)
    names = [n.output for n in g.linear]
    assert plan[names[0]] >= plan[names[-1]]        # the first layer is the most sensitive
    assert sum(rich.values()) > sum(plan.values()) and err2 < err


def test_ranks_with_the_shipped_values_compute_identical_bounds():
    name, g, X = GRAPHS[1]
    root, rank = PreparedModel(g, 7, 4), PreparedModel(g, 7, 4)
    for r in (1, 2, 3):
        root.prepare(r)
        rank.norms.use(r, root.norms.values(r))
        a, b = root.evaluate(X, r), rank.evaluate(X, r)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])


def test_norms_come_back_from_the_cache_and_bounds_do_not_depend_on_it(tmp_path):
    name, g, X = GRAPHS[2]
    with config.configure(cache_dir=str(tmp_path)):
        first = PreparedModel(g, 7, 4)
        got = [first.evaluate(X, r) for r in (1, 2, 3)]
        again = PreparedModel(g, 7, 4)     # warm cache: nothing to compute
        norms = again.norms.norms.nodes
        assert all("tight" in nn_.S for nn_ in norms.values())
        for r, (lg, rad) in zip((1, 2, 3), got):
            lg2, rad2 = again.evaluate(X, r)
            np.testing.assert_array_equal(rad, rad2)
    with config.configure(cache_dir=""):
        cold = PreparedModel(g, 7, 4)
        for r, (lg, rad) in zip((1, 2, 3), got):
            np.testing.assert_array_equal(rad, cold.evaluate(X, r)[1])


def test_norm_preparation_honours_should_stop():
    name, g, X = GRAPHS[1]
    calls = []

    def stop():
        calls.append(1)
        return len(calls) > 2

    with config.configure(cache_dir=""):
        norms = ModelNorms(g, PreparedModel(g, 7, 4).weights)
        with pytest.raises(BaseException) as info:
            norms.prepare([1, 2, 3], "tight", stop)
    assert "stopped" in str(info.value) and len(calls) == 3


def test_each_resolution_logs_which_bound_stands(caplog):
    g = _chain(np.random.default_rng(4))
    b = certify.Bounds(g, PreparedModel(g, 7, 4).weights, 7)
    with caplog.at_level(logging.INFO, logger="lrmpi"):
        b.prepare(1)
        b.prepare(2)
    text = caplog.text
    assert "resolution 1: the operator-norm bound" in text
    assert "resolution 2: difference bound" in text


def test_no_tight_norms_for_a_bound_hopeless_even_from_their_lower_bounds(caplog, monkeypatch):
    """A deep chain of large weights: even the operator norms' lower bounds (row norms)
    predict a bound far beyond any margin at resolutions 2-4, so mode 0 stands and (for
    a model large enough that mode 0 takes the cheap norms) no tight norm is computed (the log says why); a chain of ordinary weights still gets
    them and its difference bound. The choice is the model's: a cache changes nothing."""
    from lrmpi.nn.norms import NodeNorms
    monkeypatch.setattr(certify, "TIGHT_CHEAP", 0)  # as a large model: mode 0 takes cheap norms
    calls = []
    real = NodeNorms._tight
    monkeypatch.setattr(NodeNorms, "_tight", lambda self, *a, **k: calls.append(1) or
                        real(self, *a, **k))
    rng = np.random.default_rng(6)
    layers = []
    for _ in range(24):
        layers += [("linear", {"W": 4 * rng.standard_normal((24, 24)), "b": np.zeros(24)}),
                   ("relu", {})]
    deep = G.sequential(layers[:-1] + [("linear", {"W": rng.standard_normal((3, 24)),
                                                   "b": np.zeros(3)})], (24,))
    with config.configure(cache_dir=""), caplog.at_level(logging.INFO, logger="lrmpi"):
        b = certify.Bounds(deep, PreparedModel(deep, 7, 4).weights, 7)
        for r in (2, 3, 4):
            plan, err, _, _ = b.prepare(r)
            assert set(plan.values()) == {0} and err is None
        assert not calls and "from the operator norms' lower bounds" in caplog.text
        X = rng.standard_normal((5, 24))
        z, rad = PreparedModel(deep, 7, 4).evaluate(X, 2)
        zf = ops.forward(deep, X)
        assert np.all(np.abs(z - zf) <= rad)       # the operator-norm bound, valid
        ordinary = _chain(np.random.default_rng(2))
        plan, err, _, _ = certify.Bounds(ordinary, PreparedModel(ordinary, 7, 4).weights,
                                         7).prepare(2)
        assert calls and err is not None and min(plan.values()) >= 1


def test_a_hopeless_budget_plan_gives_way_to_the_cheapest_plan_predicted_to_certify(
        monkeypatch):
    """The budget's plan predicted hopeless, the retry budget's not: the plan of the
    smallest doubled budget predicted to reach the margins goes first (the retry's
    plan behind it), not the retry's at once (which cost ResNet-18-sized 1.6x more
    bound CPU at r = 3 for the same certified fraction)."""
    g = _chain(np.random.default_rng(3), widths=(8, 32, 32, 32, 32, 32, 4))
    w = PreparedModel(g, 7, 4).weights
    norms = certify.Bounds(g, w, 7).norms
    norms.prepare([], "tight")
    err = {b: P.choose(g, norms, 3, 7, b)[1] for b in (0.5, 1.0, 2.0, 4.0)}
    assert err[0.5] > err[1.0] > err[4.0]
    seen = set()
    for limit, budget in ((err[1.0], 1.0), (err[2.0], 2.0), (err[4.0], 4.0)):
        monkeypatch.setattr(P, "hopeless", lambda graph, e, r, bits, slack=1.0, lim=limit:
                            e > lim * slack * (1 + 1e-12))
        with config.configure(bound_budget=0.5, bound_retry=4.0):
            b = certify.Bounds(g, w, 7)
            plan, e, spent, level = b.prepare(3)
        retry = b.retries[3]
        # the cheaper plan only with a retry the samples it misses can use (half its error)
        if budget < 4.0 and err[4.0] < certify.RETRY_SHRINK * err[budget]:
            assert e == err[budget] and spent <= budget + 1e-12 and retry[1] == err[4.0]
        else:
            assert e == err[4.0] and retry is None
        assert level == "tight"
        seen.add(e)
    assert len(seen) >= 2   # the ladder's plan and the retry's alone both occurred
