"""Seventh adversarial pass, area 7: job scripts — relative `--python` / `--mpiexec`, short
`#SBATCH` spellings and `--no-requeue` through `--sbatch`, `--max-restarts 0`, one task,
an infer-mpiexec script with `--model-output`, `--keep latest` requeued runs, a submit
folder other than the inputs'. The README: `lrmpi jobscript` prints a ready script with
absolute paths; an `--sbatch` option the script sets itself is refused; exit codes are
lrmpi's, a stop is requeued until MAX_RESTARTS."""
import os

import numpy as np
import pytest

from adversary import (PY, assert_one_error, attrs_of, load, mlp_onnx, mpiexec, run, save)
from test_adv_jobscripts import generate, slurm, work  # noqa: F401  (fixtures)


def rel(path, start):
    return os.path.relpath(path, start)


@pytest.mark.parametrize("kind", ["matmul", "matmul-mpiexec"])
def test_relative_python_and_mpiexec_become_absolute(slurm, work, kind):
    """`--python` (and `--mpiexec`) given relative to the folder where `lrmpi jobscript`
    runs: the script, submitted from another folder, completes the job."""
    go, _ = slurm
    a, b, d = work
    extra = ["--python", rel(PY, d)]
    if kind.endswith("mpiexec"):
        extra += ["--mpiexec", rel(mpiexec(), d)]
    r = run("jobscript", kind, a, b, "-o", d / "C.h5", "--planes", "2", *extra, cwd=d)
    assert r.returncode == 0, r.stderr
    deep = d / "x" / "y" / "z" / "w"   # where ../../../work/... names nothing
    deep.mkdir(parents=True)
    res = go(r.stdout, env={"SLURM_SUBMIT_DIR": str(deep)})
    assert res.returncode == 0, res.stdout + res.stderr
    assert attrs_of(d / "C.h5")["status"] == "complete"


@pytest.mark.parametrize("opt", ["--sbatch=--no-requeue", "--sbatch=-J=x", "--sbatch=-t=10",
                                 "--sbatch=-o=log", "--sbatch=--signal=B:USR2@10"])
def test_sbatch_negations_and_short_spellings_refused(work, opt):
    """`--no-requeue` (the negation of the script's own `--requeue`), short spellings of
    options the script sets (`-J`, `-t`, `-o`) and another `--signal`: one line, exit 2,
    no script on stdout."""
    a, b, d = work
    r = run("jobscript", "matmul", a, b, "-o", d / "C.h5", opt, "--python", PY)
    assert r.stdout == ""
    assert_one_error(r, code=2)


def test_max_restarts_zero_stop_keeps_code_and_no_requeue(slurm, work):
    """`--max-restarts 0`, an end time already past: exit 4 (nothing on disk), no
    `scontrol requeue`, the log says it stopped after 0 restarts."""
    go, requeues = slurm
    a, b, d = work
    text = generate("matmul", a, b, "-o", d / "C.h5", "--planes", "2", "--max-restarts", "0")
    r = go(text, env={"SLURM_JOB_END_TIME": "1"})
    assert r.returncode == 4, r.stdout + r.stderr
    assert requeues() == []
    assert "0 restart" in r.stdout


def test_one_task_script_completes(slurm, work):
    """`--ntasks 1` (root alone) run with SLURM_NTASKS=1: complete, exit 0, C as a plain
    run's."""
    go, _ = slurm
    a, b, d = work
    text = generate("matmul", a, b, "-o", d / "C.h5", "--planes", "2", "--ntasks", "1")
    assert "#SBATCH --ntasks=1" in text
    r = go(text, env={"SLURM_NTASKS": "1"})
    assert r.returncode == 0, r.stdout + r.stderr
    ref = d / "R.h5"
    run("matmul", a, b, "-o", ref, "--planes", "2")
    assert np.array_equal(load(d / "C.h5")[0], load(ref)[0])


def test_infer_mpiexec_script_with_model_output(slurm, tmp_path, rng):
    """An `infer-mpiexec` script with `--model-output` of a two-output model and `--rule
    none` at 2 tasks: exit 0, complete, scores equal a direct run's."""
    import onnx
    from onnx import TensorProto, helper
    go, _ = slurm
    p = mlp_onnx(tmp_path / "two.onnx", rng, sizes=(16, 12, 4))
    m = onnx.load(p)
    name = m.graph.output[0].name
    m.graph.output.append(helper.make_tensor_value_info("r0", TensorProto.FLOAT, ["N", 12]))
    onnx.save(m, p)
    data = save(tmp_path / "d.npy", rng.standard_normal((5, 16)).astype(np.float32))
    text = generate("infer-mpiexec", p, data, "-o", tmp_path / "S.h5", "--model-output", name,
                    "--rule", "none", "--planes", "2")
    r = go(text, env={"LRMPI_CACHE_DIR": ""})
    assert r.returncode == 0, r.stdout + r.stderr
    ref = tmp_path / "R.h5"
    rr = run("infer", p, data, "-o", ref, "--model-output", name, "--rule", "none",
             "--planes", "2", env={"LRMPI_CACHE_DIR": ""})
    assert rr.returncode == 0, rr.stderr
    from adversary6 import assert_same
    assert_same(tmp_path / "S.h5", ref)


def test_keep_latest_script_stopped_then_requeued_run_completes(slurm, work):
    """`--keep latest` script: a first run stopped at once (end time past, exit 4,
    requeued), the requeued run (SLURM_RESTART_COUNT=1) completes with one resolution
    listed and no resume data."""
    go, requeues = slurm
    a, b, d = work
    text = generate("matmul", a, b, "-o", d / "C.h5", "--planes", "3", "--keep", "latest")
    r = go(text, env={"SLURM_JOB_END_TIME": "1"})
    assert r.returncode == 4, r.stdout + r.stderr
    assert len(requeues()) == 1
    r = go(text, env={"SLURM_RESTART_COUNT": "1"})
    assert r.returncode == 0, r.stdout + r.stderr
    import glob
    assert attrs_of(d / "C.h5")["status"] == "complete"
    assert glob.glob(str(d / "C.h5.d" / "*" / "sums*")) == []


def test_script_from_other_submit_folder_with_relative_inputs(slurm, work):
    """Inputs and output given relative to the folder of `lrmpi jobscript`, the script run
    with SLURM_SUBMIT_DIR elsewhere: complete, the output where it was named."""
    go, _ = slurm
    a, b, d = work
    os.makedirs(d / "sub")
    r = run("jobscript", "matmul", "A.npy", "B.npy", "-o", "sub/C.h5", "--planes", "2",
            "--python", PY, cwd=d)
    assert r.returncode == 0, r.stderr
    other = d / "elsewhere"
    other.mkdir()
    res = go(r.stdout, env={"SLURM_SUBMIT_DIR": str(other)})
    assert res.returncode == 0, res.stdout + res.stderr
    assert attrs_of(d / "sub" / "C.h5")["status"] == "complete"
    assert os.listdir(other) == [] or all(n.endswith(".log") for n in os.listdir(other))


def test_overwrite_in_options_of_a_requeued_keep_latest_run_resumes(slurm, work):
    """`--overwrite --keep latest` over a complete earlier result: the first run (restart 0)
    replaces it; a second run as restart 1 resumes (changes nothing), exit 0."""
    go, requeues = slurm
    a, b, d = work
    out = d / "C.h5"
    run("matmul", a, b, "-o", out, "--planes", "2")
    A2 = np.load(a) * 2
    a2 = save(d / "A2.npy", A2)
    text = generate("matmul", a2, b, "-o", out, "--planes", "2", "--overwrite",
                    "--keep", "latest")
    r = go(text)
    assert r.returncode == 0, r.stdout + r.stderr
    jid = attrs_of(out)["job_id"]
    r = go(text, env={"SLURM_RESTART_COUNT": "1"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert attrs_of(out)["job_id"] == jid and attrs_of(out)["keep"] == "latest"
    B = np.load(b)
    C, at = load(out)
    assert np.abs(C - A2 @ B).max() <= at["bound_abs"]
