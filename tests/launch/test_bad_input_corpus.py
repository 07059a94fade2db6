"""The bad-input corpus (docs/design.md, "Bad input"): one table, one line per case. Every case runs the
real CLI under `mpiexec -n 3` and must end every rank within 10 s with a one-line
error naming the problem, a non-zero exit, no traceback and no result file."""
import time

import numpy as np
import pytest
from launching import run


def npy(d, name, arr):
    np.save(d / name, arr)
    return str(d / name)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def raw(d, name, data):
    (d / name).write_bytes(data)
    return str(d / name)


def h5(d, name, **datasets):
    import h5py
    with h5py.File(d / name, "w") as f:
        for k, v in datasets.items():
            f[k] = v
        f.create_group("grp")
    return str(d / name)


def huge_header(d):
    """A .npy whose header claims 10^6 x 10^6 float64 (8 TB) and holds no data."""
    with open(d / "huge.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": "<f8", "fortran_order": False, "shape": (10**6, 10**6)})
    return str(d / "huge.npy")


def checkpoint(d, mangle):
    ok = npy(d, "ok.npy", np.ones((4, 4)))
    assert run("matmul", ok, ok, "-o", d / "c.h5", "--planes", 2).returncode == 0
    data = (d / "c.h5").read_bytes()
    (d / "c.h5").write_bytes(mangle(data))
    return ["matmul", ok, ok, "-o", str(d / "c.h5"), "--planes", 2, "--resume"]


def onnx_model(d, op="Relu", external=None):
    from onnx import TensorProto, helper, numpy_helper
    W = numpy_helper.from_array(np.ones((3, 4), np.float32), "W")
    g = helper.make_graph(
        [helper.make_node("Gemm", ["x", "W"], ["z"], transB=1, name="fc"),
         helper.make_node(op, ["z"], ["y"], name="act")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])], [W])
    proto = helper.make_model(g)
    if external:
        from onnx import external_data_helper
        t = proto.graph.initializer[0]
        external_data_helper.set_external_data(t, location=external)
        t.data_location = TensorProto.EXTERNAL
        t.ClearField("raw_data")
    (d / "m.onnx").write_bytes(proto.SerializeToString())
    return str(d / "m.onnx")


G = np.ones((3, 4))
GB = np.ones((4, 2))
# (case id, argv builder taking the tmp dir, expected message fragment)
CASES = [
    ("missing-file", lambda d: ["matmul", d / "nope.npy", npy(d, "b.npy", GB)], "no such file"),
    ("not-npy", lambda d: ["matmul", raw(d, "a.npy", b"hello"), npy(d, "b.npy", GB)],
     "not a valid .npy file"),
    ("truncated-npy", lambda d: ["matmul", raw(d, "a.npy", read(npy(d, "t.npy", np.ones((50, 50))))[:300]), npy(d, "b.npy", GB)], "cannot read array"),
    ("pickled-npy", lambda d: ["matmul", npy(d, "a.npy", np.array([[{}]], dtype=object)),
                               npy(d, "b.npy", GB)], "pickled data is never loaded"),
    ("nan", lambda d: ["matmul", npy(d, "a.npy", np.where(G > 0, np.nan, G)),
                       npy(d, "b.npy", GB)], "A: contains NaN or Inf"),
    ("inf", lambda d: ["matmul", npy(d, "a.npy", G), npy(d, "b.npy", GB * np.inf)],
     "B: contains NaN or Inf"),
    ("complex", lambda d: ["matmul", npy(d, "a.npy", G + 1j), npy(d, "b.npy", GB)],
     "complex dtype"),
    ("bool", lambda d: ["matmul", npy(d, "a.npy", G > 0), npy(d, "b.npy", GB)], "boolean"),
    ("strings", lambda d: ["matmul", npy(d, "a.npy", np.array([["x"] * 4] * 3)),
                           npy(d, "b.npy", GB)], "not a real numeric type"),
    ("zero-size", lambda d: ["matmul", npy(d, "a.npy", np.ones((0, 4))), npy(d, "b.npy", GB)],
     "empty matrix"),
    ("3-d", lambda d: ["matmul", npy(d, "a.npy", np.ones((3, 4, 2))), npy(d, "b.npy", GB)],
     "expected a 2-D matrix, got 3-D"),
    ("1-d", lambda d: ["matmul", npy(d, "a.npy", np.ones(4)), npy(d, "b.npy", GB)],
     "expected a 2-D matrix, got 1-D"),
    ("shape-mismatch", lambda d: ["matmul", npy(d, "a.npy", G), npy(d, "b.npy", G)],
     "shape mismatch: A is 3x4, B is 3x4"),
    ("huge", lambda d: ["matmul", huge_header(d), npy(d, "b.npy", GB)], "of this machine's memory"),
    ("h5-no-dataset", lambda d: ["matmul", h5(d, "a.h5", A=G) + ":/nope", npy(d, "b.npy", GB)],
     "has no dataset /nope"),
    ("h5-group", lambda d: ["matmul", h5(d, "a.h5", A=G) + ":/grp", npy(d, "b.npy", GB)],
     "is a group, not a dataset"),
    ("not-h5", lambda d: ["matmul", raw(d, "a.h5", b"garbage" * 100) + ":/A",
                          npy(d, "b.npy", GB)], "not a readable HDF5 file"),
    ("truncated-h5", lambda d: ["matmul", raw(d, "t.h5", read(h5(d, "a.h5", A=np.ones((100, 100))))[:1500]) + ":/A", npy(d, "b.npy", GB)], "HDF5"),
    ("bits", lambda d: ["matmul", npy(d, "a.npy", G), npy(d, "b.npy", GB), "--bits", 0],
     "bits must be in 1..7, got 0"),
    ("planes", lambda d: ["matmul", npy(d, "a.npy", G), npy(d, "b.npy", GB), "--planes", 99],
     "planes must be in 1..16, got 99"),
    ("order", lambda d: ["matmul", npy(d, "a.npy", G), npy(d, "b.npy", GB), "--order", "x"],
     "order must be one of"),
    ("deadline-past", lambda d: ["matmul", npy(d, "a.npy", G), npy(d, "b.npy", GB),
                                 "--deadline", "2001-01-01T00:00"], "is already past"),
    ("deadline-garbage", lambda d: ["matmul", npy(d, "a.npy", G), npy(d, "b.npy", GB),
                                    "--deadline", "soon"], "expected a duration"),
    ("margin", lambda d: ["matmul", npy(d, "a.npy", G), npy(d, "b.npy", GB), "--margin", -1],
     "--margin must be a number of seconds >= 0"),
    ("worker-timeout-nan", lambda d: ["matmul", npy(d, "a.npy", G), npy(d, "b.npy", GB),
                                      "--worker-timeout", "nan"],
     "--worker-timeout must be a number of seconds > 0"),
    ("margin-nan", lambda d: ["matmul", npy(d, "a.npy", G), npy(d, "b.npy", GB), "--deadline",
                              "3s", "--margin", "nan"], "--margin must be a number of seconds"),
    ("deadline-empty", lambda d: ["matmul", npy(d, "a.npy", G), npy(d, "b.npy", GB),
                                  "--deadline", ""], "--deadline '': expected a duration"),
    ("deadline-inf", lambda d: ["matmul", npy(d, "a.npy", G), npy(d, "b.npy", GB),
                                "--deadline", "inf"], "--deadline 'inf': expected a duration"),
    ("output-empty", lambda d: ["matmul", npy(d, "a.npy", G), npy(d, "b.npy", GB), "-o", ""],
     "-o/--output is empty"),
    ("output-is-dir", lambda d: ["matmul", npy(d, "a.npy", G), npy(d, "b.npy", GB), "-o", d],
     "is a directory"),
    ("output-dir-missing", lambda d: ["matmul", npy(d, "a.npy", G), npy(d, "b.npy", GB), "-o",
                                      d / "no" / "c.h5"], "does not exist"),
    ("resume-tampered", lambda d: checkpoint(d, lambda b: b"\0" * 64 + b[64:]),
     "not a readable lrmpi checkpoint"),
    ("resume-truncated", lambda d: checkpoint(d, lambda b: b[:len(b) // 3]),
     "not a readable lrmpi checkpoint"),
    ("onnx-unsupported", lambda d: ["infer", onnx_model(d, "Tanh"), npy(d, "x.npy", G)],
     "Tanh is not piecewise linear"),
    ("onnx-truncated", lambda d: ["infer", raw(d, "m.onnx", read(onnx_model(d))[:40]), npy(d, "x.npy", G)], "not a readable ONNX model"),
    ("onnx-external-escape", lambda d: ["infer", onnx_model(d, external="../../etc/passwd"),
                                        npy(d, "x.npy", G)], "outside the model's folder"),
    ("model-missing", lambda d: ["infer", d / "none.onnx", npy(d, "x.npy", G)], "no such file"),
    ("model-kind", lambda d: ["infer", raw(d, "m.txt", b"x"), npy(d, "x.npy", G)],
     "expected a .onnx or .npz file"),
    ("infer-shape", lambda d: ["infer", onnx_model(d), npy(d, "x.npy", np.ones((3, 5)))],
     "the model expects"),
    ("infer-gray", lambda d: ["infer", onnx_model(d), npy(d, "x.npy", G), "--rule", "gray",
                              "--gray", "a,b"], "--gray"),
    ("infer-gray-nan", lambda d: ["infer", onnx_model(d), npy(d, "x.npy", G), "--rule", "gray",
                                  "--gray", "nan,0.5"], "expected 0 <= LO <= HI <= 1"),
    # conflicting options (issue #24 D20): refused, not one of them silently dropped
    ("infer-rule-no-adaptive", lambda d: ["infer", onnx_model(d), npy(d, "x.npy", G), "--rule",
                                          "certified", "--no-adaptive"],
     "--no-adaptive (the same as --rule none) contradicts --rule certified"),
    ("infer-rule-gray", lambda d: ["infer", onnx_model(d), npy(d, "x.npy", G), "--rule",
                                   "certified", "--gray", "0.2,0.9"],
     "--gray applies to --rule gray only"),
    ("infer-class-margin", lambda d: ["infer", onnx_model(d), npy(d, "x.npy", G),
                                      "--class-margin", "0.2"],
     "--class-margin applies to --rule gray only"),
    ("cutoff-no-cutoff", lambda d: ["matmul", npy(d, "a.npy", G), npy(d, "b.npy", GB),
                                    "--cutoff", 3, "--no-cutoff"],
     "--cutoff 3 and --no-cutoff contradict each other"),
    ("moduli-target", lambda d: ["matmul", npy(d, "a.npy", G), npy(d, "b.npy", GB), "--final",
                                 "crt", "--moduli", 3, "--target", "fp32"],
     "--moduli and --target both choose"),
    ("target-unreachable", lambda d: ["matmul", npy(d, "a.npy", G), npy(d, "b.npy", GB),
                                      "--final", "crt", "--target", "1e-30"],
     "cannot be shown to reach 1.0e-30"),
    ("target-nan", lambda d: ["matmul", npy(d, "a.npy", G), npy(d, "b.npy", GB), "--final",
                              "crt", "--target", "nan"], "--target must be a relative error"),
]


@pytest.mark.parametrize("case, build, message", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case, build, message, tmp_path):
    if case.startswith(("onnx", "model", "infer")):
        pytest.importorskip("onnx")
    argv = build(tmp_path)
    before = {p.name for p in tmp_path.iterdir()}
    if "-o" not in argv and argv[0] in ("matmul", "infer"):
        argv += ["-o", tmp_path / "out.h5"]
    t = time.time()
    p = run(*argv, n=3, timeout=60)
    took = time.time() - t
    assert took < 10, f"{case}: took {took:.1f} s"
    assert p.returncode in (1, 2), (case, p.returncode, p.stderr)
    if case.startswith("output-is"):  # -o naming what cannot be an output: a bad option
        assert p.returncode == 2, p.stderr
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("lrmpi: error:")]
    assert len(errors) == 1, p.stderr
    assert message in errors[0], errors[0]
    assert "Traceback" not in p.stderr
    if not case.startswith("resume"):
        assert not (tmp_path / "out.h5").exists() or "out.h5" in before
    assert len(CASES) >= 25


# settings (issue #24 D10-D12): under mpiexec -n 3 each hung, spun or aborted with a
# traceback; now one line naming the variable and its range, exit 2, every rank ends
SETTINGS = [("LRMPI_WRITE_QUEUE", "0"), ("LRMPI_DEPTH", "-1"), ("LRMPI_LOOKAHEAD", "0"),
            ("LRMPI_KERNEL", "foo"), ("LRMPI_BOUND_ROW_BLOCK", "0"),
            ("SLURM_JOB_END_TIME", "abc")]  # D14: was silently no deadline


@pytest.mark.parametrize("name, value", SETTINGS, ids=[f"{n}={v}" for n, v in SETTINGS])
def test_bad_setting(name, value, tmp_path):
    a = npy(tmp_path, "a.npy", G)
    t = time.time()
    p = run("matmul", a, npy(tmp_path, "b.npy", GB), "-o", tmp_path / "out.h5", "--deadline",
            "30s", n=3, timeout=60, env={name: value})
    assert time.time() - t < 10
    assert p.returncode == 2, p.stderr
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("lrmpi: error:")]
    assert len(errors) == 1 and errors[0].startswith(f"lrmpi: error: {name}={value!r}: expected")
    assert "Traceback" not in p.stderr and not (tmp_path / "out.h5").exists()
