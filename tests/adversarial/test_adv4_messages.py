"""Fourth adversarial pass, area 8: messages — what the one line says when a file cannot be
read or written, a setting refuses an operand, a reader's output pipe closes early."""
import os
import subprocess

import pytest

from adversary import (assert_one_error, cmd, mount_tmpfs, run, run_nocap, save, umount)


def test_unreadable_operand_message_says_permission_not_invalid(tmp_path, ops):
    """A valid .npy the user may not read: the line says permission is denied and does
    not call the file invalid."""
    a, b, _, _ = ops
    os.chmod(a, 0)
    try:
        line = assert_one_error(run_nocap("matmul", a, b), code=1)
    finally:
        os.chmod(a, 0o644)
    assert "permission" in line.lower() and "not a valid" not in line, line


def test_memory_fraction_refusal_names_the_setting(tmp_path, ops):
    """A legal but tiny LRMPI_MEMORY_FRACTION refuses the operands: the line names the
    setting that refused them (the machine can hold 7 KB)."""
    a, b, _, _ = ops
    line = assert_one_error(run("matmul", a, b, env={"LRMPI_MEMORY_FRACTION": "1e-300"}),
                            code=1)
    assert "LRMPI_MEMORY_FRACTION" in line and "0.0 GiB" not in line, line


def test_read_only_output_folder_message(tmp_path, ops):
    """-o in a folder the user may not write: the line names the output and says
    permission is denied."""
    a, b, _, _ = ops
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        line = assert_one_error(run_nocap("matmul", a, b, "-o", ro / "C.h5"), code=1)
    finally:
        ro.chmod(0o755)
    assert str(ro / "C.h5") in line and "permission" in line.lower(), line


def test_full_disk_message_names_the_output(tmp_path, rng):
    """A job that fills its file system: the line names the checkpoint and says no space
    is left; the log lines before it are the resolutions that are on disk."""
    a = save(tmp_path / "A.npy", rng.standard_normal((200, 64)))
    b = save(tmp_path / "B.npy", rng.standard_normal((64, 200)))
    m = tmp_path / "m"
    mount_tmpfs(m, "700k")
    try:
        r = run("matmul", a, b, "-o", m / "C.h5", "--planes", "4")
        line = assert_one_error(r, code=1)
        assert str(m / "C.h5") in line and "space" in line.lower(), line
    finally:
        umount(m)


@pytest.mark.parametrize("args", [["inspect", "OUT"], ["inspect", "OUT", "--status"],
                                  ["info"], ["--help"]])
def test_reader_output_into_closed_pipe_no_traceback(tmp_path, done, args):
    """`lrmpi inspect OUT | head -c1` and the like: no traceback on stderr, exit 0 or the
    shell's SIGPIPE code (141)."""
    out = done[0]
    line = " ".join("'" + (out if x == "OUT" else x) + "'" for x in cmd(*args))
    r = subprocess.run(["bash", "-c", f"{line} | head -c1 >/dev/null; exit ${{PIPESTATUS[0]}}"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode in (0, 141), r.stderr
    assert "Traceback" not in r.stderr and "Exception" not in r.stderr, r.stderr
