"""Fourth adversarial pass, area 1: safety promises — read-only and full folders, races for
one output started at once, names at the file system's limits."""
import os
import subprocess

import numpy as np

import lrmpi
from adversary import (assert_ok, assert_one_error, attrs_of, cmd, leftovers, load,
                      mount_tmpfs, run, run_nocap, save, snapshot, umount)


def test_read_only_output_folder_one_line_nothing_written(tmp_path, ops):
    """-o inside a folder the user may not write: exit 1, one line naming the output,
    and nothing created in that folder."""
    a, b, _, _ = ops
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        r = run_nocap("matmul", a, b, "-o", ro / "C.h5", "--planes", "2")
        line = assert_one_error(r, code=1)
        assert "C.h5" in line, line
        assert os.listdir(ro) == []
    finally:
        ro.chmod(0o755)


def test_full_file_system_one_line_then_resume_once_space_is_back(tmp_path, rng):
    """The output on a tmpfs that fills during the job: exit 1 with one line, every listed
    resolution reads back, no temporary file left; after the tmpfs grows, --resume
    completes bit-identical to an uninterrupted run."""
    A, B = rng.standard_normal((200, 64)), rng.standard_normal((64, 200))
    a, b = save(tmp_path / "A.npy", A), save(tmp_path / "B.npy", B)
    m = tmp_path / "m"
    mount_tmpfs(m, "900k")
    try:
        out = m / "C.h5"
        r = run("matmul", a, b, "-o", out, "--planes", "4")
        assert_one_error(r, code=1, contains=("space",))
        assert leftovers(m) == []
        C, attrs = load(out)
        assert C.shape == (200, 200)
        subprocess.run(["mount", "-o", "remount,size=64m", str(m)], check=True)
        assert_ok(run("matmul", a, b, "-o", out, "--planes", "4", "--resume"))
        ref = tmp_path / "R.h5"
        assert_ok(run("matmul", a, b, "-o", ref, "--planes", "4"))
        assert np.array_equal(load(out)[0], load(ref)[0])
        assert attrs_of(out)["status"] == "complete"
    finally:
        umount(m)


def test_jobs_started_at_once_on_one_output_exactly_one_wins(tmp_path, rng):
    """Three jobs (other inputs each, one under mpiexec -n 2) started together on one new
    output: exactly one exits 0, the others exit non-zero with one line, and the file holds
    the winner's product."""
    pairs = []
    for i in range(3):
        A, B = rng.standard_normal((30 + i, 12)), rng.standard_normal((12, 10))
        pairs.append((save(tmp_path / f"A{i}.npy", A), save(tmp_path / f"B{i}.npy", B), A, B))
    out = tmp_path / "C.h5"
    procs = [subprocess.Popen(cmd("matmul", a, b, "-o", out, "--planes", "2", n=2 if i == 0 else None),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i, (a, b, _, _) in enumerate(pairs)]
    res = [(p, *p.communicate(timeout=120)) for p in procs]
    winners = [i for i, (p, _, _) in enumerate(res) if p.returncode == 0]
    assert len(winners) == 1, [(p.returncode, e) for p, _, e in res]
    for i, (p, o, e) in enumerate(res):
        if i != winners[0]:
            assert_one_error(subprocess.CompletedProcess(p.args, p.returncode, o, e), codes=(1, 2))
    _, _, A, B = pairs[winners[0]]
    C, attrs = load(out)
    assert C.shape == (A.shape[0], B.shape[1])
    assert np.abs(C - A @ B).max() <= attrs["bound_abs"]


def test_overwrites_started_at_once_leave_one_jobs_whole_result(tmp_path, rng):
    """An existing result and two --overwrite jobs with other inputs started together: the
    file ends as one job's whole result (the product of the inputs of a job that exited 0);
    the loser's line is one line."""
    A0, B0 = rng.standard_normal((20, 8)), rng.standard_normal((8, 6))
    out = tmp_path / "C.h5"
    assert_ok(run("matmul", save(tmp_path / "A0.npy", A0), save(tmp_path / "B0.npy", B0),
                  "-o", out, "--planes", "2"))
    jobs = []
    for i in (1, 2):
        A, B = rng.standard_normal((20, 8)) * i, rng.standard_normal((8, 6))
        jobs.append((save(tmp_path / f"A{i}.npy", A), save(tmp_path / f"B{i}.npy", B), A, B))
    procs = [subprocess.Popen(cmd("matmul", a, b, "-o", out, "--planes", "2", "--overwrite"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for a, b, _, _ in jobs]
    res = [(p, *p.communicate(timeout=120)) for p in procs]
    ok = [i for i, (p, _, _) in enumerate(res) if p.returncode == 0]
    assert ok, [e for _, _, e in res]
    for i, (p, o, e) in enumerate(res):
        if p.returncode != 0:
            assert_one_error(subprocess.CompletedProcess(p.args, p.returncode, o, e), codes=(1,))
    C, attrs = load(out)
    assert any(np.abs(C - jobs[i][2] @ jobs[i][3]).max() <= attrs["bound_abs"] for i in ok)
    assert attrs_of(out)["status"] == "complete"


def test_output_name_past_the_name_limit_one_line(tmp_path, ops):
    """-o whose name is 250 characters (its temporary names exceed the file system's 255):
    refused before anything is made (exit 2, one line saying how long a name may be: no
    job file, no job folder left behind), and a shorter name still works afterwards."""
    a, b, _, _ = ops
    out = tmp_path / ("n" * 247 + ".h5")
    r = run("matmul", a, b, "-o", out, "--planes", "1")
    assert_one_error(r, code=2, contains=("at most",))
    assert sorted(os.listdir(tmp_path)) == ["A.npy", "B.npy"]
    assert_ok(run("matmul", a, b, "-o", tmp_path / "short.h5", "--planes", "1"))


def test_unreadable_operand_creates_no_output(tmp_path, ops):
    """An operand the user may not read (mode 000): exit 1, one line naming it, and no
    output file or folder is made."""
    a, b, _, _ = ops
    os.chmod(a, 0)
    try:
        r = run_nocap("matmul", a, b, "-o", tmp_path / "C.h5", "--planes", "1")
        assert_one_error(r, code=1, contains=("A",))
        assert not (tmp_path / "C.h5").exists() and not (tmp_path / "C.h5.d").exists()
    finally:
        os.chmod(a, 0o644)


def test_overwrite_of_read_only_result_one_line_nothing_changed(tmp_path, ops):
    """A complete result whose job folder the user made read-only: --overwrite with other
    options fails with one line (exit 1) and every file of the folder is unchanged."""
    a, b, _, _ = ops
    out = tmp_path / "C.h5"
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "2"))
    before = snapshot(tmp_path)
    d = str(out) + ".d"
    for p in (d, *[os.path.join(d, s) for s in os.listdir(d) if not s.startswith(".")]):
        os.chmod(p, 0o555)
    os.chmod(tmp_path, 0o555)
    try:
        r = run_nocap("matmul", a, b, "-o", out, "--planes", "3", "--overwrite")
        assert_one_error(r, code=1)
    finally:
        os.chmod(tmp_path, 0o755)
        for p in (d, *[os.path.join(d, s) for s in os.listdir(d) if not s.startswith(".")]):
            os.chmod(p, 0o755)
    assert snapshot(tmp_path) == before


def test_write_ranks_full_disk_keeps_the_resolutions_being_sealed(tmp_path, rng):
    """--write ranks, mpiexec -n 3, a tmpfs that fills at resolution 3: a worker's error
    came while the root was sealing resolutions 1-2, and that worker answered SEAL with
    "no tiles" (it had stopped writing): the resolution was lost (completed 0/7 in some
    runs) or listed without that worker's tiles ("its rank files do not cover C" on
    reading). Now a worker commits the files it wrote whole after its own error, the
    failing root waits for those answers, and a resolution is listed only if its files
    hold every tile: every run lists one, each reads back equal to an uninterrupted run's."""
    A, B = rng.standard_normal((160, 64)), rng.standard_normal((64, 160))
    a, b = save(tmp_path / "A.npy", A), save(tmp_path / "B.npy", B)
    ref = tmp_path / "R.h5"
    assert_ok(run("matmul", a, b, "-o", ref, "--planes", "4"))
    m = tmp_path / "m"
    for attempt in range(3):
        mount_tmpfs(m, "1m")
        try:
            out = m / "C.h5"
            r = run("matmul", a, b, "-o", out, "--planes", "4", "--write", "ranks", n=3)
            assert_one_error(r, code=1, contains=("space",))
            done = int(attrs_of(out)["completed"])
            assert attrs_of(out)["status"] == "failed"
            assert done >= 1, (attempt, r.stderr)
            for k in range(1, done + 1):
                C, _ = lrmpi.load_result(str(out), k)
                assert np.array_equal(C, lrmpi.load_result(str(ref), k)[0]), (attempt, k)
            assert leftovers(m) == []
        finally:
            umount(m)


SEAL_FAILS = """import os, sys
from lrmpi.jobs.checkpoint import rank_files
real = rank_files.RankFiles.seal
def seal(self, res):
    if res == int(os.environ["SEAL_FAILS_AT"]) and self.rank == 1:
        raise OSError(28, "No space left on device (at seal)")
    return real(self, res)
rank_files.RankFiles.seal = seal
sys.argv = ["lrmpi"] + sys.argv[1:]
from lrmpi.cli import console
console()
"""


def test_write_ranks_a_failed_seal_of_the_last_resolution_fails_the_job(tmp_path, rng):
    """--write ranks, mpiexec -n 3: worker 1 cannot commit its file of the last resolution
    (its fsync or rename fails). The worker's "could not" answer came before its error,
    the root then had nothing pending and ended the job `complete`, exit 0, the last
    resolution missing and the error dropped (5 of 6 runs in a review). Now the job
    fails with the worker's one line, and what it lists reads back whole."""
    from adversary import PY, mpiexec
    A, B = rng.standard_normal((160, 64)), rng.standard_normal((64, 160))
    a, b = save(tmp_path / "A.npy", A), save(tmp_path / "B.npy", B)
    script = tmp_path / "seal_fails.py"
    script.write_text(SEAL_FAILS)
    ref = tmp_path / "R.h5"
    assert_ok(run("matmul", a, b, "-o", ref, "--planes", "4"))
    for attempt in range(3):
        out = tmp_path / f"C{attempt}.h5"
        r = subprocess.run([mpiexec(), "-n", "3", PY, str(script), "matmul", str(a), str(b),
                            "-o", str(out), "--planes", "4", "--write", "ranks"],
                           capture_output=True, text=True, timeout=120,
                           env={**os.environ, "SEAL_FAILS_AT": "6"})
        assert_one_error(r, code=1, contains=("at seal",))
        attrs = attrs_of(out)
        assert attrs["status"] == "failed" and int(attrs["completed"]) <= 6, (attempt, attrs)
        for k in range(1, int(attrs["completed"]) + 1):
            C, _ = lrmpi.load_result(str(out), k)
            assert np.array_equal(C, lrmpi.load_result(str(ref), k)[0]), (attempt, k)
