"""Fifth adversarial pass, area 7: job scripts — contradicting options (`--overwrite
--resume`, `--deadline-ok --no-deadline-ok`), an output through a symlinked folder,
`FILE.h5:/dataset` inputs given relative, `--overwrite` on a requeued run, CRT with ranks
writing through the fake srun."""
import os
import re

import h5py
import numpy as np

from adversary import PY, assert_one_error, attrs_of, digest, load, run, save
from test_adv_jobscripts import generate, slurm, work  # noqa: F401  (fixtures)


def test_overwrite_with_resume_refused_as_the_job_would(work):
    """`--overwrite --resume`: the job's parser refuses the pair (exit 2); the jobscript
    README says the job's options are checked by the job's parser when the script is
    printed, and the main README that contradicting options are never silently dropped."""
    a, b, d = work
    assert run("matmul", a, b, "-o", d / "X.h5", "--overwrite", "--resume").returncode == 2
    r = run("jobscript", "matmul", a, b, "-o", d / "C.h5", "--overwrite", "--resume",
            "--python", PY)
    assert_one_error(r, code=2, contains=("resume",))


def test_deadline_ok_and_no_deadline_ok_refused(work):
    """`--deadline-ok` (the job's) with `--no-deadline-ok` (the script's): they contradict;
    one line, exit 2, never one of them silently dropped."""
    a, b, d = work
    r = run("jobscript", "matmul", a, b, "-o", d / "C.h5", "--deadline-ok", "--no-deadline-ok",
            "--python", PY)
    assert_one_error(r, code=2, contains=("deadline-ok",))


def test_output_through_symlinked_folder_and_h5_inputs_relative(slurm, tmp_path, rng):
    """Inputs `in.h5:/A` and `in.h5:/B` given relative, `-o link/C.h5` with link -> real:
    the script names absolute paths (dataset names kept), runs from `/`, and writes the
    result into real/."""
    go, _ = slurm
    A, B = rng.standard_normal((20, 8)), rng.standard_normal((8, 6))
    with h5py.File(tmp_path / "in.h5", "w") as f:
        f["A"], f["B"] = A, B
    (tmp_path / "real").mkdir()
    os.symlink("real", tmp_path / "link")
    r = run("jobscript", "matmul", "in.h5:/A", "in.h5:/B", "-o", "link/C.h5", "--planes", "2",
            "--python", PY, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    line = next(x for x in r.stdout.splitlines() if x.startswith("INPUTS="))
    assert f"{tmp_path}/in.h5:/A" in line and f"{tmp_path}/in.h5:/B" in line, line
    job = go(r.stdout)
    assert job.returncode == 0, job.stdout + job.stderr
    C, attrs = load(tmp_path / "real" / "C.h5")
    assert np.abs(C - A @ B).max() <= attrs["bound_abs"]


def test_overwrite_on_a_requeued_run_is_a_resume(slurm, work):
    """`--overwrite` in OPTIONS, run as a requeue (SLURM_RESTART_COUNT=1) over a complete
    result of the same inputs: the README says `--overwrite` is passed on the first run
    only, so it resumes ("complete; nothing to do"), exit 0, the result unchanged."""
    go, requeues = slurm
    a, b, d = work
    text = generate("matmul", a, b, "-o", d / "C.h5", "--planes", "2", "--overwrite")
    first = go(text)
    assert first.returncode == 0, first.stdout + first.stderr
    before = {p: digest(os.path.join(dp, p)) for dp, _, fs in os.walk(d / "C.h5.d") for p in fs
              if p != ".lock"}
    again = go(text, env={"SLURM_RESTART_COUNT": "1"})
    assert again.returncode == 0, again.stdout + again.stderr
    after = {p: digest(os.path.join(dp, p)) for dp, _, fs in os.walk(d / "C.h5.d") for p in fs
             if p != ".lock"}
    assert before == after
    assert requeues() == []


def test_crt_keep_latest_ranks_writing_script_three_tasks(slurm, tmp_path, rng):
    """`--final crt --moduli 16 --keep latest --write ranks` printed and run under the fake
    srun with 3 tasks on integer matrices: complete, the CRT C exact, one resolution kept."""
    go, requeues = slurm
    A = rng.integers(-500, 500, (30, 17)).astype(np.float64)
    B = rng.integers(-500, 500, (17, 11)).astype(np.float64)
    a, b = save(tmp_path / "A.npy", A), save(tmp_path / "B.npy", B)
    out = tmp_path / "C.h5"
    text = generate("matmul", a, b, "-o", out, "--planes", "1", "--final", "crt", "--moduli", "16",
                    "--keep", "latest", "--write", "ranks", "--ntasks", "3")
    assert re.search(r"OPTIONS=\(.*--write ranks", text), text
    job = go(text, env={"SLURM_NTASKS": "3"})
    assert job.returncode == 0, job.stdout + job.stderr
    assert attrs_of(out)["status"] == "complete"
    with h5py.File(out, "r") as f:
        assert len(f["resolutions"]) == 1
    C, _ = load(out)
    assert np.array_equal(C, (A.astype(np.int64) @ B.astype(np.int64)).astype(np.float64))
    assert requeues() == []
