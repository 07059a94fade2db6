"""Distributed inference identical to one process at any world size.

Decisions and refined sets are compared exactly; scores to float64 rounding:
hidden layers use float64 BLAS, whose summation order depends on the batch
size (a shard is a smaller batch), so the last bits of a score may differ.
"""
import os

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("sklearn")

from lrmpi.experiments import digits  # noqa: E402
from lrmpi.jobs.checkpoint import Checkpoint  # noqa: E402
from lrmpi.jobs.inference import run_infer  # noqa: E402
from lrmpi.nn.infer import LayeredInference  # noqa: E402
from lrmpi.nn.onnx_import import load_model  # noqa: E402
from lrmpi.parallel.comm import get_comm  # noqa: E402

pytestmark = pytest.mark.mpi(min_size=1)


@pytest.mark.parametrize("kind", ["mlp10", "mlp2", "cnn"])
@pytest.mark.parametrize("adaptive", [True, False])
def test_identical_to_one_process(kind, adaptive, tmp_path):
    comm = get_comm()
    rank = comm.Get_rank()
    base = comm.bcast(str(tmp_path), root=0)
    path = os.path.join(base, f"{kind}.onnx")
    X = None
    if rank == 0:
        X, _ = digits.cnn_onnx(path) if kind == "cnn" else \
            digits.mlp_onnx(path, binary=kind == "mlp2")
        X = X[:150]
    comm.Barrier()
    got = []
    out = os.path.join(base, f"{kind}.h5")
    outcome = run_infer(path, X, out, planes=3, adaptive=adaptive,
                        on_resolution=lambda m, s, p, r: got.append((s.copy(), p.copy(),
                                                                     r.copy())))
    if rank != 0:
        assert outcome is None
        return
    ref = list(LayeredInference(load_model(path), X, planes=3, adaptive=adaptive))
    assert outcome.status == "complete" and len(got) == len(ref) == 3
    ck = Checkpoint(out)
    assert ck.attrs["kind"] == "infer" and ck.attrs["completed"] == 3
    for (s, p, r), want in zip(got, ref):
        np.testing.assert_allclose(s, want.scores, rtol=1e-12, atol=1e-15)
        np.testing.assert_array_equal(p, want.predicted)
        np.testing.assert_array_equal(r, want.refined)
        _, data = ck.resolution(want.index)
        np.testing.assert_array_equal(data["scores"], s)
        np.testing.assert_array_equal(data["refined"], want.refined)


def test_uncertain_samples_on_one_rank_are_rebalanced(tmp_path):
    comm = get_comm()
    rank, size = comm.Get_rank(), comm.Get_size()
    base = comm.bcast(str(tmp_path), root=0)
    path = os.path.join(base, "m.onnx")
    X = None
    if rank == 0:
        X, _ = digits.mlp_onnx(path)
        first = list(LayeredInference(load_model(path), X, planes=3))[0]
        # the samples still uncertain after resolution 1 first: all on rank 0's shard
        X = X[np.argsort(~first.active, kind="stable")]
    comm.Barrier()
    outcome = run_infer(path, X, None, planes=3)
    if rank != 0:
        return
    ref = list(LayeredInference(load_model(path), X, planes=3))
    assert [m["refined_count"] for m in outcome.resolutions] == [int(r.refined.sum())
                                                                 for r in ref]
    if size > 1:
        assert outcome.resolutions[0].get("rebalanced") == 1
