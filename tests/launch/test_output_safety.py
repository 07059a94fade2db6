"""The output is precious: -o never destroys an input, a foreign file or a better
result; one writer per output; relocatable checkpoints; Ctrl-C and closed pipes;
entries beyond the planes' reach. Each case runs the real CLI, mostly under mpiexec."""
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from launching import (alive, finish, kill_tree, lrmpi_cmd, open_mpi, run, start,
                       wait_for_resolutions)

from lrmpi import LayeredMatmul
from lrmpi.jobs.checkpoint import Checkpoint
from lrmpi.jobs.matmul import load_result

SLOW = {"LRMPI_TEST_SLOW_RANK": "1", "LRMPI_TEST_SLOW_S": "0.1", "LRMPI_ROOT_COMPUTES": "no"}


def errors(p):
    return [ln for ln in p.stderr.splitlines() if ln.startswith("lrmpi: error:")]


def complete_result(a, b, out, planes=2, n=3):
    p = run("matmul", a, b, "-o", out, "--planes", planes, n=n)
    assert p.returncode == 0, p.stderr
    return Checkpoint(out)


# --- A: -o never replaces an input or a file lrmpi did not write ---

def test_output_that_is_an_input_or_a_foreign_file_is_refused_untouched(operands, tmp_path):
    import h5py
    _, _, a, b = operands
    h5 = tmp_path / "in.h5"
    with h5py.File(h5, "w") as f:
        f["S"] = np.ones((96, 120))
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = [1, 2, 3]
    copy = tmp_path / "A_copy.npy"
    shutil.copy(a, copy)
    cases = [([copy, b, "-o", copy], copy, "is one of the job's inputs"),
             ([a, f"{h5}:/S", "-o", h5], h5, "is one of the job's inputs"),
             ([a, b, "-o", notes], notes, "was not written by lrmpi"),
             ([a, b, "-o", other], other, "was not written by lrmpi")]
    for argv, victim, msg in cases:
        before = victim.read_bytes()
        p = run("matmul", *argv, n=3)
        assert p.returncode == 2 and len(errors(p)) == 1 and msg in errors(p)[0], p.stderr
        assert victim.read_bytes() == before
        assert not os.path.exists(str(victim) + ".d")  # nothing created beside it


def test_an_existing_result_needs_resume_or_overwrite(operands, tmp_path):
    _, _, a, b = operands
    out = tmp_path / "good.h5"
    complete_result(a, b, out)
    before = load_result(out)[0]
    p = run("matmul", a, b, "-o", out, "--planes", 3, n=3)
    assert p.returncode == 2 and "pass --resume to continue it or --overwrite" in p.stderr
    np.testing.assert_array_equal(load_result(out)[0], before)
    p = run("matmul", a, b, "-o", out, "--planes", 2, "--resume", n=3)
    assert p.returncode == 0 and "already complete" in p.stderr


# --- B: a job that stops early never leaves less than before ---

def test_overwrite_that_stops_early_keeps_the_earlier_result(operands, tmp_path):
    A, B, a, b = operands
    out = tmp_path / "good.h5"
    ck = complete_result(a, b, out, planes=8)
    before, job_id = load_result(out)[0], ck.job_id
    p = run("matmul", a, b, "-o", out, "--planes", 8, "--order", "pairwise", "--overwrite",
            "--deadline", "2s", n=2, env={**SLOW, "LRMPI_TEST_SLOW_S": "0.2"}, timeout=60)
    assert p.returncode == 3, p.stderr
    assert "kept the earlier result" in p.stderr
    ck = Checkpoint(out)
    assert ck.job_id == job_id and ck.attrs["status"] == "complete"
    np.testing.assert_array_equal(load_result(out)[0], before)
    assert os.listdir(str(out) + ".d") == [".lock", job_id] or \
        sorted(os.listdir(str(out) + ".d")) == sorted([".lock", job_id])


def test_overwrite_that_completes_replaces_and_cleans_up(operands, tmp_path):
    A, B, a, b = operands
    out = tmp_path / "c.h5"
    old = complete_result(a, b, out, planes=2)
    p = run("matmul", a, b, "-o", out, "--planes", 3, "--overwrite", n=3)
    assert p.returncode == 0, p.stderr
    new = Checkpoint(out)
    assert new.job_id != old.job_id and new.attrs["planes"] == 3
    assert not os.path.exists(os.path.join(str(out) + ".d", old.job_id))
    np.testing.assert_array_equal(load_result(out)[0],
                                  list(LayeredMatmul(A, B, planes=3))[-1].C)


# --- C: an output that cannot be replaced is refused before any work ---

def test_an_immutable_output_is_refused_and_left_readable(operands, tmp_path):
    _, _, a, b = operands
    out = tmp_path / "keep.h5"
    complete_result(a, b, out)
    if subprocess.run(["chattr", "+i", str(out)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not supported here")
    try:
        p = run("matmul", a, b, "-o", out, "--planes", 2, "--overwrite", n=3)
        assert p.returncode == 1 and len(errors(p)) == 1, p.stderr
        assert "cannot write the checkpoint" in errors(p)[0]
        ck = Checkpoint(out)
        assert ck.attrs["status"] == "complete"
        for i in ck.resolution_indices():
            ck.resolution(i)
    finally:
        subprocess.run(["chattr", "-i", str(out)])


# --- D: relocatable, self-identifying checkpoints ---

def test_copied_checkpoints_never_serve_another_jobs_data(tmp_path):
    rng = np.random.default_rng(5)
    A, B = rng.standard_normal((30, 20)), rng.standard_normal((20, 25))
    np.save(tmp_path / "A.npy", A)
    np.save(tmp_path / "B.npy", B)
    np.save(tmp_path / "A2.npy", rng.standard_normal((16, 16)))
    out = tmp_path / "Cx.h5"
    complete_result(tmp_path / "A.npy", tmp_path / "B.npy", out)
    shutil.copy(out, tmp_path / "backup.h5")
    shutil.copytree(str(out) + ".d", tmp_path / "backup.h5.d")
    p = run("matmul", tmp_path / "A2.npy", tmp_path / "A2.npy", "-o", out, "--planes", 2,
            "--overwrite", n=3)
    assert p.returncode == 0, p.stderr
    C, _ = load_result(tmp_path / "backup.h5")
    assert C.shape == (30, 25)
    np.testing.assert_array_equal(C, list(LayeredMatmul(A, B, planes=2))[-1].C)
    assert load_result(out)[0].shape == (16, 16)
    # renamed together: still readable; the file alone: one clear error naming pack
    os.rename(tmp_path / "backup.h5", tmp_path / "moved.h5")
    os.rename(tmp_path / "backup.h5.d", tmp_path / "moved.h5.d")
    assert load_result(tmp_path / "moved.h5")[0].shape == (30, 25)
    p = run("inspect", tmp_path / "moved.h5")
    assert p.returncode == 0 and "30x20 @ 20x25" in p.stdout
    p = run("pack", tmp_path / "moved.h5", tmp_path / "one.h5")
    assert p.returncode == 0, p.stderr
    shutil.rmtree(tmp_path / "moved.h5.d")
    with pytest.raises(Exception, match="lrmpi pack"):
        load_result(tmp_path / "moved.h5")
    np.testing.assert_array_equal(load_result(tmp_path / "one.h5")[0], C)
    p = run("inspect", tmp_path / "one.h5")
    assert p.returncode == 0 and "status=complete" in p.stdout


# --- G: one writer per output ---

def test_a_second_job_on_the_same_output_is_refused_while_the_first_runs(operands, tmp_path):
    _, _, a, b = operands
    out = tmp_path / "c.h5"
    first = start("matmul", a, b, "-o", out, "--planes", 8, "--order", "pairwise", n=2,
                  env=SLOW)
    try:
        wait_for_resolutions(out, 1, first)
        p = run("matmul", a, b, "-o", out, "--planes", 8, "--overwrite", n=3)
        assert p.returncode == 1 and len(errors(p)) == 1, p.stderr
        assert "another lrmpi job" in errors(p)[0] and "is writing" in errors(p)[0]
        first.send_signal(signal.SIGTERM)
        rc, err = finish(first, 30)
    finally:
        kill_tree(first)
    assert rc == 3, err
    # the lock died with the first job: a new one may resume it
    p = run("matmul", a, b, "-o", out, "--planes", 8, "--order", "pairwise", "--resume", n=3)
    assert p.returncode == 0, p.stderr


# --- F: Ctrl-C is a stop like SIGTERM ---

def test_ctrl_c_under_mpiexec_stops_every_rank_cleanly(operands, tmp_path):
    from launching import descendants
    _, _, a, b = operands
    out = tmp_path / "c.h5"
    # every task on the one worker, which sleeps 0.5 s (stoppably) before each: the job
    # cannot end before the Ctrl-C lands, however the signal travels (at -n 3 the other
    # worker, not slowed, finished the job in two of four CI runs while Open MPI's
    # mpiexec was still turning the Ctrl-C into a SIGTERM)
    proc = start("matmul", a, b, "-o", out, "--planes", 8, "--order", "pairwise", n=2,
                 env={**SLOW, "LRMPI_TEST_SLOW_S": "0.5"})
    try:
        wait_for_resolutions(out, 1, proc)
        ranks = descendants(proc.pid)
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal does on Ctrl-C
        t = time.time()
        rc, err = finish(proc, 20)
        took = time.time() - t
        if open_mpi():
            # its ranks wait in MPI_Finalize (the Python program has ended) until its
            # mpiexec SIGKILLs them, about 2 s after the SIGTERM, and returns at once: a
            # process with that SIGKILL pending takes a moment to be torn down
            limit = time.time() + 2.0
            while alive(ranks) and time.time() < limit:
                time.sleep(0.05)
    finally:
        kill_tree(proc)
    assert not alive(ranks)
    assert "hung" not in err and "BAD TERMINATION" not in err
    ck = Checkpoint(out)
    assert ck.attrs["status"] == "deadline"
    if open_mpi():  # its mpiexec turns Ctrl-C into SIGTERM to the ranks and exits 1,
        # after about 2 s of its own (README, "Open MPI")
        assert rc == 1 and took < 4.0 and ck.attrs["message"] == "received SIGTERM", err
    else:
        assert rc == 130, err
        assert took < 2.0, took
        assert ck.attrs["message"] == "interrupted"
    ck.resolution(ck.completed)


# --- J: a closed stdout/stderr never ends a job ---

def test_a_job_piped_into_head_runs_to_the_end(operands, tmp_path):
    """(Under mpiexec the launcher itself dies of SIGPIPE: Hydra, not lrmpi; the README
    says to redirect or tee a job's output instead.)"""
    _, _, a, b = operands
    out = tmp_path / "c.h5"
    cmd = " ".join(str(x) for x in lrmpi_cmd("matmul", a, b, "-o", out, "--planes", 4))
    p = subprocess.run(["bash", "-c", f"{cmd} 2>&1 | head -2; exit ${{PIPESTATUS[0]}}"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert len(p.stdout.splitlines()) <= 2
    assert Checkpoint(out).attrs["status"] == "complete"


# --- H: entries beyond the planes' reach ---

def test_entries_beyond_the_planes_reach_are_recomputed_with_a_finite_bound(tmp_path):
    for big in (1e100, 1e20):
        np.save(tmp_path / "A.npy", np.array([[big, 1.0], [1.0, 1.0]]))
        np.save(tmp_path / "B.npy", np.array([[1.0, 1.0], [1.0, big]]))
        out = tmp_path / f"h{big:g}.h5"
        p = run("matmul", tmp_path / "A.npy", tmp_path / "B.npy", "-o", out, "--planes", 16,
                n=3)
        assert p.returncode == 0, p.stderr
        assert "beyond the digit planes' reach" in p.stderr
        C, attrs = load_result(out)
        np.testing.assert_array_equal(C, [[big, 2 * big], [2.0, big]])
        assert attrs["fallback"] >= 1
        assert np.isfinite(attrs["bound_rel"]) and attrs["bound_rel"] < 1e-15


# --- I and 7: the command line ---

def test_inspect_plot_errors_are_one_line_and_a_name_gets_its_extension(operands, tmp_path):
    """Also issue #24 D22: --plot thesis.pdf replaced an existing file; --plot A.npy was a
    matplotlib traceback."""
    _, _, a, b = operands
    out = tmp_path / "c.h5"
    complete_result(a, b, out)
    p = run("inspect", out, "--plot", tmp_path / "nodir" / "x.png")
    assert p.returncode == 2 and len(errors(p)) == 1 and "does not exist" in p.stderr
    assert "Traceback" not in p.stderr
    p = run("inspect", out, "--plot", tmp_path / "outplot")
    assert p.returncode == 0 and f"wrote {tmp_path / 'outplot.png'}" in p.stdout
    assert (tmp_path / "outplot.png").exists()
    thesis = tmp_path / "thesis.pdf"
    thesis.write_bytes(b"%PDF my thesis")
    npy = tmp_path / "A.npy"
    before = npy.read_bytes()
    for plot, msg in ((thesis, "exists; pass --overwrite to replace it"),
                      (npy, "cannot draw a .npy file"), (out, "cannot draw a .h5 file")):
        p = run("inspect", out, "--plot", plot)
        assert p.returncode == 2 and len(errors(p)) == 1 and msg in errors(p)[0], p.stderr
        assert "Traceback" not in p.stderr
    assert thesis.read_bytes() == b"%PDF my thesis" and npy.read_bytes() == before
    p = run("inspect", out, "--plot", thesis, "--overwrite")
    assert p.returncode == 0 and thesis.read_bytes().startswith(b"%PDF-")


def test_keep_latest_leaves_no_resume_data_once_complete(operands, tmp_path):
    """Issue #24 D21: --keep latest kept 257 MB of resume sums after the job was complete
    (one 8 MB result). While it runs, they stay (a stop must resume: test_crash.py)."""
    _, _, a, b = operands
    for write, n in (("root", None), ("ranks", 3)):
        out = tmp_path / f"c-{write}.h5"
        p = run("matmul", a, b, "-o", out, "--planes", 3, "--keep", "latest", "--write", write,
                n=n)
        assert p.returncode == 0, p.stderr
        ck = Checkpoint(out)
        files = sorted(os.listdir(ck.folder))
        if write == "root":
            assert files == ["res005.h5"], files
        else:  # the last resolution's C is in its rank files
            assert files[-1] == "res005.h5" and all(f.endswith("-res005.h5") for f in files[:-1])
        ck.verify()
        p = run("matmul", a, b, "-o", out, "--planes", 3, "--resume", "--keep", "all", n=n)
        assert p.returncode == 2 and "a resumed job keeps what it began with" in p.stderr
        p = run("matmul", a, b, "-o", out, "--planes", 3, "--resume", n=n)
        assert p.returncode == 0 and "already complete" in p.stderr


def test_an_overflowing_product_prints_no_numpy_warning(tmp_path):
    """Issue #24 D24b: an overflowing product printed a numpy RuntimeWarning."""
    np.save(tmp_path / "big.npy", np.full((5, 5), 1e200))
    for extra in ([], ["--final", "crt"], ["--write", "ranks"]):
        out = tmp_path / f"big{len(extra)}{extra[-1] if extra else ''}.h5"
        p = run("matmul", tmp_path / "big.npy", tmp_path / "big.npy", "-o", out, "--planes", 2,
                *extra, n=3)
        assert p.returncode == 0, p.stderr
        assert "Warning" not in p.stderr, p.stderr
        C, attrs = load_result(out)
        assert np.isinf(C).all() and attrs["bound_abs"] == np.inf


def test_cli_version_help_and_option_values():
    p = subprocess.run([sys.executable, "-m", "lrmpi", "--version"], capture_output=True,
                       text=True)
    assert p.returncode == 0 and p.stdout.startswith("lrmpi ")
    p = subprocess.run([sys.executable, "-m", "lrmpi", "--help"], capture_output=True,
                       text=True)
    for name in ("matmul", "infer", "inspect", "pack", "demo", "info", "bench"):
        assert f"\n  {name} " in p.stdout
    assert "args" not in p.stdout
    for cmd in ("matmul", "infer", "inspect", "demo"):
        h = subprocess.run([sys.executable, "-m", "lrmpi", cmd, "--help"], capture_output=True,
                           text=True).stdout
        assert "--debug" in h


@pytest.mark.parametrize("argv, msg", [
    (["--deadline", "-5s"], "a deadline must lie ahead"),
    (["--margin", "-1"], "--margin must be a number of seconds >= 0"),
    (["--worker-timeout", "-3"], "--worker-timeout must be a number of seconds > 0"),
    (["--planes", "-2"], "planes must be in 1..16"),
])
def test_negative_values_get_the_clear_message(operands, argv, msg):
    _, _, a, b = operands
    p = run("matmul", a, b, *argv)
    assert p.returncode == 2 and len(errors(p)) == 1 and msg in errors(p)[0], p.stderr


def test_a_run_without_output_says_its_results_are_not_kept(operands):
    _, _, a, b = operands
    p = run("matmul", a, b, "--planes", 1)
    assert p.returncode == 0 and "results are not kept" in p.stderr


def test_pack_speaks_of_the_packed_file(operands, tmp_path):
    """Issue #24 D24b: `pack X X --overwrite` spoke of "-o"."""
    _, _, a, b = operands
    out = tmp_path / "c.h5"
    complete_result(a, b, out, n=None)
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    for argv, msg in (([out, out, "--overwrite"], "pack: " + str(out) + " is the checkpoint itself"),
                      ([out, notes], "exists; pass --overwrite"),
                      ([out, notes, "--overwrite"], "the packed file " + str(notes) +
                       " exists and was not written by lrmpi")):
        p = run("pack", *argv)
        assert p.returncode == 2 and len(errors(p)) == 1 and msg in errors(p)[0], p.stderr
        assert " -o " not in errors(p)[0]
    assert notes.read_text() == "mine"
