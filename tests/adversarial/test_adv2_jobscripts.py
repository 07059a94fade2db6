"""Second adversarial pass, area 7: `lrmpi jobscript` — odd --time, --job-name, --python,
--site-env, --sbatch and OPTIONS values; requeue decisions at the edges. The scripts run
under the fake srun/scontrol/squeue of test_adv_jobscripts.py (no SLURM is touched)."""
import os
import subprocess
import time

import numpy as np
import pytest

from adversary import PY, SLOW, assert_one_error, attrs_of, load, mlp_onnx, run, save
from test_adv_jobscripts import generate, slurm, work  # noqa: F401  (fixtures)


def bash_n(text, tmp_path):
    p = tmp_path / "check.sbatch"
    p.write_text(text)
    return subprocess.run(["bash", "-n", str(p)], capture_output=True, text=True)


def sbatch_lines(text):
    return [line for line in text.splitlines() if line.startswith("#SBATCH")]


@pytest.mark.parametrize("value", ["abc", "1:2:3:4", "", "1-", "0:-5"])
def test_time_values_refused(tmp_path, value):
    """--time that SLURM would reject: exit 2, one line, no script."""
    r = run("jobscript", "matmul", "A.npy", "B.npy", "-o", "C.h5", "--time", value,
            cwd=tmp_path)
    assert_one_error(r, code=2)
    assert not r.stdout.startswith("#!")


def test_job_name_with_newline_cannot_add_sbatch_lines(tmp_path, work):
    """--job-name 'x\\n#SBATCH --partition=evil': refused, or written so that no extra
    #SBATCH line appears and bash parses the script."""
    a, b, d = work
    r = run("jobscript", "matmul", a, b, "-o", d / "C.h5", "--python", PY,
            "--job-name", "x\n#SBATCH --partition=evil")
    if r.returncode != 0:
        assert_one_error(r, code=2)
        return
    assert not any("evil" in line and "job-name" not in line for line in sbatch_lines(r.stdout))
    assert bash_n(r.stdout, tmp_path).returncode == 0


def test_job_name_with_shell_syntax_is_inert(slurm, work):
    """--job-name '$(touch${IFS}PWNED)' (one word of shell syntax): refused with one line,
    or the script runs and nothing is executed."""
    go, _ = slurm
    a, b, d = work
    r0 = run("jobscript", "matmul", a, b, "-o", d / "C.h5", "--planes", "1", "--python", PY,
             "--job-name", "$(touch${IFS}PWNED)`touch${IFS}PWNED2`")
    if r0.returncode != 0:
        assert_one_error(r0, code=2)
        return
    r = go(r0.stdout, cwd=str(d))
    assert r.returncode == 0, r.stdout + r.stderr
    for name in ("PWNED", "PWNED2"):
        assert not (d / name).exists() and not os.path.exists("/" + name)


def test_python_path_with_blanks(slurm, work, tmp_path):
    """--python '/…/my py/python' (a wrapper that runs this Python): the script runs it."""
    go, _ = slurm
    a, b, d = work
    folder = tmp_path / "my py"
    folder.mkdir()
    (folder / "python").write_text(f'#!/bin/sh\nexec "{PY}" "$@"\n')
    (folder / "python").chmod(0o755)
    r0 = run("jobscript", "matmul", a, b, "-o", d / "C.h5", "--planes", "1",
             "--python", folder / "python")
    assert r0.returncode == 0, r0.stderr
    r = go(r0.stdout)
    assert r.returncode == 0, r.stdout + r.stderr
    assert attrs_of(d / "C.h5")["status"] == "complete"


def test_site_env_with_blank_and_quote_is_sourced(slurm, work, tmp_path):
    """--site-env "site it's.env": sourced (it exports a variable the job sees)."""
    go, _ = slurm
    a, b, d = work
    marker = tmp_path / "sourced"
    env_file = tmp_path / "site it's.env"
    env_file.write_text(f"touch '{marker}'\n")
    text = generate("matmul", a, b, "-o", d / "C.h5", "--planes", "1", "--site-env", env_file)
    r = go(text)
    assert r.returncode == 0, r.stdout + r.stderr
    assert marker.exists()


def test_site_env_missing(slurm, work, tmp_path):
    """--site-env naming a file that does not exist: refused with one line, or the script
    fails before starting lrmpi (no output written)."""
    go, _ = slurm
    a, b, d = work
    r = run("jobscript", "matmul", a, b, "-o", d / "C.h5", "--python", PY,
            "--site-env", tmp_path / "nope.env")
    if r.returncode != 0:
        assert_one_error(r, codes=(1, 2))
        return
    res = go(r.stdout)
    assert res.returncode != 0
    assert not (d / "C.h5").exists()


def test_relative_inputs_with_dotdot_become_absolute(slurm, tmp_path, rng):
    """Inputs and output given as ../data/A.npy from a subfolder: the script names them
    absolutely and runs from / ."""
    go, _ = slurm
    (tmp_path / "data").mkdir()
    (tmp_path / "run").mkdir()
    save(tmp_path / "data" / "A.npy", rng.standard_normal((6, 5)))
    save(tmp_path / "data" / "B.npy", rng.standard_normal((5, 4)))
    r0 = run("jobscript", "matmul", "../data/A.npy", "../data/B.npy", "-o", "../data/C.h5",
             "--planes", "1", "--python", PY, cwd=tmp_path / "run")
    assert r0.returncode == 0, r0.stderr
    assert "../" not in "".join(l for l in r0.stdout.splitlines() if l.startswith(("INPUTS", "OUT")))
    r = go(r0.stdout)
    assert r.returncode == 0, r.stdout + r.stderr
    assert attrs_of(tmp_path / "data" / "C.h5")["status"] == "complete"


def _near_end(tmp_path, seconds=4):
    return {**SLOW, "LRMPI_TEST_SLOW_S": "1.0", "SLURM_JOB_END_TIME": str(int(time.time()) + seconds)}


def test_no_deadline_ok_stop_exits_3_and_requeues(slurm, work):
    """--no-deadline-ok, stopped by a near end time with resolution 1 on disk: the script
    exits 3 and asks scontrol to requeue."""
    go, requeues = slurm
    a, b, d = work
    text = generate("matmul", a, b, "-o", d / "C.h5", "--planes", "3", "--no-deadline-ok")
    r = go(text, env=_near_end(d, 5))
    out = r.stdout + r.stderr
    if attrs_of(d / "C.h5")["completed"] == 0:
        assert r.returncode == 4, out
    else:
        assert r.returncode == 3, out
    assert requeues() and requeues()[0].startswith("requeue"), out


def test_restart_at_max_keeps_code_no_requeue(slurm, work):
    """SLURM_RESTART_COUNT equal to --max-restarts 1 and a stop: no requeue; the script's
    code is lrmpi's (0 with a resolution on disk, 4 without)."""
    go, requeues = slurm
    a, b, d = work
    text = generate("matmul", a, b, "-o", d / "C.h5", "--planes", "3", "--max-restarts", "1")
    r = go(text, env={**_near_end(d, 5), "SLURM_RESTART_COUNT": "1"})
    out = r.stdout + r.stderr
    assert requeues() == [], out
    completed = attrs_of(d / "C.h5")["completed"]
    assert r.returncode == (0 if completed else 4), out


def test_rerun_after_complete_changes_nothing(slurm, work):
    """The script run a second time (a requeue after completion): exit 0, no requeue, the
    result unchanged."""
    go, requeues = slurm
    a, b, d = work
    text = generate("matmul", a, b, "-o", d / "C.h5", "--planes", "2")
    assert go(text).returncode == 0
    C0 = load(d / "C.h5")[0]
    r = go(text, env={"SLURM_RESTART_COUNT": "1"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert requeues() == []
    assert np.array_equal(load(d / "C.h5")[0], C0)


def test_sbatch_option_with_blank(tmp_path, work):
    """--sbatch '--comment=hello world': one #SBATCH line holding it (or refused), bash -n."""
    a, b, d = work
    r = run("jobscript", "matmul", a, b, "-o", d / "C.h5", "--python", PY,
            "--sbatch", "--comment=hello world")
    if r.returncode != 0:
        assert_one_error(r, code=2)
        return
    assert sum("hello world" in line for line in sbatch_lines(r.stdout)) == 1
    assert bash_n(r.stdout, tmp_path).returncode == 0


def test_options_in_equals_form_and_model_output_with_blank(slurm, tmp_path, rng):
    """infer with `--planes=2` and `--model-output 'hidden out'` (a name with a blank):
    each stays one word in OPTIONS; the script runs and scores that output."""
    go, _ = slurm
    import onnx
    model = mlp_onnx(tmp_path / "m.onnx", rng, sizes=(16, 8, 4), outputs=["r0"])
    m = onnx.load(model)
    for node in m.graph.node:
        node.input[:] = ["hidden out" if x == "r0" else x for x in node.input]
        node.output[:] = ["hidden out" if x == "r0" else x for x in node.output]
    for o in m.graph.output:
        if o.name == "r0":
            o.name = "hidden out"
    onnx.save(m, model)
    d = save(tmp_path / "d.npy", rng.standard_normal((4, 16)).astype(np.float32))
    text = generate("infer", model, d, "-o", tmp_path / "s.h5", "--planes=2",
                    "--model-output", "hidden out", "--rule", "none")
    r = go(text)
    assert r.returncode == 0, r.stdout + r.stderr
    import h5py
    with h5py.File(tmp_path / "s.h5", "r") as f:
        assert f["resolutions/002/scores"].shape == (4, 8)
