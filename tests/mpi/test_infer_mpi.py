"""Distributed inference identical, bit for bit, to one process at any world size
(every sample is computed on its own with exact integer products)."""
import os
import time

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("sklearn")

from lrmpi.experiments import digits  # noqa: E402
from lrmpi.jobs.checkpoint import Checkpoint  # noqa: E402
from lrmpi.jobs.inference import run_infer  # noqa: E402
from lrmpi.nn.engine import LayeredInference  # noqa: E402
from lrmpi.nn.onnx_import import load_model  # noqa: E402
from lrmpi.parallel.comm import get_comm  # noqa: E402

pytestmark = pytest.mark.mpi(min_size=1)


KINDS = ("mlp10", "mlp2", "cnn")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Each model trained once (rank 0), not once per test: training while the other
    ranks wait in a collective took 9 x 20 s at -n 2 on 2 cores."""
    comm = get_comm()
    rank = comm.Get_rank()
    base = comm.bcast(str(tmp_path_factory.mktemp("models")) if rank == 0 else None, root=0)
    samples = {}
    if rank == 0:
        for kind in KINDS:
            path = os.path.join(base, f"{kind}.onnx")
            X, _ = digits.cnn_onnx(path) if kind == "cnn" else \
                digits.mlp_onnx(path, binary=kind == "mlp2")
            samples[kind] = X[:150]
    req = comm.Ibarrier()  # the others sleep meanwhile (Barrier spins on a core)
    while not req.Test():
        time.sleep(0.01)
    return base, samples


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("rule", ["certified", "gray", "none"])
def test_identical_to_one_process(kind, rule, models):
    comm = get_comm()
    rank = comm.Get_rank()
    base, samples = models
    path = os.path.join(base, f"{kind}.onnx")
    X = samples.get(kind)
    got = []
    out = os.path.join(base, f"{kind}-{rule}.h5")
    outcome = run_infer(path, X, out, planes=3, rule=rule,
                        on_resolution=lambda m, s, p, r: got.append((s.copy(), p.copy(),
                                                                     r.copy())))
    if rank != 0:
        assert outcome is None
        return
    eng = LayeredInference(load_model(path), X, planes=3, rule=rule)
    ref = []
    for res in eng:
        ref.append((eng.state["scores"].copy(), eng.state["predicted"].copy(), res.refined))
    assert outcome.status == "complete" and len(got) == len(ref) == 3
    ck = Checkpoint(out)
    assert ck.attrs["kind"] == "infer" and ck.attrs["completed"] == 3
    for i, ((s, p, r), (ws, wp, wr)) in enumerate(zip(got, ref), start=1):
        np.testing.assert_array_equal(s, ws)
        np.testing.assert_array_equal(p, wp)
        np.testing.assert_array_equal(r, wr)
        _, data = ck.resolution(i)
        np.testing.assert_array_equal(data["scores"], s)
        np.testing.assert_array_equal(data["refined"], r)


def test_fewer_samples_than_ranks(models):
    comm = get_comm()
    rank, size = comm.Get_rank(), comm.Get_size()
    base, samples = models
    path = os.path.join(base, "mlp10.onnx")
    X = samples["mlp10"][:max(1, size - 1)] if rank == 0 else None
    outcome = run_infer(path, X, None, planes=2)
    if rank == 0:
        assert outcome.status == "complete" and outcome.completed == 2


def test_farm_with_tasks_and_results_past_the_eager_limit():
    """Tasks and results of 1 MB each (past MPI's eager limit, so a send waits for
    its receive): the root must not block sending a task while a worker blocks
    sending a result (found at 1638 MLP samples; small tests did not see it)."""
    from lrmpi.parallel.farm import Farm, serve
    comm = get_comm()

    def compute(payload, stopping):
        i, block = payload
        return i, block * 2.0

    if comm.Get_rank() != 0:
        assert serve(comm, compute) == 0
        return
    farm = Farm(comm, compute)
    payloads = [(i, np.full(131072, float(i))) for i in range(24)]
    try:
        for _ in range(2):
            got = farm.round(payloads)
            assert [g[0] for g in got] == list(range(24))
            for i, (_, block) in enumerate(got):
                np.testing.assert_array_equal(block, np.full(131072, 2.0 * i))
    finally:
        farm.stop()


@pytest.mark.parametrize("builder", ["resnet_small", "mobilenet_small"])
def test_residual_and_depthwise_graphs_identical_to_one_process(builder, tmp_path):
    """A ResNet-style graph (identity and projection shortcuts, global average pool)
    and a MobileNet-style one (depthwise + pointwise, ReLU6) under mpiexec."""
    from lrmpi.experiments import models
    comm = get_comm()
    base = comm.bcast(str(tmp_path), root=0)
    path = os.path.join(base, f"{builder}.onnx")
    X = None
    if comm.Get_rank() == 0:
        models.save(getattr(models, builder)(), path)
        X = np.random.default_rng(3).standard_normal((37, 3, 16, 16))
    comm.Barrier()
    got = []
    outcome = run_infer(path, X, None, planes=2, rule="none",
                        on_resolution=lambda m, s, p, r: got.append(s.copy()))
    if comm.Get_rank() != 0:
        assert outcome is None
        return
    eng = LayeredInference(load_model(path), X, planes=2, rule="none")
    ref = [eng.state["scores"].copy() for _ in eng]
    assert outcome.status == "complete" and len(got) == len(ref) == 2
    for s, w in zip(got, ref):
        np.testing.assert_array_equal(s, w)


def test_samples_from_a_float32_file_every_rank_maps(tmp_path):
    """Samples given as a float32 .npy path: the ranks on the root's host map the same
    file (nothing broadcast) and the results equal one process's on the float32
    values; every resolution records where its CPU time went."""
    from lrmpi.experiments import models
    comm = get_comm()
    base = comm.bcast(str(tmp_path), root=0)
    path, data = os.path.join(base, "m.onnx"), os.path.join(base, "x.npy")
    if comm.Get_rank() == 0:
        models.save(models.resnet_small(), path)
        np.save(data, np.random.default_rng(5).standard_normal((29, 3, 16, 16)).astype(np.float32))
    comm.Barrier()
    got = []
    outcome = run_infer(path, data, os.path.join(base, "o.h5"), planes=2, rule="none",
                        on_resolution=lambda m, s, p, r: got.append((m, s.copy())))
    if comm.Get_rank() != 0:
        assert outcome is None
        return
    X = np.load(data)
    eng = LayeredInference(load_model(path), X, planes=2, rule="none")
    assert eng.X.dtype == np.float32  # kept as given: exact in float64
    ref = [eng.state["scores"].copy() for _ in eng]
    assert outcome.status == "complete" and len(got) == len(ref) == 2
    for (meta, s), w in zip(got, ref):
        np.testing.assert_array_equal(s, w)
        assert meta["cpu_products_s"] > 0 and meta["cpu_quantize_s"] > 0
    assert got[0][0]["prepare_s"] > 0 and got[0][0]["bcast_s"] >= 0
