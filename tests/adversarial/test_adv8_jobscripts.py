"""Eighth adversarial pass, area 7: job scripts — every `#SBATCH` line before the first
command (SLURM ignores later ones) for each kind, LRMPI_CACHE_DIR reaching the ranks of an
infer script, a relative `--site-env`, a CRT keep-latest ranks-writing script stopped with
nothing on disk then requeued to completion, the same for an infer script, `-o` in a missing
folder or naming an input, `--template` with other arguments, a `--python` without lrmpi.
jobscripts/README.md: `lrmpi jobscript` prints a ready script with absolute paths; exit codes
are lrmpi's (4, nothing on disk, is never 0), a stop is requeued until MAX_RESTARTS; lrmpi's
own LRMPI_* settings reach the ranks."""
import os
import shutil

import numpy as np
import pytest

from adversary import PY, assert_one_error, attrs_of, load, mlp_onnx, run, save
from test_adv_jobscripts import generate, slurm, work  # noqa: F401  (fixtures)


@pytest.mark.parametrize("kind", ["matmul", "infer", "matmul-mpiexec", "infer-mpiexec"])
def test_every_sbatch_line_before_the_first_command(work, kind):
    """With two `--sbatch` options, every `#SBATCH` line of the printed script comes before
    its first command, and each extra option appears exactly once."""
    a, b, d = work
    text = generate(kind, a, b, "-o", d / "C.h5", "--sbatch=--partition=long",
                    "--sbatch=--mem=4G")
    lines = text.splitlines()
    first_cmd = next(i for i, x in enumerate(lines) if x.strip() and not x.startswith("#"))
    sb = [i for i, x in enumerate(lines) if x.startswith("#SBATCH")]
    assert sb and max(sb) < first_cmd
    assert lines.count("#SBATCH --partition=long") == 1
    assert lines.count("#SBATCH --mem=4G") == 1


@pytest.fixture
def infer_work(tmp_path, rng):
    model = mlp_onnx(tmp_path / "m.onnx", rng)
    data = save(tmp_path / "d.npy", rng.standard_normal((5, 16)).astype(np.float32))
    return model, data, tmp_path


def test_cache_dir_reaches_the_ranks_of_an_infer_script(slurm, infer_work):
    """LRMPI_CACHE_DIR set when the script runs: the infer job (2 tasks) fills that folder."""
    go, _ = slurm
    model, data, d = infer_work
    cache = d / "mycache"
    r = go(generate("infer", model, data, "-o", d / "s.h5", "--planes", "2"),
           env={"LRMPI_CACHE_DIR": str(cache)})
    assert r.returncode == 0, r.stdout + r.stderr
    assert cache.is_dir() and any(n.startswith("graph-") for n in os.listdir(cache))


def test_relative_site_env_is_sourced_from_another_folder(slurm, work):
    """`--site-env site.env` given relative to the folder of `lrmpi jobscript`: the script,
    run from another folder, sources it (it exports a variable the job's log shows)."""
    go, _ = slurm
    a, b, d = work
    (d / "site.env").write_text(f'touch "{d}/SOURCED"\n')
    r = run("jobscript", "matmul", a, b, "-o", d / "C.h5", "--planes", "2", "--site-env",
            "site.env", "--python", PY, cwd=d)
    assert r.returncode == 0, r.stderr
    res = go(r.stdout, cwd="/")
    assert res.returncode == 0, res.stdout + res.stderr
    assert (d / "SOURCED").exists()


def test_crt_keep_latest_ranks_script_stopped_empty_then_requeued(slurm, work):
    """`--final crt --moduli 3 --keep latest --write ranks`, 2 tasks, an end time already
    past: exit 4, one requeue; the requeued run (restart 1) completes, exit 0, C equal to a
    plain run's."""
    go, requeues = slurm
    a, b, d = work
    opts = ("--planes", "2", "--final", "crt", "--moduli", "3", "--keep", "latest",
            "--write", "ranks")
    text = generate("matmul", a, b, "-o", d / "C.h5", *opts)
    r1 = go(text, env={"SLURM_JOB_END_TIME": "1"})
    assert r1.returncode == 4, r1.stdout + r1.stderr
    assert len(requeues()) == 1
    r2 = go(text, env={"SLURM_RESTART_COUNT": "1"})
    assert r2.returncode == 0, r2.stdout + r2.stderr
    ref = d / "R.h5"
    run("matmul", a, b, "-o", ref, "--planes", "2", "--final", "crt", "--moduli", "3")
    assert np.array_equal(load(d / "C.h5")[0], load(ref)[0])
    assert len(requeues()) == 1


def test_infer_keep_latest_script_stopped_empty_then_requeued(slurm, infer_work):
    """An `infer --keep latest --rule gray` script with an end time already past: exit 4,
    requeued; the rerun completes with status complete."""
    go, requeues = slurm
    model, data, d = infer_work
    text = generate("infer", model, data, "-o", d / "s.h5", "--planes", "2", "--keep",
                    "latest", "--rule", "gray")
    r1 = go(text, env={"SLURM_JOB_END_TIME": "1", "LRMPI_CACHE_DIR": ""})
    assert r1.returncode == 4, r1.stdout + r1.stderr
    assert len(requeues()) == 1
    r2 = go(text, env={"SLURM_RESTART_COUNT": "1", "LRMPI_CACHE_DIR": ""})
    assert r2.returncode == 0, r2.stdout + r2.stderr
    assert attrs_of(d / "s.h5")["status"] == "complete"


def test_output_in_a_missing_folder(slurm, work):
    """`-o missing/C.h5`: refused when printed (one line) or, when run, exit 1, one line,
    no requeue."""
    go, requeues = slurm
    a, b, d = work
    r = run("jobscript", "matmul", a, b, "-o", d / "missing" / "C.h5", "--python", PY)
    if r.returncode != 0:
        assert_one_error(r, codes=(1, 2))
        return
    res = go(r.stdout)
    assert res.returncode == 1, res.stdout + res.stderr
    assert requeues() == []


def test_output_naming_an_input(slurm, work):
    """`-o A.npy` (the first input): refused when printed or when run (exit 1 or 2, no
    requeue); A.npy unchanged either way."""
    go, requeues = slurm
    a, b, d = work
    from adversary import digest
    before = digest(a)
    r = run("jobscript", "matmul", a, b, "-o", a, "--python", PY)
    if r.returncode != 0:
        assert_one_error(r, codes=(1, 2))
    else:
        res = go(r.stdout)
        assert res.returncode in (1, 2), res.stdout + res.stderr
        assert requeues() == []
    assert digest(a) == before


def test_template_with_other_arguments(work):
    """`--template` given with inputs and options: the template as shipped (as `--template`
    alone prints it), or one line, exit 2."""
    a, b, d = work
    alone = run("jobscript", "matmul", "--template")
    assert alone.returncode == 0
    r = run("jobscript", "matmul", a, b, "-o", d / "C.h5", "--planes", "3", "--template")
    if r.returncode == 0:
        assert r.stdout == alone.stdout
    else:
        assert_one_error(r, code=2)


def test_python_without_lrmpi_fails_without_requeue(slurm, work, tmp_path):
    """`--python` naming a Python that lacks lrmpi (a bare venv): refused when printed, or
    the script exits non-zero without a requeue (not a stop)."""
    go, requeues = slurm
    a, b, d = work
    bare = shutil.which("python3", path="/usr/bin:/bin")
    if bare is None:
        pytest.skip("no system python3")
    r = run("jobscript", "matmul", a, b, "-o", d / "C.h5", "--python", bare)
    if r.returncode != 0:
        assert_one_error(r, codes=(1, 2))
        return
    res = go(r.stdout)
    assert res.returncode not in (0, 3, 4), res.stdout + res.stderr
    assert requeues() == []
