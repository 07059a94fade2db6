"""Third adversarial pass, area 7: `lrmpi jobscript` with paths that are special files
(--python, --site-env, --mpiexec), its output on a full device, and generated scripts
run under the fake srun of test_adv_jobscripts.py."""
import os
import subprocess

import numpy as np
import pytest

from adversary import (PY, assert_one_error, cmd, run)
from test_adv_jobscripts import generate, slurm, work  # noqa: F401  (fixtures)


@pytest.mark.parametrize("kind", ["dir", "plain", "dangling", "devnull"])
def test_python_not_an_interpreter_refused(tmp_path, work, slurm, kind):
    """--python naming a folder, a non-executable text file, a dangling link or /dev/null:
    refused with one line (exit 2), or (a path of the compute nodes) a script that, run,
    fails (never exit 0) and never requeues."""
    go, requeues = slurm
    a, b, d = work
    if kind == "dir":
        py = tmp_path / "pydir"
        py.mkdir()
    elif kind == "plain":
        py = tmp_path / "python.txt"
        py.write_text("not python")
    elif kind == "dangling":
        py = tmp_path / "pylink"
        os.symlink(tmp_path / "nope", py)
    else:
        py = "/dev/null"
    r = run("jobscript", "matmul", a, b, "-o", d / "C.h5", "--python", py)
    _refused_or_fails_without_requeue(r, d, go, requeues)


@pytest.mark.parametrize("kind", ["dir", "fifo", "dangling"])
def test_site_env_special_refused(tmp_path, work, kind):
    """--site-env a folder, a pipe (sourcing it would block the job) or a dangling link:
    refused with one line, exit 2."""
    a, b, d = work
    p = tmp_path / "site.sh"
    if kind == "dir":
        p.mkdir()
    elif kind == "fifo":
        os.mkfifo(p)
    else:
        os.symlink(tmp_path / "none.sh", p)
    r = run("jobscript", "matmul", a, b, "-o", d / "C.h5", "--python", PY, "--site-env", p,
            timeout=30)
    assert_one_error(r, code=2)


@pytest.mark.parametrize("kind", ["missing", "dir"])
def test_mpiexec_not_a_launcher_refused(tmp_path, work, slurm, kind):
    """--mpiexec missing or a folder: refused with one line, or a script that fails when
    run (never exit 0, never a requeue)."""
    go, requeues = slurm
    a, b, d = work
    p = tmp_path / "mpiexec"
    if kind == "dir":
        p.mkdir()
    r = run("jobscript", "matmul-mpiexec", a, b, "-o", d / "C.h5", "--python", PY,
            "--mpiexec", p)
    _refused_or_fails_without_requeue(r, d, go, requeues)


# found by the third adversarial pass (fixed): a full stdout printed a traceback


@pytest.mark.parametrize("args", [
    ["jobscript", "matmul", "A.npy", "B.npy", "-o", "C.h5"],
    ["jobscript", "infer", "--template"],
    ["--version"]])
def test_output_to_dev_full_is_an_error(tmp_path, args):
    """stdout on /dev/full: a script that could not be printed is not exit 0 — one line,
    exit 1, no traceback (a `> job.sbatch` on a full disk must not look like success)."""
    with open("/dev/full", "w") as full:
        r = subprocess.run(cmd(*args, "--python", PY) if args[0] == "jobscript" and
                           "--template" not in args else cmd(*args),
                           stdout=full, stderr=subprocess.PIPE, text=True, timeout=60,
                           cwd=tmp_path)
    assert r.returncode != 0, r.stderr
    assert "Traceback" not in r.stderr, r.stderr


def test_generated_script_with_output_a_fifo_exits_1_no_requeue(slurm, work):
    """The script's -o became a pipe after generation: the job exits 1 with one line, and
    the script neither requeues nor hangs."""
    go, requeues = slurm
    a, b, d = work
    text = generate("matmul", a, b, "-o", d / "C.h5", "--planes", "1")
    os.mkfifo(d / "C.h5")
    r = go(text, cwd=str(d), timeout=90)
    assert r.returncode == 1, r.stdout + r.stderr
    assert requeues() == []


def test_generated_infer_mpiexec_script_runs(slurm, tmp_path, rng):
    """infer-mpiexec with a model and data in a folder with blanks: completes, scores equal
    a one-process run."""
    from adversary import mlp_onnx, save, assert_ok
    go, _ = slurm
    d = tmp_path / "my models"
    d.mkdir()
    model = mlp_onnx(d / "m 1.onnx", rng)
    data = save(d / "d 1.npy", rng.standard_normal((5, 16)).astype(np.float32))
    r = go(generate("infer-mpiexec", model, data, "-o", d / "s 1.h5", "--planes", "2",
                    "--rule", "none", "--no-adaptive", "--ntasks", "2"), cwd=str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert_ok(run("infer", model, data, "-o", d / "ref.h5", "--planes", "2", "--rule", "none",
                  "--no-adaptive"))
    from test_adv_infer import resolutions
    got, want = resolutions(d / "s 1.h5"), resolutions(d / "ref.h5")
    assert got.keys() == want.keys()
    for k in want:
        assert np.array_equal(got[k]["scores"], want[k]["scores"])


def _refused_or_fails_without_requeue(r, d, go, requeues):
    """`lrmpi jobscript` refused the option (one line, exit 2), or the script it printed
    fails when run, requeues nothing and writes no result."""
    if r.returncode != 0:
        assert_one_error(r, code=2)
        return
    job = go(r.stdout, cwd=str(d), timeout=60)
    assert job.returncode != 0, job.stdout + job.stderr
    assert requeues() == [] and not (d / "C.h5").exists()
