"""`lrmpi infer` through mpiexec: results, inspect, bad models end every rank."""
import time

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("sklearn")

from launching import run, since_start  # noqa: E402

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
    assert "cert_frac" in shown.stdout and "difference" in shown.stdout
    assert "certified" in p.stderr and "%" in p.stderr   # the log's certified fraction


@pytest.mark.parametrize("case, match", [
    ("unsupported", "Tanh is not piecewise linear"),
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
    p = run("infer", d / "m.onnx", d / "x.npy", "-o", out, "--planes", 6, "--no-adaptive",
            "--worker-timeout", 3, n=3,
            env={"LRMPI_TEST_HANG_RANK": "2", "LRMPI_TEST_FAIL_AFTER": "12",
                 "LRMPI_ROOT_COMPUTES": "no", "LRMPI_STOP_TIMEOUT_S": "3"}, timeout=60)
    assert since_start(out) < 3 + 3 + 4  # worker timeout + stop timeout + slack (from the
    # job's start: launching 3 ranks that import onnx on a loaded machine is not counted)
    assert p.returncode != 0
    assert "lrmpi: error: worker 2 of 3 on" in p.stderr and "did not answer" in p.stderr
    ck = Checkpoint(out)
    assert ck.attrs["status"] == "failed" and "worker 2 of 3" in ck.attrs["message"]
    # the farm hands out about CHUNKS_PER_RANK tasks per worker and round, so the
    # 13th task of rank 2 falls after the first resolution and before the last
    assert 1 <= ck.attrs["completed"] < 6, ck.attrs["completed"]
    for i in ck.resolution_indices():
        ck.resolution(i)


@pytest.mark.parametrize("count", [1, 2])
def test_fewer_samples_than_ranks(count, mlp, tmp_path):
    """Idle ranks take part in every step with an empty share and write nothing."""
    d, X, y = mlp
    np.save(tmp_path / "few.npy", X[:count])
    out = tmp_path / "o.h5"
    before = set(p.name for p in tmp_path.iterdir())
    p = run("infer", d / "m.onnx", tmp_path / "few.npy", "-o", out, "--planes", 3, n=3)
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr
    ck = Checkpoint(out)
    assert ck.attrs["status"] == "complete" and ck.attrs["n_samples"] == count
    assert ck.resolution(ck.completed)[1]["scores"].shape == (count, 10)
    new = set(p.name for p in tmp_path.iterdir()) - before
    assert new == {"o.h5", "o.h5.d"}  # no temporary file left anywhere


def test_a_skl2onnx_classifier_with_its_default_zipmap_output(tmp_path):
    """skl2onnx exports classifiers with a ZipMap (a map per sample) by default:
    lrmpi uses the probability tensor that feeds it."""
    import warnings

    from skl2onnx import to_onnx
    from sklearn.neural_network import MLPClassifier
    X, y = digits.load()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = MLPClassifier((32,), max_iter=200, random_state=0).fit(X[:1000], y[:1000])
        proto = to_onnx(clf, X[:1].astype(np.float32))  # default options: ZipMap
    assert any(n.op_type == "ZipMap" for n in proto.graph.node)
    (tmp_path / "zm.onnx").write_bytes(proto.SerializeToString())
    np.save(tmp_path / "x.npy", X[1000:1200])
    p = run("infer", tmp_path / "zm.onnx", tmp_path / "x.npy", "-o", tmp_path / "o.h5",
            "--planes", 4)
    assert p.returncode == 0, p.stderr
    pred = Checkpoint(tmp_path / "o.h5").resolution(4)[1]["predicted"]
    assert np.mean(pred == clf.predict(X[1000:1200])) >= 0.99


def test_model_output_chooses_among_several_outputs(tmp_path):
    """D18: several float outputs end the job with one line naming the option;
    --model-output NAME picks the scores."""
    from onnx_graphs import model, node
    rng = np.random.default_rng(0)
    f = np.float32
    path = model(tmp_path / "two.onnx",
                 [node("Gemm", ["x", "W1"], "h", transB=1), node("Relu", ["h"], "hidden"),
                  node("Gemm", ["hidden", "W2"], "logits", transB=1)],
                 {"W1": rng.standard_normal((6, 4)).astype(f),
                  "W2": rng.standard_normal((3, 6)).astype(f)}, (4,),
                 outputs=("hidden", "logits"))
    np.save(tmp_path / "x.npy", rng.standard_normal((2, 4)))
    p = run("infer", path, tmp_path / "x.npy", "--planes", 1, n=1)
    assert p.returncode == 1 and "choose the one holding the scores with --model-output NAME" \
        in p.stderr
    assert len([ln for ln in p.stderr.splitlines() if "error" in ln]) == 1, p.stderr
    p = run("infer", path, tmp_path / "x.npy", "--planes", 1, "--model-output", "logits",
            "-o", tmp_path / "o.h5", n=1)
    assert p.returncode == 0, p.stderr
    ck = Checkpoint(tmp_path / "o.h5")
    assert ck.attrs["outputs"] == 3 and ck.attrs["model_output"] == "logits"
