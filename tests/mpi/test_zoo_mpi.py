"""The model zoo's classic graphs as exporters wrote them (#30 item 5), under
mpiexec: resolution 4 agrees with onnxruntime float32 (the same decisions, logits
within the resolution's bound plus float32's error) and is bit-identical at any
world size.

The graphs are the ones the ONNX package ships as test data
(onnx/backend/test/data/light), their constant weights replaced by random
He-style ones (tests/onnx_graphs.py). CI runs SqueezeNet (a (1000, 1, 1) softmax
output) and ShuffleNet (channel shuffles: Reshape, Transpose; grouped convs) at
one sample as exported (batch 1 hard-coded in its Reshape targets), with the cheap
bound (bound_budget 0: no tight norms, whose preparation costs SqueezeNet ~16 s of
CPU at resolutions 2-3: CI time); LRMPI_ZOO=all runs all five, with the batch axis
made symbolic, two samples, and the configured bound.
"""
import os
import time

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx_graphs import ZOO, ort_run, zoo_model  # noqa: E402

from lrmpi import config  # noqa: E402
from lrmpi.jobs.checkpoint import Checkpoint  # noqa: E402
from lrmpi.jobs.inference import run_infer  # noqa: E402
from lrmpi.parallel.comm import get_comm  # noqa: E402

pytestmark = pytest.mark.mpi(min_size=1)

ALL = os.environ.get("LRMPI_ZOO") == "all"
MODELS = ZOO if ALL else ("squeezenet", "shufflenet")
BOUNDS = {} if ALL else {"bound_budget": 0.0}  # the default run: the cheap bound
FP32 = 1e-4  # float32's error through these graphs, relative to the logit range: at most
BOUND = 1e-2  # the bound at resolution 4, relative to the logit range: at most


def _sleep_until(req):
    while not req.Test():  # the others sleep meanwhile (a Barrier spins on a core)
        time.sleep(0.01)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """{name: (model path, output, samples, onnxruntime's logits)}, made on rank 0."""
    comm = get_comm()
    if comm.Get_size() == 2:  # the world sizes are 1 and 3: CI time
        pytest.skip("the zoo graphs run under mpiexec -n 1 and -n 3")
    base = comm.bcast(str(tmp_path_factory.mktemp("zoo")) if comm.Get_rank() == 0 else None)
    made = {}
    if comm.Get_rank() == 0:
        import onnx
        for i, name in enumerate(MODELS):
            path, shape, logits = zoo_model(name, base, seed=i, batch=ALL)
            X = np.random.default_rng(10 + i).standard_normal((2 if ALL else 1,) + shape)
            ort = ort_run(path, X, [logits])[0].reshape(len(X), -1).astype(np.float64)
            made[name] = (path, onnx.load(path).graph.output[0].name, X, ort)
    _sleep_until(comm.Ibarrier())
    return base, made


@pytest.mark.parametrize("name", MODELS)
def test_resolution_4_agrees_with_onnxruntime(name, zoo):
    comm = get_comm()
    base, made = zoo
    rank = comm.Get_rank()
    path, output, X, ort = made.get(name, (None, None, None, None))
    path, output = comm.bcast((path, output) if rank == 0 else None)
    out = os.path.join(base, f"{name}-{comm.Get_size()}.h5")
    with config.configure(**BOUNDS):  # on every rank
        outcome = run_infer(path, X, out, planes=4, rule="none", model_output=output)
    if rank != 0:
        assert outcome is None
        return
    assert outcome.status == "complete" and outcome.completed == 4
    state = Checkpoint(out).state(4)
    z, bound = state["logits"], state["bound"]
    spread = ort.max(axis=1) - ort.min(axis=1)
    from lrmpi.nn import ops
    from lrmpi.nn.onnx_import import load_model
    f64 = ops.forward(load_model(path, output), X)       # the float model lrmpi refines
    fp32 = np.abs(ort - f64).max(axis=1)                  # float32's error
    assert np.all(fp32 <= FP32 * spread), (fp32, spread)  # the import is onnxruntime's model
    np.testing.assert_array_equal(z.argmax(axis=1), ort.argmax(axis=1))
    assert np.all(np.abs(z - ort).max(axis=1) <= bound + fp32), (np.abs(z - ort).max(), bound)
    print(f"\n{name} at {comm.Get_size()} rank(s), {len(X)} sample(s): logit range {spread}, "
          f"|r4 - ort f32| {np.abs(z - ort).max(axis=1) / spread} of it, float32's error "
          f"{fp32 / spread}, bound {bound / spread}")
    # bit-identical to one process evaluating resolution 4 alone (the norms are in
    # the cache by now): results depend on neither the ranks nor the resolutions before
    from lrmpi.nn.engine import PreparedModel
    with config.configure(**BOUNDS):
        alone, _ = PreparedModel(load_model(path, output), 7, 4).prepare(4).evaluate(X, 4)
    np.testing.assert_array_equal(alone, z)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.xfail(strict=True, reason="the bounds of #28 at resolution 4, one sample "
                   "(measured): SqueezeNet 1.4e-2 of the logit range (difference bound), "
                   "ShuffleNet 6e38 (the operator-norm bound stands: the difference bound is "
                   "predicted to reach no margin); the default run's cheap bound: 1.6e18 and "
                   "6e38")
def test_resolution_4_bound_is_below_1e_2_of_the_logit_range(name, zoo):
    """Not vacuous: the agreement above holds within a bound that says something
    (read from the file the test above wrote; every rank asserts rank 0's verdict)."""
    comm = get_comm()
    base, made = zoo
    verdict = None
    if comm.Get_rank() == 0:
        out = os.path.join(base, f"{name}-{comm.Get_size()}.h5")
        ort = made[name][3]
        bound = Checkpoint(out).state(4)["bound"]
        spread = ort.max(axis=1) - ort.min(axis=1)
        verdict = (bool(np.all(bound <= BOUND * spread)), (bound / spread).tolist())
    ok, rel = comm.bcast(verdict)
    assert ok, f"bound / logit range at resolution 4: {rel}"
