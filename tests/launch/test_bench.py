"""The benchmark commands run (smoke tests on tiny sizes; benchmarks are not timed tests)."""
import json
import os

import pytest
from launching import run


def test_bench_matmul_smoke(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "m.json"
    p = run("bench", "matmul", "--shapes", "96x40x64", "--ranks", 3, "--repeats", 1,
            "--planes", 3, "--json", out, "--plot", tmp_path / "m.png", timeout=300)
    assert p.returncode == 0, p.stderr
    doc = json.loads(out.read_text())
    assert doc["machine"]["isa"] and doc["disk_mb_s"] > 0
    row = doc["results"][0]
    assert row["shape"] == [96, 40, 64] and len(row["resolutions"]) == 5
    for r in row["resolutions"]:
        assert r["err"] <= r["bound_rel"]
        assert 0 < r["computed_from_launch_s"] <= r["durable_from_launch_s"]
        assert 0 < r["efficiency"] <= 1.0 + 1e-9
    assert row["resolutions"][0]["root_bytes_sent"] > 0
    assert row["numpy_process_s"] > 0 and row["mpi_oneshot_s"] > 0
    assert "x numpy" in p.stdout
    assert (tmp_path / "m.png").read_bytes()[:4] == b"\x89PNG"


def test_bench_kernels_smoke(tmp_path):
    p = run("bench", "kernels", "--sizes", "64,48x32x40", "--repeats", 1,
            "--json", tmp_path / "k.json")
    assert p.returncode == 0, p.stderr
    rows = json.loads((tmp_path / "k.json").read_text())["rows"]
    assert {tuple(r["shape"]) for r in rows} == {(64, 64, 64), (48, 32, 40)}
    assert any(r["what"].startswith("int8") for r in rows)


def test_bench_deadline_stream_under_mpiexec(tmp_path):
    """The Poisson stream runs through real mpiexec (3 ranks, equal and one slow
    worker) and its record is consistent: every job of a deadline-free run gets
    every resolution, in increasing time; deadlines never add results."""
    pytest.importorskip("matplotlib")
    out = tmp_path / "d.json"
    p = run("bench", "deadline", "--n", 64, "--jobs", 4, "--deadlines", "1,4", "--ranks", 3,
            "--factor", 2, "--json", out, "--plot", tmp_path / "d.png", timeout=300)
    assert p.returncode == 0, p.stderr
    docs = json.loads(out.read_text())
    assert len(docs) == 2
    for doc in docs.values():
        assert doc["ranks"] == 3 and doc["jobs"] == 4
        R = len(doc["service_layered_s"])
        assert R == 3  # 2 planes, antidiagonal
        for delays in doc["delays"]["layered@inf"]:
            assert len(delays) == R and all(0 < a < b for a, b in zip(delays, delays[1:]))
        assert all(len(d) == 1 for d in doc["delays"]["oneshot@inf"])
        for name, runs in doc["delays"].items():
            assert len(runs) == 4 and all(len(d) <= R for d in runs), name
        # yielding stops refining only when the next job is there: never before r1
        assert all(len(d) >= 1 for d in doc["delays"]["yielding@inf"])
        for row in doc["success"]:
            assert 0 <= row["oneshot"] <= 1
            for mode in ("layered", "yielding"):
                assert all(0 <= x <= 1 for x in row[mode])
                # a job that has resolution r in time has every earlier one in time too
                assert row[mode] == sorted(row[mode], reverse=True)
    assert "success" in p.stdout or "one-shot" in p.stdout
    assert (tmp_path / "d.png").read_bytes()[:4] == b"\x89PNG"


def test_bench_matmul_crt_column(tmp_path):
    """The issue's CRT figures: --keep latest (the replaced resolutions' summaries
    hold times alone: printed as '-'), C written by the ranks, a --dir not made yet."""
    out = tmp_path / "m.json"
    p = run("bench", "matmul", "--shapes", "64x48x40", "--ranks", 2, "--repeats", 1,
            "--planes", 2, "--final", "crt", "--phi", 2, "--json", out, "--keep", "latest",
            "--write", "ranks", "--dir", tmp_path / "disk" / "bench", timeout=300)
    assert p.returncode == 0, p.stderr
    row = json.loads(out.read_text())["results"][0]
    *replaced, last = row["resolutions"]
    assert last["method"] == "crt" and last["products"] == 15
    assert replaced and all("products" not in r for r in replaced)
    assert all(r["computed_from_launch_s"] <= r["durable_from_launch_s"]
               for r in row["resolutions"])
    assert "accumulate, decode, write" in p.stdout and "peak RSS" in p.stdout
    # err is against numpy's own (inexact) product; err_hi against extended precision
    assert last["err_hi"] <= last["bound_rel"]
    assert last["err_hi"] <= max(4 * row["numpy_err_hi"], 1e-15)


def test_bench_infer_smoke(tmp_path):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "i.json"
    p = run("bench", "infer", "--models", "mlp", "--samples", 0.01, "--repeats", 1,
            "--planes", 2, "--no-accuracy", "--ranks", 2, "--json", out,
            "--plot", tmp_path / "i.png", timeout=300)
    assert p.returncode == 0, p.stderr
    row = json.loads(out.read_text())["speed"][0]
    assert row["model"] == "mlp" and row["samples"] == 327
    assert row["ort_f32_s"] > 0 and row["ort_int8_s"] > 0
    assert [r["index"] for r in row["resolutions"]] == [1, 2]
    assert row["certified_agree_f64"] == 1.0
    assert all(r["tightness"] >= 1.0 for r in row["resolutions"])   # bounds cover the deviation
    assert (tmp_path / "i.png").read_bytes()[:4] == b"\x89PNG"


def test_bench_infer_times_a_model_file_from_launch(tmp_path):
    """--file: a model of the user's (symbolic batch axis) gets the generated
    models' row; a fixed batch axis is refused in one line before any work."""
    pytest.importorskip("onnxruntime")
    from lrmpi.experiments import models
    proto = models.mlp()
    path = models.save(proto, tmp_path / "mine.onnx")
    out = tmp_path / "f.json"
    p = run("bench", "infer", "--models", "", "--file", path, "--file-samples", 40,
            "--repeats", 1, "--planes", 1, "--no-accuracy", "--ranks", 2, "--json", out,
            timeout=300)
    assert p.returncode == 0, p.stderr
    row = json.loads(out.read_text())["speed"][0]
    assert row["model"] == "mine.onnx" and row["samples"] == 40
    assert [r["index"] for r in row["resolutions"]] == [1]
    assert row["resolutions"][0]["durable_from_launch_s"] > 0
    proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    fixed = models.save(proto, tmp_path / "fixed.onnx")
    p = run("bench", "infer", "--models", "", "--file", fixed, "--file-samples", 40,
            "--no-accuracy")
    assert p.returncode == 2 and "symbolic batch axis" in p.stderr and "ort" not in p.stdout


def test_bench_bounds_smoke(tmp_path):
    out = tmp_path / "b.json"
    p = run("bench", "bounds", "--models", "mlp,vgg", "--samples", 0.02, "--planes", 2,
            "--json", out, "--plot", tmp_path / "b.png", timeout=300)
    assert p.returncode == 0, p.stderr
    doc = json.loads(out.read_text())
    for m in doc["models"]:
        assert [r["index"] for r in m["resolutions"]] == [1, 2]
        assert all(r["violations"] == 0 and r["tightness"] >= 1 for r in m["resolutions"])
        assert m["resolutions"][1]["certified_by"] > 0.9     # difference bound at r = 2
    check = run("bench", "bounds", "--models", "mlp", "--check", 300, "--planes", 2,
                timeout=300)
    assert check.returncode == 0 and "0 violations" in check.stdout
    assert (tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG"


def _hide(tmp_path, module):
    """PYTHONPATH that makes `import module` fail, as if it were not installed."""
    stub = tmp_path / "hidden" / module
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text(f"raise ImportError('{module} hidden by the test')\n")
    return {"PYTHONPATH": str(tmp_path / "hidden")}


def test_bench_infer_without_onnxruntime_names_the_extra_in_one_line(tmp_path):
    p = run("bench", "infer", "--models", "mlp", "--no-accuracy", env=_hide(tmp_path,
                                                                            "onnxruntime"))
    assert p.returncode == 1
    assert p.stderr.strip() == "lrmpi: error: lrmpi bench infer needs onnxruntime: pip " \
                               "install 'lrmpi[bench]'"


def test_bench_plot_without_matplotlib_says_so_before_any_work(tmp_path):
    p = run("bench", "kernels", "--sizes", "64", "--plot", tmp_path / "k.png",
            env=_hide(tmp_path, "matplotlib"))
    assert p.returncode == 1 and "pip install 'lrmpi[plot]'" in p.stderr
    assert "Traceback" not in p.stderr and "GOPS" not in p.stdout


def test_bench_starts_the_launcher_of_mpi4pys_mpi_not_the_first_on_path(tmp_path):
    """A foreign `mpiexec` first on PATH (Debian's Open MPI beside the venv) is not
    used: the benchmark finds the one installed with the MPI library mpi4py loads;
    a failing --mpiexec given by hand ends the run with one line."""
    fake = tmp_path / "bin" / "mpiexec"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'not the MPI you want' >&2\nexit 99\n")
    fake.chmod(0o755)
    env = {"PATH": f"{fake.parent}:{os.environ['PATH']}"}
    args = ("bench", "straggler", "--n", 64, "--planes", 2, "--repeats", 1, "--ranks", 2)
    p = run(*args, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "slow-down with the straggler" in p.stdout
    p = run(*args, "--mpiexec", fake, timeout=300)
    assert p.returncode == 1
    assert p.stderr.strip().startswith("lrmpi: error: mpiexec ... ")
    assert "exited 99: not the MPI you want" in p.stderr and "Traceback" not in p.stderr
