"""Sixth adversarial pass, area 7: job scripts — options given twice or contradicting
(`--ntasks`/`--time`/`--job-name` against the same `#SBATCH` option through `--sbatch`),
options the script adds itself given again (`--resume`, `--deadline-ok`, `--requeue`), an
option of the other job kind. The README: options that contradict each other are refused,
never one of them silently dropped; the jobscript README: every option not its own is the
job's, checked by the job's parser."""
import re

import pytest

from adversary import PY, assert_one_error, attrs_of, run
from test_adv_jobscripts import generate, slurm, work  # noqa: F401  (fixtures)



@pytest.mark.parametrize("own, extra", [
    (["--ntasks", "4"], "--sbatch=--ntasks=8"),
    (["--time", "1:00:00"], "--sbatch=--time=2:00:00"),
    (["--job-name", "a"], "--sbatch=--job-name=b"),
])
def test_own_option_contradicted_through_sbatch(work, own, extra):
    """`--ntasks 4 --sbatch=--ntasks=8` (and `--time`, `--job-name` alike): one line naming
    the option, exit 2, no script."""
    a, b, d = work
    r = run("jobscript", "matmul", a, b, "-o", d / "C.h5", *own, extra, "--python", PY)
    assert r.stdout == ""
    assert_one_error(r, code=2, contains=(own[0].lstrip("-"),))


def test_options_the_script_adds_given_again_run(slurm, work):
    """`--resume` and `--deadline-ok` in the job's options (the srun script adds both
    itself): the script runs the job to the end, exit 0."""
    go, requeues = slurm
    a, b, d = work
    text = generate("matmul", a, b, "-o", d / "C.h5", "--planes", "2", "--resume",
                    "--deadline-ok")
    r = go(text)
    assert r.returncode == 0, r.stdout + r.stderr
    assert attrs_of(d / "C.h5")["status"] == "complete"
    assert requeues() == []


def test_requeue_option_with_srun_kind_requeues_once(slurm, work):
    """`--requeue` (lrmpi's own requeue) in a `matmul` (srun) script, which requeues by
    itself after srun returns: a stop at an end time already past asks SLURM for one
    requeue, not two, and keeps lrmpi's exit code 4."""
    go, requeues = slurm
    a, b, d = work
    text = generate("matmul", a, b, "-o", d / "C.h5", "--planes", "2", "--requeue")
    r = go(text, env={"SLURM_JOB_END_TIME": "1"})
    assert r.returncode == 4, r.stdout + r.stderr
    assert len(requeues()) == 1, requeues()


@pytest.mark.parametrize("kind, opts", [
    ("infer", ["--write", "ranks"]),
    ("infer", ["--final", "crt"]),
    ("matmul", ["--rule", "gray"]),
    ("matmul", ["--model-output", "y"]),
])
def test_option_of_the_other_kind_refused(work, tiny, kind, opts):
    """A matmul-only option for `infer`, an infer-only option for `matmul`: one line, exit
    2, no script."""
    a, b, d = work
    m1, _, data, _ = tiny
    inputs = (a, b) if kind == "matmul" else (m1, data)
    r = run("jobscript", kind, *inputs, "-o", d / "X.h5", *opts, "--python", PY)
    assert r.stdout == ""
    assert_one_error(r, code=2)


def test_options_given_twice_reach_the_script_as_the_job_reads_them(work):
    """`--planes 3 --planes 5`: the script's OPTIONS make the job do what `lrmpi matmul`
    with the same words does (its parser keeps the last), not a third thing."""
    a, b, d = work
    r = run("jobscript", "matmul", a, b, "-o", d / "C.h5", "--planes", "3", "--planes", "5",
            "--python", PY)
    assert r.returncode == 0, r.stderr
    line = [x for x in r.stdout.splitlines() if x.startswith("OPTIONS=")][0]
    planes = re.findall(r"--planes (\d+)", line)
    assert planes and planes[-1] == "5", line
    direct = run("matmul", a, b, "-o", d / "D.h5", "--planes", "3", "--planes", "5")
    assert direct.returncode == 0 and attrs_of(d / "D.h5")["planes"] == 5
