"""A model's preparation asks should_stop between its steps (every node's digit
planes and norms), and a Stopped it raises ends the preparation at once."""
import numpy as np
import pytest
from test_quantized import MODELS

from lrmpi import config
from lrmpi.errors import Stopped
from lrmpi.nn.engine import PreparedModel


def test_preparation_asks_should_stop_for_every_node_and_stops_when_told():
    name, graph, X = MODELS[3]  # residual-concat-pad-affine: three linear nodes
    asked = []

    def should_stop(what=None):
        asked.append(what)
        return False
    PreparedModel(graph, 7, 3, should_stop=should_stop)
    n = len(graph.linear)
    assert len(asked) >= 2 * n and all(w.startswith("preparing the model") for w in asked)
    assert any("weights of node" in w for w in asked)
    assert any("the bound's norms" in w for w in asked)

    def stop_at_the_second(what=None):
        if len(seen) == 1:
            raise Stopped("received SIGTERM", what)
        seen.append(what)
        return False
    seen = []
    with pytest.raises(Stopped, match=r"received SIGTERM while preparing the model: weights "
                                      r"of node .\w+. \(2 of 3\)"):
        PreparedModel(graph, 7, 3, should_stop=stop_at_the_second)


def test_a_resolution_s_norms_ask_should_stop_too():
    name, graph, X = MODELS[0]
    with config.configure(cache_dir=""):  # computed here, not found in the cache
        model = PreparedModel(graph, 7, 3)
    with pytest.raises(Stopped, match="while preparing resolution 2: the bound's plan and norms"):
        model.prepare(2, should_stop=lambda what=None: (_ for _ in ()).throw(
            Stopped("deadline reached", what)))
    logits, radius = model.prepare(2).evaluate(X, 2)
    assert np.all(np.isfinite(radius))
