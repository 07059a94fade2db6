"""Third adversarial pass, area 6: launch and settings — signals through Hydra, settings
spelled as NaN, infinity, with blanks or non-ASCII digits, stats files that are special."""
import json
import os
import signal
import stat

import numpy as np
import pytest

from adversary import (SLOW, assert_ok, assert_one_error, attrs_of, bounded, kill_group, load,
                       run, start, wait_for)


@pytest.mark.parametrize("var,value", [
    ("LRMPI_BACKUP_FACTOR", "nan"), ("LRMPI_MARGIN_FRACTION", "nan"),
    ("LRMPI_HANG_MIN_S", "inf"), ("LRMPI_PROBE_TIMEOUT_S", "nan"),
    ("LRMPI_TEST_SLOW_S", "NaN"), ("LRMPI_BOUND_BUDGET", "-inf"),
    ("LRMPI_STOP_TIMEOUT_S", "nan")])
def test_nan_and_infinite_settings_refused(tmp_path, ops, var, value):
    """NaN slips past `lo <= x <= hi` written as `not (x < lo or x > hi)`: every such
    value is outside the table's range and must be refused, exit 2, one line naming it."""
    a, b, _, _ = ops
    r = run("matmul", a, b, "-o", tmp_path / "C.h5", "--planes", "1", n=2, env={var: value},
            timeout=60)
    assert_one_error(r, code=2, contains=(var,), abort_ok=var == "LRMPI_STOP_TIMEOUT_S")
    assert not (tmp_path / "C.h5").exists()


@pytest.mark.parametrize("value", [" 2", "2 ", "0x2", "1e1", "２", "2_0", "+2"])
def test_integer_setting_spellings(tmp_path, ops, value):
    """LRMPI_DEPTH spelled oddly: accepted (the job completes, equal to the default) or
    refused with one line naming it, exit 2, at -n 2 — never a traceback."""
    a, b, _, _ = ops
    r = run("matmul", a, b, "-o", tmp_path / "C.h5", "--planes", "2", n=2,
            env={"LRMPI_DEPTH": value}, timeout=60)
    if r.returncode != 0:
        assert_one_error(r, code=2, contains=("LRMPI_DEPTH",))
        return
    assert_ok(run("matmul", a, b, "-o", tmp_path / "R.h5", "--planes", "2"))
    assert np.array_equal(load(tmp_path / "C.h5")[0], load(tmp_path / "R.h5")[0])


@pytest.mark.parametrize("n,sig", [(2, signal.SIGUSR1), (3, signal.SIGTERM)])
def test_signal_to_hydra_stops_with_exit_3(tmp_path, ops, n, sig):
    """SIGUSR1 / SIGTERM sent to mpiexec itself (README: Hydra forwards them): exit 3,
    status deadline, the listed resolutions read back."""
    a, b, _, _ = ops
    out = str(tmp_path / "C.h5")
    p = start("matmul", a, b, "-o", out, "--planes", "3", n=n,
              env={**SLOW, "LRMPI_TEST_SLOW_S": "0.6"})
    try:
        wait_for(out, 1, p, timeout=90)
        os.kill(p.pid, sig)            # mpiexec only, not its group
        _, err = p.communicate(timeout=60)
        assert p.returncode == 3, err
        at = attrs_of(out)
        assert at["status"] == "deadline"
        C, _ = load(out)
        assert C.shape == (40, 16)
    finally:
        kill_group(p)


@pytest.mark.parametrize("kind", ["fifo", "dir", "devfull", "dangling"])
def test_stats_file_special_never_hangs_or_fails_job(tmp_path, ops, kind):
    """LRMPI_STATS_FILE a pipe without reader, a folder, /dev/full or a dangling link into a
    missing folder: the job completes with its result (a stats file is not the result), or
    refuses at start with one line; never hangs; the special file stays."""
    a, b, A, B = ops
    if kind == "fifo":
        stats = tmp_path / "stats.json"
        os.mkfifo(stats)
    elif kind == "dir":
        stats = tmp_path / "statsdir"
        stats.mkdir()
    elif kind == "dangling":
        stats = tmp_path / "stats.json"
        os.symlink(tmp_path / "no" / "s.json", stats)
    else:
        stats = "/dev/full"
    out = tmp_path / "C.h5"
    r = bounded("matmul", a, b, "-o", out, "--planes", "2", n=2,
                env={"LRMPI_STATS_FILE": str(stats)}, limit=30)
    if r.returncode != 0:
        assert_one_error(r, codes=(1, 2))
        assert not out.exists()
    else:
        assert "Traceback" not in r.stderr
        C, _ = load(out)
        assert np.abs(C - A @ B).max() < 1e-2
    if kind == "fifo":
        assert stat.S_ISFIFO(os.lstat(stats).st_mode)
    elif kind == "dir":
        assert stats.is_dir() and not any(stats.iterdir())


def test_stats_file_inside_job_folder_refused_old_result_kept(tmp_path, ops):
    """LRMPI_STATS_FILE inside OUT.h5.d (a user's file there) on an --overwrite at -n 2:
    refused at start with one line naming the variable (exit 2), or written; either way the
    user's file is kept by the next --overwrite and the checkpoint reads clean."""
    a, b, _, _ = ops
    out = str(tmp_path / "C.h5")
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "1"))
    stats = out + ".d/stats.json"
    with open(stats, "w") as f:
        f.write("{}")
    r = run("matmul", a, b, "-o", out, "--planes", "2", "--overwrite", n=2,
            env={"LRMPI_STATS_FILE": stats})
    if r.returncode != 0:
        assert_one_error(r, code=2, contains=("LRMPI_STATS_FILE",))
        assert attrs_of(out)["completed"] == 1
    with open(stats) as f:
        json.load(f)
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "1", "--overwrite"))
    assert os.path.exists(stats)
    assert_ok(run("inspect", out))
