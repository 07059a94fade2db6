"""Sixth adversarial pass, area 1: safety promises — the cache folder and `pack` targets
inside the job's folders, a stats file at the top of `OUT.h5.d`, a stop signal before the
job file exists. The README: lrmpi deletes only files it names itself in the job's own
folder; anything else in or beside `OUT.h5.d` stays; a new job that stops early leaves an
earlier result as it was."""
import os
import signal
import time

import h5py
import numpy as np

from adversary import (assert_ok, assert_one_error, attrs_of, digest, job_folder, load, run,
                       save, start, kill_group)
from adversary6 import entries, infer


def test_cache_dir_is_the_output_folder_survives_overwrite(tmp_path, tiny):
    """LRMPI_CACHE_DIR = OUT.h5.d: the job completes, and its cache entries (top of
    OUT.h5.d, not in a job folder) survive an `--overwrite` with other data."""
    m1, _, data, ref1 = tiny
    out = tmp_path / "s.h5"
    cache = str(out) + ".d"
    r = infer(m1, data, out, cache=cache)
    if r.returncode != 0:
        assert_one_error(r, codes=(1, 2))
        return
    kept = {p: digest(p) for p in entries(cache, "graph") + entries(cache, "norms3")}
    assert kept
    other = save(tmp_path / "d2.npy", np.ones((5, 16), np.float32))
    assert_ok(infer(m1, other, out, "--overwrite"))
    assert attrs_of(out)["status"] == "complete"
    for p, h in kept.items():
        assert os.path.exists(p) and digest(p) == h, p


def test_cache_dir_inside_an_old_job_folder_survives_overwrite(tmp_path, tiny):
    """LRMPI_CACHE_DIR inside OUT.h5.d/<old job id>/: an `--overwrite` with other data
    removes only the old job's own files; the cache folder and its entries stay."""
    m1, _, data, _ = tiny
    out = tmp_path / "s.h5"
    assert_ok(infer(m1, data, out))
    cache = os.path.join(job_folder(out), "cache")
    other = save(tmp_path / "d2.npy", np.ones((5, 16), np.float32))
    assert_ok(infer(m1, other, out, "--overwrite", cache=cache))
    files = entries(cache, "graph") + entries(cache, "norms3")
    assert files, "no cache written"
    assert_ok(infer(m1, data, out, "--overwrite", cache=cache))
    for p in files:
        assert os.path.isfile(p), p


def test_packs_inside_the_job_folders_survive_overwrite(tmp_path, done):
    """`pack` into OUT.h5.d and into OUT.h5.d/<job id>/ (names lrmpi never gives its own
    files): both stay, byte for byte, through an `--overwrite` with other inputs, and read
    with plain h5py."""
    out, a, b, A, B = done
    top = os.path.join(out + ".d", "packed.h5")
    inner = os.path.join(job_folder(out), "mine-packed.h5")
    for target in (top, inner):
        assert_ok(run("pack", out, target))
    before = {p: digest(p) for p in (top, inner)}
    a2 = save(os.path.join(os.path.dirname(out), "A2.npy"), A * 2)
    assert_ok(run("matmul", a2, b, "-o", out, "--planes", "2", "--overwrite"))
    for p, h in before.items():
        assert digest(p) == h, p
        with h5py.File(p, "r") as f:
            last = f["resolutions"][f"{f.attrs['completed']:03d}"]
            assert np.abs(last["C"][()] - A @ B).max() <= last.attrs["bound_abs"]
    C, _ = load(out)
    assert np.abs(C - 2 * A @ B).max() <= 1e-3 * np.abs(2 * A @ B).max()


def test_pack_onto_the_dot_d_folder_and_its_lock(tmp_path, done):
    """`pack OUT.h5 OUT.h5.d` and `pack OUT.h5 OUT.h5.d/.lock`: one line, and the
    checkpoint still loads and resumes."""
    out, a, b, _, _ = done
    C0, _ = load(out)
    for target in (out + ".d", os.path.join(out + ".d", ".lock")):
        r = run("pack", out, target, "--overwrite")
        assert_one_error(r, codes=(1, 2))
    C, _ = load(out)
    assert np.array_equal(C, C0)
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "2", "--resume"))


def _handler_installed(pid, signum):
    """The process has a handler for signum (SigCgt in /proc/PID/status)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    except OSError:
        pass
    return False


def _term_once_caught(p):
    """SIGTERM the job the moment it has a handler for it (before it writes anything);
    its stderr once it has exited."""
    try:
        limit = time.time() + 60
        while not _handler_installed(p.pid, signal.SIGTERM) and p.poll() is None:
            assert time.time() < limit
            time.sleep(0.001)
        if p.poll() is None:
            os.kill(p.pid, signal.SIGTERM)
        _, err = p.communicate(timeout=60)
    finally:
        kill_group(p)
    return err


def test_sigterm_before_the_job_file_exists_keeps_the_old_result(tmp_path, done):
    """An `--overwrite` (same inputs) stopped by SIGTERM the moment lrmpi catches it, before
    anything new is written: exit 3 (an earlier result of these inputs is on disk, README's
    table) or 0 if it had already finished, never a death by the signal; the old result
    loads unchanged."""
    out, a, b, _, _ = done
    C0, _ = load(out)
    p = start("matmul", a, b, "-o", out, "--planes", "2", "--overwrite")
    err = _term_once_caught(p)
    assert "Traceback" not in err, err
    assert p.returncode in (0, 3), (p.returncode, err)
    C, _ = load(out)
    assert np.array_equal(C, C0)


def test_sigterm_before_the_job_file_exists_fresh_output(tmp_path, ops):
    """SIGTERM as soon as lrmpi catches it, on a fresh output: exit 4 (nothing of these
    inputs on disk) or 0 with a complete file; never 0 without a result, never a
    traceback, and whatever is at -o is an lrmpi checkpoint or nothing."""
    a, b, _, _ = ops
    out = tmp_path / "C.h5"
    p = start("matmul", a, b, "-o", out, "--planes", "2")
    err = _term_once_caught(p)
    assert "Traceback" not in err, err
    assert p.returncode in (0, 3, 4), (p.returncode, err)
    if p.returncode == 0:
        assert attrs_of(out)["status"] == "complete"
    elif os.path.exists(out):
        status = run("inspect", out, "--status")
        assert status.stdout.strip() in ("deadline", "complete"), status.stdout + status.stderr


def test_stats_file_at_the_top_of_dot_d_survives_overwrite(tmp_path, done):
    """LRMPI_STATS_FILE at OUT.h5.d/stats.json (not a job folder): written, or refused in
    one line; once written, a later `--overwrite` keeps it."""
    out, a, b, _, _ = done
    stats = os.path.join(out + ".d", "stats.json")
    r = run("matmul", a, b, "-o", out, "--planes", "2", "--overwrite",
            env={"LRMPI_STATS_FILE": stats})
    if r.returncode != 0:
        assert_one_error(r, codes=(1, 2))
        return
    assert_ok(r)
    import json
    with open(stats) as f:
        json.load(f)
    h = digest(stats)
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "2", "--overwrite"))
    assert digest(stats) == h
