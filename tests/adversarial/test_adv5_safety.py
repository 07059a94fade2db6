"""Fifth adversarial pass, area 1: safety promises — an output reached through a symlinked
folder (one lock, one job), names that only look like lrmpi's temporary files, user things
at the top of OUT.h5.d named like lrmpi's files, an infer result overwritten by a matmul,
a folder that is a symlink loop, a stale lock file with garbage in it."""
import os
import signal
import time

import numpy as np

from adversary import (SLOW, assert_ok, assert_one_error, attrs_of, kill_group, load, run,
                      save, snapshot, start, wait_for, mlp_onnx)


def test_output_through_symlinked_folder_is_one_output(tmp_path, ops):
    """`-o link/C.h5` where link -> real: the job writes real/C.h5; a second job on
    `real/C.h5` while the first runs is refused (one lock), the link survives, and
    `--resume` by the other spelling says the job is complete."""
    a, b, A, B = ops
    (tmp_path / "real").mkdir()
    os.symlink("real", tmp_path / "link")
    p = start("matmul", a, b, "-o", tmp_path / "link" / "C.h5", "--planes", "3", n=2,
              env={**SLOW, "LRMPI_TEST_SLOW_S": "0.4"})
    try:
        wait_for(str(tmp_path / "real" / "C.h5"), 1, p, timeout=90)
        r = run("matmul", a, b, "-o", tmp_path / "real" / "C.h5", "--planes", "3", "--resume")
        assert_one_error(r, code=1)
        _, err = p.communicate(timeout=90)
        assert p.returncode == 0, err
    finally:
        kill_group(p)
    assert os.path.islink(tmp_path / "link")
    r = run("matmul", a, b, "-o", tmp_path / "real" / "C.h5", "--planes", "3", "--resume")
    assert r.returncode == 0 and "complete" in r.stderr, r.stderr
    C, attrs = load(tmp_path / "link" / "C.h5")
    assert np.abs(C - A @ B).max() <= attrs["bound_abs"]


def test_names_that_look_like_temporaries_beside_output_survive(tmp_path, ops):
    """Beside OUT.h5 only `OUT.h5.tmp.PID` of a dead process may go: `C.h5.tmp.abc`,
    `C.h5.tmp.`, `C.h5.tmpX`, `C.h5.tmp.12x` and `xC.h5.tmp.999999` stay through a run
    and an `--overwrite`."""
    a, b, _, _ = ops
    names = ["C.h5.tmp.abc", "C.h5.tmp.", "C.h5.tmpX", "C.h5.tmp.12x", "xC.h5.tmp.999999"]
    for n in names:
        (tmp_path / n).write_text("mine " + n)
    out = tmp_path / "C.h5"
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "2"))
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "3", "--overwrite"))
    for n in names:
        assert (tmp_path / n).read_text() == "mine " + n


def test_lrmpi_like_names_at_top_of_dot_d_survive_overwrite(tmp_path, ops, rng):
    """Files and folders named `res001.h5`, `sums001.h5`, `rank0001-res001.h5` at the top of
    OUT.h5.d (not in a job folder): kept through an `--overwrite` with other inputs."""
    a, b, _, _ = ops
    out = tmp_path / "C.h5"
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "2"))
    d = tmp_path / "C.h5.d"
    (d / "res001.h5").mkdir()
    (d / "res001.h5" / "keep.txt").write_text("x")
    (d / "sums001.h5").write_text("mine")
    (d / "rank0001-res001.h5").write_text("mine too")
    mine = ("res001.h5", "sums001.h5", "rank0001-res001.h5")
    before = {k: v for k, v in snapshot(d).items() if k.startswith(mine)}
    a2 = save(tmp_path / "A2.npy", rng.standard_normal((40, 24)))
    assert_ok(run("matmul", a2, b, "-o", out, "--planes", "2", "--overwrite"))
    after = snapshot(d)
    assert len(before) == 4
    for k, v in before.items():
        assert after.get(k) == v, k


def test_infer_result_overwritten_by_a_matmul(tmp_path, ops, rng):
    """`--overwrite` of an inference result by a matmul job (other inputs, another kind):
    the matmul's result replaces it, a user file in the old job's folder stays."""
    a, b, A, B = ops
    m = mlp_onnx(tmp_path / "m.onnx", rng)
    d = save(tmp_path / "X.npy", rng.standard_normal((5, 16)))
    out = tmp_path / "S.h5"
    assert_ok(run("infer", m, d, "-o", out, "--planes", "2"))
    old = [s for s in os.listdir(tmp_path / "S.h5.d") if not s.startswith(".")][0]
    (tmp_path / "S.h5.d" / old / "notes.txt").write_text("mine")
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "2", "--overwrite"))
    assert attrs_of(out)["kind"] == "matmul"
    C, attrs = load(out)
    assert np.abs(C - A @ B).max() <= attrs["bound_abs"]
    assert (tmp_path / "S.h5.d" / old / "notes.txt").read_text() == "mine"


def test_output_in_a_symlink_loop_folder(tmp_path, ops):
    """`-o loop/C.h5` where loop -> loop: one line, exit 1 or 2, nothing made; the link
    stays."""
    a, b, _, _ = ops
    os.symlink("loop", tmp_path / "loop")
    r = run("matmul", a, b, "-o", tmp_path / "loop" / "C.h5")
    assert_one_error(r, codes=(1, 2))
    assert os.path.islink(tmp_path / "loop")
    assert sorted(os.listdir(tmp_path)) == ["A.npy", "B.npy", "loop"]


def test_stale_lock_file_with_garbage_is_no_obstacle(tmp_path, ops):
    """A `.lock` left as a regular file holding garbage (a pid that never was, binary
    bytes): the advisory lock dies with its process, so a `--resume` runs and completes."""
    a, b, A, B = ops
    out = tmp_path / "C.h5"
    p = start("matmul", a, b, "-o", out, "--planes", "3", n=2,
              env={**SLOW, "LRMPI_TEST_SLOW_S": "0.5"})
    try:
        wait_for(str(out), 1, p, timeout=90)
    finally:
        kill_group(p, signal.SIGKILL)
    (tmp_path / "C.h5.d" / ".lock").write_bytes(b"99999999\n\x00\xff garbage")
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "3", "--resume"))
    assert attrs_of(out)["status"] == "complete"
    C, attrs = load(out)
    assert np.abs(C - A @ B).max() <= attrs["bound_abs"]


def test_sigkill_during_overwrite_of_keep_latest_result(tmp_path, ops, rng):
    """A complete `--keep latest` result; an `--overwrite` with other inputs SIGKILLed early
    (it replaces the old result at its first resolution, if it got that far): either way
    the job file loads whole, and a file planted in OUT.h5.d stays."""
    a, b, _, _ = ops
    out = tmp_path / "C.h5"
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "2", "--keep", "latest"))
    (tmp_path / "C.h5.d" / "mine.txt").write_text("x")
    a2 = save(tmp_path / "A2.npy", rng.standard_normal((40, 24)))
    p = start("matmul", a2, b, "-o", out, "--planes", "3", "--overwrite", n=2,
              env={**SLOW, "LRMPI_TEST_SLOW_S": "0.5"})
    try:
        limit = time.time() + 60
        while time.time() < limit and p.poll() is None and len(os.listdir(tmp_path / "C.h5.d")) < 4:
            time.sleep(0.02)                    # until the new job's folder exists
    finally:
        kill_group(p, signal.SIGKILL)
    C, attrs = load(out)
    assert C.shape == (40, 16)
    assert (tmp_path / "C.h5.d" / "mine.txt").read_text() == "x"
