"""`lrmpi infer` through mpiexec: results, inspect, bad models end every rank."""
import time

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("sklearn")

from launching import run  # noqa: E402

from lrmpi.experiments import digits  # noqa: E402
from lrmpi.jobs.checkpoint import Checkpoint  # noqa: E402


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    d = tmp_path_factory.mktemp("mlp")
    X, y = digits.mlp_onnx(d / "m.onnx")
    np.save(d / "x.npy", X)
    return d, X, y


@pytest.mark.parametrize("n", [1, 3])
def test_infer_cli_writes_every_resolution(n, mlp, tmp_path):
    d, X, y = mlp
    out = tmp_path / "o.h5"
    p = run("infer", d / "m.onnx", d / "x.npy", "-o", out, "--planes", 3, n=n)
    assert p.returncode == 0, p.stderr
    assert p.stderr.count("lrmpi: resolution") == 3
    ck = Checkpoint(out)
    assert ck.attrs["kind"] == "infer" and ck.attrs["status"] == "complete"
    _, last = ck.resolution(3)
    assert last["scores"].shape == (len(X), 10)
    assert np.mean(last["predicted"] == y) > 0.85
    shown = run("inspect", out)
    assert "infer status=complete completed=3/3" in shown.stdout


@pytest.mark.parametrize("case, match", [
    ("unsupported", "unsupported ONNX operator 'Tanh'"),
    ("truncated", "not a readable ONNX model"),
    ("shape", "the model expects"),
])
def test_bad_models_and_data_end_every_rank_with_one_line(case, match, mlp, tmp_path):
    from onnx import TensorProto, helper, numpy_helper
    d, X, _ = mlp
    model, data = d / "m.onnx", d / "x.npy"
    if case == "unsupported":
        W = numpy_helper.from_array(np.ones((3, 64), np.float32), "W")
        g = helper.make_graph(
            [helper.make_node("Gemm", ["x", "W"], ["z"], transB=1, name="fc"),
             helper.make_node("Tanh", ["z"], ["y"], name="t")], "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 64])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])], [W])
        model = tmp_path / "tanh.onnx"
        model.write_bytes(helper.make_model(g).SerializeToString())
    elif case == "truncated":
        model = tmp_path / "cut.onnx"
        model.write_bytes((d / "m.onnx").read_bytes()[:200])
    else:
        data = tmp_path / "x10.npy"
        np.save(data, X[:, :10])
    t = time.time()
    p = run("infer", model, data, "-o", tmp_path / "o.h5", n=3, timeout=30)
    assert time.time() - t < 10
    assert p.returncode == 1, p.stderr
    assert match in p.stderr and p.stderr.count("lrmpi: error") == 1
    assert "Traceback" not in p.stderr
    assert not (tmp_path / "o.h5").exists()


def test_hung_rank_ends_an_infer_job_naming_it(mlp, tmp_path):
    d, X, _ = mlp
    out = tmp_path / "o.h5"
    t = time.time()
    p = run("infer", d / "m.onnx", d / "x.npy", "-o", out, "--planes", 6, "--no-adaptive",
            "--worker-timeout", 3, n=3,
            env={"LRMPI_TEST_HANG_RANK": "2", "LRMPI_TEST_FAIL_AFTER": "3"}, timeout=60)
    assert time.time() - t < 10 + 3
    assert p.returncode != 0
    assert "lrmpi: error: worker 2 of 3 on" in p.stderr and "did not answer" in p.stderr
    ck = Checkpoint(out)
    assert ck.attrs["status"] == "failed" and "worker 2 of 3" in ck.attrs["message"]
    assert ck.attrs["completed"] == 2
    for i in ck.resolution_indices():
        ck.resolution(i)
