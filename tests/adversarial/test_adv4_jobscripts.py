"""Fourth adversarial pass, area 7: job scripts — the README's own OPTIONS example, a job
submitted twice at once, an output folder the job may not write, options passed through,
a read-only submission folder. Generated scripts run under the fake srun of
test_adv_jobscripts.py."""
import os
import re
import shlex
import subprocess

import numpy as np

from adversary import (NOCAP, PY, assert_ok, assert_one_error, attrs_of, load, run)
from test_adv_jobscripts import REPO, generate, slurm, work  # noqa: F401  (fixtures)


def test_readme_options_example_is_accepted(work):
    """jobscripts/README.md shows `OPTIONS=(--planes 6 --deadline '1h 30m')` as the way to
    pass values with blanks: those options are accepted by `lrmpi jobscript`."""
    a, b, d = work
    with open(os.path.join(REPO, "jobscripts", "README.md")) as f:
        text = f.read()
    m = re.search(r"OPTIONS=\(([^)]*)\)", text)
    assert m, "no OPTIONS example"
    opts = shlex.split(m.group(1))
    assert "--deadline" in opts
    r = run("jobscript", "matmul", a, b, "-o", d / "C.h5", *opts, "--python", PY)
    assert r.returncode == 0, r.stderr


def test_job_submitted_twice_at_once(slurm, work):
    """The same generated script started twice together (a double sbatch): one run
    completes (exit 0), the other fails with one lrmpi line, exit 1, and neither requeues;
    the result equals a direct run's."""
    go, requeues = slurm
    a, b, d = work
    text = generate("matmul", a, b, "-o", d / "C.h5", "--planes", "3")
    paths = []
    for i in (1, 2):
        paths.append(d / f"twice{i}.sbatch")
        paths[-1].write_text(text)
    fake = d / "fakebin"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update({"PATH": f"{fake}:{env['PATH']}", "SLURM_JOB_ID": "4242", "SLURM_NTASKS": "2"})
    procs = [subprocess.Popen(["bash", str(p)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env, cwd="/") for p in paths]
    res = [(p, *p.communicate(timeout=120)) for p in procs]
    codes = sorted(p.returncode for p, _, _ in res)
    if codes == [0, 0]:  # not at once after all (a loaded machine): the later one found
        assert any("already complete" in o + e for _, o, e in res), res  # it complete
    else:
        assert codes == [0, 1], [(p.returncode, o, e) for p, o, e in res]
        loser = [(p, o, e) for p, o, e in res if p.returncode == 1][0]
        assert len([ln for ln in (loser[1] + loser[2]).splitlines()
                    if ln.startswith("lrmpi: error")]) == 1, loser
    assert requeues() == []
    ref = d / "R.h5"
    assert_ok(run("matmul", a, b, "-o", ref, "--planes", "3"))
    assert np.array_equal(load(d / "C.h5")[0], load(ref)[0])


def test_output_folder_not_writable_exit_1_no_requeue(slurm, work):
    """The script's output folder is read-only for the job: exit 1 (never 0, 3 or 4) and
    no requeue."""
    go, requeues = slurm
    a, b, d = work
    ro = d / "ro"
    ro.mkdir()
    text = generate("matmul", a, b, "-o", ro / "C.h5", "--planes", "2")
    ro.chmod(0o555)
    try:
        path = d / "ro.sbatch"
        path.write_text(text)
        fake = d / "fakebin"
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
        env.update({"PATH": f"{fake}:{env['PATH']}", "SLURM_JOB_ID": "4242", "SLURM_NTASKS": "2"})
        r = subprocess.run([*NOCAP, "bash", str(path)], capture_output=True, text=True,
                           timeout=120, env=env, cwd="/")
    finally:
        ro.chmod(0o755)
    assert r.returncode == 1, r.stdout + r.stderr
    assert requeues() == [] and os.listdir(ro) == []


def test_crt_keep_latest_ranks_writing_pass_through(slurm, work):
    """--final crt --moduli 4 --keep latest --write ranks through the mpiexec script at 3
    tasks: complete, one resolution kept, C equal to a direct 1-rank run."""
    go, requeues = slurm
    a, b, d = work
    opts = ["--planes", "2", "--final", "crt", "--moduli", "4"]
    r = go(generate("matmul-mpiexec", a, b, "-o", d / "C.h5", *opts, "--keep", "latest",
                    "--write", "ranks", "--ntasks", "3"), env={"SLURM_NTASKS": "3"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert attrs_of(d / "C.h5")["status"] == "complete" and requeues() == []
    ref = d / "R.h5"
    assert_ok(run("matmul", a, b, "-o", ref, *opts))
    assert np.array_equal(load(d / "C.h5")[0], load(ref)[0])


def test_script_run_from_a_read_only_folder(slurm, work, tmp_path):
    """Submitted from a read-only folder that holds none of the inputs (the script has
    absolute paths): the job completes where -o says."""
    go, requeues = slurm
    a, b, d = work
    cwd = tmp_path / "readonly cwd"
    cwd.mkdir()
    text = generate("matmul", a, b, "-o", d / "out" / ".." / "C.h5",
                    "--planes", "2")
    (d / "out").mkdir()
    cwd.chmod(0o555)
    try:
        r = go(text, cwd=str(cwd))
    finally:
        cwd.chmod(0o755)
    assert r.returncode == 0, r.stdout + r.stderr
    assert attrs_of(d / "C.h5")["status"] == "complete"
    assert os.listdir(cwd) == []


def test_bad_deadline_in_options_refused_when_printed(work):
    """A job option the job would refuse (--deadline 0) is refused when the script is
    printed: one line, exit 2, no script on stdout."""
    a, b, d = work
    r = run("jobscript", "matmul", a, b, "-o", d / "C.h5", "--deadline", "0", "--python", PY)
    assert_one_error(r, code=2, contains=("--deadline",))
    assert not r.stdout.startswith("#!")
