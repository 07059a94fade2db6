"""Second adversarial pass, area 1: safety promises — never delete, follow or rewrite a file
lrmpi did not write; hardlinks, stale-looking temporaries, concurrent jobs, odd spellings."""
import os
import signal
import subprocess
import time

import h5py
import numpy as np

from adversary import (SLOW, assert_ok, assert_one_error, digest, kill_group, load, run, save,
                      snapshot, start, stop_after, wait_for)


def _dead_pid():
    """A pid that is certainly not running (a child that already exited and was reaped)."""
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def _job_dirs(out):
    d = str(out) + ".d"
    return sorted(s for s in os.listdir(d) if os.path.isdir(os.path.join(d, s))
                  and not os.path.islink(os.path.join(d, s)))


def test_hardlinked_resolution_file_kept_by_user_survives_overwrite(tmp_path, ops, rng):
    """The user hardlinked res001.h5 into a folder of theirs; --overwrite with other inputs
    and a run to completion: the user's hardlink still holds the old bytes."""
    a, b, _, _ = ops
    out = str(tmp_path / "C.h5")
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "2"))
    (job,) = _job_dirs(out)
    mine = tmp_path / "mine"
    mine.mkdir()
    os.link(os.path.join(out + ".d", job, "res001.h5"), mine / "keep.h5")
    before = digest(mine / "keep.h5")
    b2 = save(tmp_path / "B2.npy", rng.standard_normal((24, 16)))
    assert_ok(run("matmul", a, b2, "-o", out, "--planes", "2", "--overwrite"))
    assert digest(mine / "keep.h5") == before
    with h5py.File(mine / "keep.h5", "r") as f:
        assert f["C"].shape == (40, 16)


def test_hardlink_of_job_file_keeps_old_result_through_overwrite(tmp_path, ops, rng):
    """A hardlink `backup.h5` of the job file made by the user: an --overwrite of other
    inputs must not rewrite the shared inode (files are written under a temporary name and
    renamed): backup.h5 still reads as the old job."""
    a, b, A, B = ops
    out = str(tmp_path / "C.h5")
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "2"))
    os.link(out, tmp_path / "backup.h5")
    before = digest(tmp_path / "backup.h5")
    b2 = save(tmp_path / "B2.npy", rng.standard_normal((24, 16)))
    assert_ok(run("matmul", a, b2, "-o", out, "--planes", "2", "--overwrite"))
    assert digest(tmp_path / "backup.h5") == before


def test_stale_tmp_name_that_is_a_symlink_keeps_its_target(tmp_path, ops):
    """`C.h5.tmp.<dead pid>` is a symlink to the user's file: whatever lrmpi does with the
    name, the target survives byte for byte."""
    a, b, _, _ = ops
    out = tmp_path / "C.h5"
    target = tmp_path / "precious.txt"
    target.write_text("do not touch")
    os.symlink(target, f"{out}.tmp.{_dead_pid()}")
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "1"))
    assert target.read_text() == "do not touch"


def test_stale_tmp_name_that_is_a_folder_survives(tmp_path, ops):
    """`C.h5.tmp.<dead pid>` is a folder with the user's file in it: lrmpi never removes a
    folder it did not make."""
    a, b, _, _ = ops
    out = tmp_path / "C.h5"
    d = tmp_path / f"C.h5.tmp.{_dead_pid()}"
    d.mkdir()
    (d / "notes.txt").write_text("mine")
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "1"))
    assert (d / "notes.txt").read_text() == "mine"


def test_symlink_with_lrmpi_tmp_name_in_job_folder_keeps_target(tmp_path, ops, rng):
    """A link named `res002.h5.tmp.<dead pid>` inside the job folder pointing at a user file:
    --overwrite (other inputs) never deletes through the link."""
    a, b, _, _ = ops
    out = str(tmp_path / "C.h5")
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "2"))
    (job,) = _job_dirs(out)
    target = tmp_path / "precious.h5"
    target.write_bytes(b"user bytes")
    os.symlink(target, os.path.join(out + ".d", job, f"res002.h5.tmp.{_dead_pid()}"))
    b2 = save(tmp_path / "B2.npy", rng.standard_normal((24, 16)))
    assert_ok(run("matmul", a, b2, "-o", out, "--planes", "2", "--overwrite"))
    assert target.read_bytes() == b"user bytes"


def test_output_symlink_to_user_text_file_refused(tmp_path, ops):
    """-o link.h5 where link.h5 -> the user's text file, with --overwrite: refused (not a
    file lrmpi wrote), the target intact, the link still a link."""
    a, b, _, _ = ops
    target = tmp_path / "thesis.tex"
    target.write_text("\\documentclass{article}")
    link = tmp_path / "link.h5"
    os.symlink(target, link)
    r = run("matmul", a, b, "-o", link, "--planes", "1", "--overwrite")
    assert_one_error(r, codes=(1, 2))
    assert target.read_text() == "\\documentclass{article}"
    assert os.path.islink(link)


def test_user_folder_named_like_a_job_id_with_lrmpi_files_survives(tmp_path, ops, rng):
    """A folder `OUT.h5.d/0123456789abcdef/` the user made, holding a real resolution file of
    another checkpoint: run, --overwrite (other inputs) and --resume leave it as it was."""
    a, b, _, _ = ops
    other = str(tmp_path / "other.h5")
    assert_ok(run("matmul", a, b, "-o", other, "--planes", "1"))
    (ojob,) = _job_dirs(other)
    out = str(tmp_path / "C.h5")
    fake = os.path.join(out + ".d", "0123456789abcdef")
    os.makedirs(fake)
    for name in ("res001.h5", "sums001.h5"):
        src = os.path.join(other + ".d", ojob, "res001.h5")
        with open(src, "rb") as f, open(os.path.join(fake, name), "wb") as g:
            g.write(f.read())
    before = snapshot(fake)
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "2"))
    b2 = save(tmp_path / "B2.npy", rng.standard_normal((24, 16)))
    assert_ok(run("matmul", a, b2, "-o", out, "--planes", "2", "--overwrite"))
    assert_ok(run("matmul", a, b2, "-o", out, "--planes", "2", "--resume"))
    assert snapshot(fake) == before


def test_concurrent_overwrite_refused_first_job_finishes_intact(tmp_path, ops):
    """While a slow job writes C.h5, a second job with --overwrite (same inputs) is refused at
    once with one line; the first completes and its result equals an uninterrupted run's."""
    a, b, _, _ = ops
    out = str(tmp_path / "C.h5")
    # 2 s a task: the second job starts well before the first ends, even on a loaded
    # machine (0.3 s once let the first finish before the second began: it then ran)
    p = start("matmul", a, b, "-o", out, "--planes", "2", n=2,
              env={**SLOW, "LRMPI_TEST_SLOW_S": "2"})
    try:
        wait_for(out, 1, p)
        r = run("matmul", a, b, "-o", out, "--planes", "2", "--overwrite", timeout=30)
        assert_one_error(r, codes=(1, 2))
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    finally:
        kill_group(p)
    ref = str(tmp_path / "ref.h5")
    assert_ok(run("matmul", a, b, "-o", ref, "--planes", "2"))
    assert np.array_equal(load(out)[0], load(ref)[0])


def test_sigterm_during_same_input_overwrite_keeps_old_result_exit_3(tmp_path, ops):
    """An --overwrite with the same inputs stopped (SIGTERM) before its first resolution:
    the earlier result of these inputs is kept, so exit 3 (README: "this job's, or an earlier
    result of the same inputs it kept"), and it reads back unchanged."""
    a, b, _, _ = ops
    out = str(tmp_path / "C.h5")
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "2"))
    C0 = load(out)[0]
    p = start("matmul", a, b, "-o", out, "--planes", "2", "--overwrite", n=2,
              env={**SLOW, "LRMPI_TEST_SLOW_S": "30"})
    try:
        limit = time.time() + 60
        while time.time() < limit and len(_job_dirs(out)) < 2:   # the new job began
            time.sleep(0.05)
        assert len(_job_dirs(out)) == 2
        os.killpg(p.pid, signal.SIGTERM)
        _, err = p.communicate(timeout=60)
        assert p.returncode == 3, err
    finally:
        kill_group(p)
    assert np.array_equal(load(out)[0], C0)


def test_output_spelled_with_dotdot_and_resumed_by_other_spelling(tmp_path, ops):
    """A job written as `sub/../C.h5` (stopped) is resumed as `./C.h5` from the same folder:
    the same checkpoint, completed to the uninterrupted result."""
    a, b, _, _ = ops
    (tmp_path / "sub").mkdir()
    rc, err = stop_after(str(tmp_path / "C.h5"), 1, "matmul", a, b, "-o",
                         str(tmp_path / "sub" / ".." / "C.h5"), "--planes", "2")
    assert rc == 3, err
    assert_ok(run("matmul", a, b, "-o", "./C.h5", "--planes", "2", "--resume", cwd=tmp_path))
    ref = str(tmp_path / "ref.h5")
    assert_ok(run("matmul", a, b, "-o", ref, "--planes", "2"))
    assert np.array_equal(load(tmp_path / "C.h5")[0], load(ref)[0])
    assert sorted(os.listdir(tmp_path / "sub")) == []


def test_input_inside_output_folder_top_level_survives_overwrite(tmp_path, ops, rng):
    """The operand B lives at OUT.h5.d/B.npy (beside the job folders, not in one): a run, an
    --overwrite with other inputs and a completed resume keep it."""
    a, _, _, _ = ops
    out = str(tmp_path / "C.h5")
    os.makedirs(out + ".d")
    b_in = save(os.path.join(out + ".d", "B.npy"), rng.standard_normal((24, 16)))
    before = digest(b_in)
    assert_ok(run("matmul", a, b_in, "-o", out, "--planes", "1"))
    a2 = save(tmp_path / "A2.npy", rng.standard_normal((40, 24)))
    assert_ok(run("matmul", a2, b_in, "-o", out, "--planes", "1", "--overwrite"))
    assert digest(b_in) == before
