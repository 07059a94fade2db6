"""Third adversarial pass, area 8: messages — one line even for names with newlines, the
path named, --status for every state, quiet levels."""
import os


from adversary import (assert_one_error, run, stop_after)

FAST = {"LRMPI_PROBE_TIMEOUT_S": "8"}   # a pipe blocks the HDF5 probe until this limit


def only_line(r):
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, r.stderr
    return lines[0]


def test_missing_operand_with_newline_in_name_is_one_line(tmp_path, ops):
    """An operand whose name holds a newline (missing): stderr is exactly one line."""
    a, _, _, _ = ops
    r = run("matmul", a, tmp_path / "B\nlrmpi: error: fake.npy", "-o", tmp_path / "C.h5")
    assert r.returncode in (1, 2)
    only_line(r)


def test_output_fifo_error_names_the_path(tmp_path, ops):
    a, b, _, _ = ops
    out = tmp_path / "pipe-out.h5"
    os.mkfifo(out)
    r = run("matmul", a, b, "-o", out, timeout=60, env=FAST)
    line = assert_one_error(r, codes=(1, 2))
    assert "pipe-out.h5" in line, line


def test_inspect_dangling_link_names_it(tmp_path):
    link = tmp_path / "result.h5"
    os.symlink(tmp_path / "vanished.h5", link)
    r = run("inspect", link, timeout=60, env=FAST)
    line = assert_one_error(r, code=1)
    assert "result.h5" in line or "vanished.h5" in line, line


def test_status_words_for_stopped_and_failed(tmp_path, ops):
    """inspect --status prints exactly `deadline` for a stopped job and `failed` for one
    whose worker raised, exit 0, nothing on stderr."""
    a, b, _, _ = ops
    out = str(tmp_path / "C.h5")
    rc, err = stop_after(out, 1, "matmul", a, b, "-o", out, "--planes", "3")
    assert rc == 3, err
    r = run("inspect", out, "--status")
    assert r.returncode == 0 and r.stdout.strip() == "deadline" and not r.stderr.strip(), r
    out2 = str(tmp_path / "F.h5")
    r = run("matmul", a, b, "-o", out2, "--planes", "3", n=2,
            env={"LRMPI_TEST_FAIL_RANK": "1", "LRMPI_TEST_FAIL_AFTER": "2",
                 "LRMPI_ROOT_COMPUTES": "no"}, timeout=90)
    assert r.returncode == 1, r.stderr
    r = run("inspect", out2, "--status")
    assert r.returncode == 0 and r.stdout.strip() == "failed", r


def test_log_level_error_completes_silently(tmp_path, ops):
    """LRMPI_LOG_LEVEL=ERROR under -n 3: a complete job prints nothing on stderr."""
    a, b, _, _ = ops
    r = run("matmul", a, b, "-o", tmp_path / "C.h5", "--planes", "2", n=3,
            env={"LRMPI_LOG_LEVEL": "error"}, timeout=90)
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip() == "", r.stderr


def test_two_bad_settings_one_line_at_three_ranks(tmp_path, ops):
    """Two settings out of range at once: one line (rank 0), exit 2, naming at least one."""
    a, b, _, _ = ops
    r = run("matmul", a, b, "-o", tmp_path / "C.h5", n=3,
            env={"LRMPI_DEPTH": "0", "LRMPI_WRITE_QUEUE": "0"}, timeout=60)
    line = assert_one_error(r, code=2)
    assert "LRMPI_DEPTH" in line or "LRMPI_WRITE_QUEUE" in line, line


def test_missing_dash_o_names_it(tmp_path, ops):
    """matmul without -o: either runs without output (README: "also without -o") or one
    usage line naming -o; never a traceback."""
    a, b, _, _ = ops
    r = run("matmul", a, b, "--planes", "1", cwd=tmp_path)
    assert "Traceback" not in r.stderr
    if r.returncode != 0:
        line = assert_one_error(r, code=2)
        assert "-o" in line, line
    assert os.listdir(tmp_path) == ["A.npy", "B.npy"] or sorted(os.listdir(tmp_path)) == \
        ["A.npy", "B.npy"]
