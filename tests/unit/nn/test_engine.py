"""The layered inference engine: rules, work, resume, and agreement with onnxruntime
on the models users bring (ResNet- and MobileNet-style graphs)."""

import numpy as np
import pytest

from lrmpi.errors import ConfigError, InputError
from lrmpi.nn import graph as G
from lrmpi.nn import ops
from lrmpi.nn.engine import LayeredInference, PreparedModel


def mlp(rng, d=16, h=24, k=5, head="softmax"):
    return G.sequential([("linear", {"W": rng.standard_normal((h, d)) / 4,
                                     "b": rng.standard_normal(h) * 0.1}), ("relu", {}),
                         ("linear", {"W": rng.standard_normal((k, h)) / 5,
                                     "b": rng.standard_normal(k) * 0.1})], (d,), head=head)


def test_rules_refine_what_they_promise_and_count_the_work(rng):
    g = mlp(rng)
    X = rng.standard_normal((300, 16))
    for rule in ("certified", "gray", "none"):
        eng = LayeredInference(g, X, planes=3, rule=rule)
        prev_active = np.ones(len(X), bool)
        for res in eng:
            st = eng.state
            np.testing.assert_array_equal(res.refined, prev_active)
            assert res.work == pytest.approx(res.refined.sum() * eng.model.macs * res.index ** 2)
            assert res.work_all == pytest.approx(len(X) * eng.model.macs * res.index ** 2)
            if rule == "certified":  # a certified sample is never refined again
                assert not np.any(st["active"] & st["certified"])
            if rule == "none" and res.index < 3:
                assert st["active"].all()
            prev_active = st["active"].copy()
        assert not eng.state["active"].any()


def test_a_resumed_engine_finishes_identically(rng):
    g = mlp(rng)
    X = rng.standard_normal((120, 16))
    full = LayeredInference(g, X, planes=4, rule="none")
    list(full)
    part = LayeredInference(g, X, planes=4, rule="none")
    next(iter(part)), next(iter(part))
    saved = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in part.state.items()}
    again = LayeredInference(g, X, planes=4, rule="none")
    again.load_state(saved)
    list(again)
    for key in ("logits", "scores", "predicted", "bound", "certified"):
        np.testing.assert_array_equal(again.state[key], full.state[key])


def test_the_batch_size_changes_nothing(rng):
    g = mlp(rng)
    X = rng.standard_normal((70, 16))
    a = LayeredInference(g, X, planes=2, batch=7)
    b = LayeredInference(g, X, planes=2, batch=256)
    list(a), list(b)
    np.testing.assert_array_equal(a.state["logits"], b.state["logits"])
    np.testing.assert_array_equal(a.state["bound"], b.state["bound"])


def test_bad_options_and_data(rng):
    g = mlp(rng)
    with pytest.raises(ConfigError, match="rule must be one of"):
        LayeredInference(g, np.ones((2, 16)), rule="sometimes")
    with pytest.raises(InputError, match="samples of shape"):
        LayeredInference(g, np.ones((2, 15)))
    with pytest.raises(InputError, match="NaN or Inf"):
        LayeredInference(g, np.full((2, 16), np.nan))


@pytest.mark.parametrize("build", ["resnet_small", "mobilenet_small"])
def test_agrees_with_onnxruntime_on_graphs_users_bring(build, tmp_path):
    """A stem, basic blocks with identity and projection shortcuts, global average
    pooling (ResNet-style); depthwise + pointwise blocks with ReLU6 (MobileNet-style):
    the last resolution decides as onnxruntime float32 does, the certified samples as
    the float64 model does."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from lrmpi.experiments import models
    from lrmpi.nn.onnx_import import load_model
    path = models.save(getattr(models, build)(seed=3), tmp_path / f"{build}.onnx")
    g = load_model(path)
    X = np.random.default_rng(4).standard_normal((400, 3, 16, 16))
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    want = sess.run(None, {"x": X.astype(np.float32)})[0].argmax(axis=1)
    f64 = ops.decisions(g, ops.forward(g, X))
    eng = LayeredInference(PreparedModel(g, 7, 4), X, planes=4)
    list(eng)
    got = eng.state["predicted"]
    assert np.mean(got == want) >= 0.999
    cert = eng.state["certified"]
    assert cert.sum() > 0.9 * len(X)
    np.testing.assert_array_equal(got[cert], f64[cert])
