"""Shape inference without computing equals the shapes the float model computes;
bad parameters are one error naming the node. (That nn/ imports run one way is
tests/unit/test_layers.py's.)"""
import numpy as np
import pytest
from test_movement import MOVEMENT_MODELS
from test_quantized import MODELS

from lrmpi.errors import InputError
from lrmpi.nn import graph as G
from lrmpi.nn import ops

ALL = MODELS + MOVEMENT_MODELS


@pytest.mark.parametrize("name, graph, X", ALL, ids=[m[0] for m in ALL])
def test_inferred_shapes_equal_computed_shapes(name, graph, X):
    names = [n.output for n in graph.nodes]
    _, kept = ops.forward(graph, X[:2], keep=names)
    for t in names:
        assert graph.shapes[t] == kept[t].shape[1:], t


@pytest.mark.parametrize("layer, why", [
    (("linear", {"W": np.ones((3, 5)), "b": np.zeros(3)}), r"weights \(3, 5\) for inputs of 12"),
    (("linear", {"W": np.ones((3, 12)), "b": np.zeros(1)}), "bias of shape"),
    (("conv", {"W": np.ones((2, 3, 3, 3)), "b": np.zeros(2)}), "on 1 channels"),
    (("conv", {"W": np.ones((2, 1, 5, 5)), "b": np.zeros(2)}), "output would have shape"),
    (("transpose", {"perm": (0, 0, 1)}), "perm"),
    (("slice", {"axes": (3,), "starts": (0,), "stops": (1,), "steps": (1,)}), "slice of axis 3"),
    (("gather", {"axis": 1, "indices": (0, 4), "index_shape": (2,)}), "indices outside 0..2"),
    (("reshape", {"shape": (5,)}), "cannot become"),
    (("affine", {"fn": "mul", "c": np.ones((1, 2, 1, 1))}), "does not broadcast"),
])
def test_a_node_that_does_not_fit_is_one_error_naming_it(layer, why):
    op, params = layer
    layers = [("conv", {"W": np.ones((1, 1, 1, 1)), "b": np.zeros(1)}), layer]
    with pytest.raises(InputError, match=rf"model: node '?{op}1'? \({op}\): shapes do not fit "
                                         rf"\(\(1, 3, 4\): .*{why}"):
        G.sequential(layers + [("flatten", {}), ("linear", {"W": np.ones((2, 12)),
                                                            "b": np.zeros(2)})], (1, 3, 4))


def test_add_does_not_broadcast():
    """A residual sum of tensors of different shapes would replicate one of them:
    its error too, which the bounds do not count. Refused."""
    nodes = [G.Node("globalavgpool", ["x"], "p"), G.Node("add", ["x", "p"], "s"),
             G.Node("flatten", ["s"], "f"),
             G.Node("linear", ["f"], "y", {"W": np.ones((2, 12)), "b": np.zeros(2)})]
    with pytest.raises(InputError, match=r"node 's' \(add\): shapes do not fit .*different"):
        G.Graph("x", (1, 3, 4), nodes, "y").validate()


def test_an_output_that_is_not_scores_is_refused():
    conv = ("conv", {"W": np.ones((2, 1, 1, 1)), "b": np.zeros(2)})
    with pytest.raises(InputError, match=r"per-sample shape \(2, 3, 4\); expected scores"):
        G.sequential([conv], (1, 3, 4))
    g = G.sequential([conv, ("globalavgpool", {})], (1, 3, 4))  # (2, 1, 1): two scores
    assert g.outputs == 2
    X = np.random.default_rng(0).standard_normal((3, 1, 3, 4))
    assert ops.forward(g, X).shape == (3, 2)
