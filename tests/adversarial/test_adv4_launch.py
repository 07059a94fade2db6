"""Fourth adversarial pass, area 6: launch and settings — settings that are empty, blank or
huge, deadlines in every accepted form and many refused ones, stdin closed, read commands
on a job still running."""
import subprocess
import time

import numpy as np
import pytest

from adversary import (SLOW, assert_ok, assert_one_error, attrs_of, bounded, cmd,
                      kill_group, load, run, start, wait_for)


def test_empty_settings_are_the_defaults(tmp_path, ops):
    """LRMPI_* settings set to "" (an `export VAR=` in a job script): the defaults, the
    same C bit for bit at 2 ranks."""
    a, b, _, _ = ops
    env = {k: "" for k in ("LRMPI_DEPTH", "LRMPI_LOOKAHEAD", "LRMPI_CHUNK_COLS",
                           "LRMPI_TILES_PER_WORKER", "LRMPI_LOG_LEVEL", "LRMPI_ROOT_COMPUTES",
                           "LRMPI_STOP_TIMEOUT_S", "LRMPI_WRITE_QUEUE")}
    out, ref = tmp_path / "C.h5", tmp_path / "R.h5"
    r = run("matmul", a, b, "-o", out, "--planes", "3", n=2, env=env)
    if r.returncode != 0:          # or refused, every variable named in one line
        assert_one_error(r, code=2)
        return
    assert_ok(r)
    assert_ok(run("matmul", a, b, "-o", ref, "--planes", "3", n=2))
    assert np.array_equal(load(out)[0], load(ref)[0])


@pytest.mark.parametrize("kv", [("LRMPI_DEPTH", " "), ("LRMPI_KERNEL", "\t"),
                                ("LRMPI_HANG_MIN_S", "\n"), ("LRMPI_CHUNK_COLS", "1" * 20),
                                ("LRMPI_CHUNK_COLS", "1" * 400),
                                ("LRMPI_BACKUP_MIN_S", "9" * 400),
                                ("LRMPI_MARGIN_FRACTION", "0." + "0" * 5000 + "1x")])
def test_blank_and_huge_settings_refused_at_three_ranks(tmp_path, ops, kv):
    """Blank values and numbers of hundreds of digits: every rank ends within 20 s, exit 2,
    one line naming the variable, no output."""
    a, b, _, _ = ops
    r = bounded("matmul", a, b, "-o", tmp_path / "C.h5", n=3, env=dict([kv]), limit=20)
    assert_one_error(r, code=2, contains=(kv[0],))
    assert not (tmp_path / "C.h5").exists()


@pytest.mark.parametrize("form", ["90", "90s", "2m", "1h30m", "1d", "0:90", "1:30", "00:01:30",
                                  "0-1", "0-0:5", "0-0:1:30", " 90 ", "1.5h", "ISO", "@EPOCH",
                                  "1h 30m"])  # blanks between parts: jobscripts/README.md's
def test_deadline_accepted_forms(tmp_path, ops, form):
    """Every documented deadline form, far enough ahead: the job completes, exit 0."""
    a, b, _, _ = ops
    if form == "ISO":
        form = time.strftime("%Y-%m-%dT%H:%M", time.localtime(time.time() + 7200))
    elif form == "@EPOCH":
        form = f"@{int(time.time()) + 3600}"
    out = tmp_path / "C.h5"
    r = run("matmul", a, b, "-o", out, "--planes", "1", "--deadline", form)
    if form == "1.5h" and r.returncode == 2:      # a fraction with a unit may be refused
        assert_one_error(r, code=2, contains=("--deadline",))
        return
    assert_ok(r)
    assert attrs_of(out)["status"] == "complete"


@pytest.mark.parametrize("form", ["0", "-5", "0s", "00:00:00", "0-0", "@0", "2001-01-01T00:00",
                                  "NaN", "-inf", "1e3", "99999d", "2026-13-01T00:00", "90S",
                                  "+90", "1m-30s", "0x10", "1:2:3:4", "@-1", "--", "1,5",
                                  "1h 30", "\u0663", "5 m"])
def test_deadline_refused_forms_one_line_no_output(tmp_path, ops, form):
    """Zero, negative, past, NaN, huge and malformed deadlines: exit 2, one line naming
    --deadline, and no output written."""
    a, b, _, _ = ops
    out = tmp_path / "C.h5"
    r = run("matmul", a, b, "-o", out, f"--deadline={form}")
    assert_one_error(r, code=2, contains=("--deadline",))
    assert not out.exists()


def test_stdin_closed_under_mpiexec(tmp_path, ops):
    """`mpiexec -n 2 lrmpi matmul ... <&-` (stdin closed, as in some batch systems): the
    job completes, exit 0."""
    a, b, _, _ = ops
    out = tmp_path / "C.h5"
    line = " ".join(f"'{x}'" for x in cmd("matmul", a, b, "-o", out, "--planes", "2", n=2))
    r = subprocess.run(["bash", "-c", f"{line} <&-"], capture_output=True, text=True,
                       timeout=120, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    assert attrs_of(out)["status"] == "complete"


def test_read_commands_on_a_running_job(tmp_path, ops):
    """inspect, inspect --status and pack while the job runs (a slow worker): each exits 0;
    --status says running; the packed file reads back the resolutions it lists; the job
    itself still completes, exit 0."""
    a, b, _, _ = ops
    out = str(tmp_path / "C.h5")
    p = start("matmul", a, b, "-o", out, "--planes", "3", n=2,
              env={**SLOW, "LRMPI_TEST_SLOW_S": "0.6"})
    try:
        wait_for(out, 1, p)
        st = run("inspect", out, "--status")
        assert st.returncode == 0 and st.stdout.strip() == "running", st.stdout + st.stderr
        assert_ok(run("inspect", out))
        packed = tmp_path / "P.h5"
        assert_ok(run("pack", out, packed))
        C, attrs = load(packed)
        assert C.shape == (40, 16) and attrs["index"] >= 1
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    finally:
        kill_group(p)
    assert attrs_of(out)["status"] == "complete"


def test_a_blank_stats_file_is_refused(tmp_path, ops):
    """LRMPI_STATS_FILE=" " (a blank): one line naming it, exit 2, no file named " "."""
    a, b, _, _ = ops
    r = run("matmul", a, b, "-o", tmp_path / "C.h5", env={"LRMPI_STATS_FILE": " "},
            cwd=tmp_path)
    assert_one_error(r, code=2, contains=("LRMPI_STATS_FILE",))
    assert not (tmp_path / " ").exists() and not (tmp_path / "C.h5").exists()
