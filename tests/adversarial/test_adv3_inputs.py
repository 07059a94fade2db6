"""Third adversarial pass, area 4: inputs that are special files, dangling links, HDF5
paths naming groups, the root or nothing."""
import os
import socket

import h5py
import numpy as np
import pytest

from adversary import (assert_one_error, bounded, load, run)

FAST = {"LRMPI_PROBE_TIMEOUT_S": "8"}   # a pipe blocks the HDF5 probe until this limit


# found by the third adversarial pass (fixed)
def test_operand_is_a_fifo_no_hang(tmp_path, ops):
    """A named pipe with no writer as operand A: one line, promptly (never blocks in open)."""
    _, b, _, _ = ops
    fifo = tmp_path / "P.npy"
    os.mkfifo(fifo)
    r = bounded("matmul", fifo, b, "-o", tmp_path / "C.h5", env=FAST)
    assert_one_error(r, codes=(1, 2))
    assert not (tmp_path / "C.h5").exists()


# found by the third adversarial pass (fixed)
def test_operand_is_a_fifo_under_mpi(tmp_path, ops):
    _, b, _, _ = ops
    fifo = tmp_path / "P.npy"
    os.mkfifo(fifo)
    r = bounded("matmul", b, fifo, "-o", tmp_path / "C.h5", n=3, env=FAST)
    assert_one_error(r, codes=(1, 2))


def test_operand_is_a_socket(tmp_path, ops):
    a, _, _, _ = ops
    p = tmp_path / "S.npy"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(p))
    try:
        r = run("matmul", a, p, "-o", tmp_path / "C.h5", timeout=60, env=FAST)
        assert_one_error(r, codes=(1, 2))
    finally:
        s.close()


def test_operand_dangling_link_named(tmp_path, ops):
    """A dangling link as operand: one line naming it, exit 1."""
    a, _, _, _ = ops
    link = tmp_path / "B.npy.link"
    os.symlink(tmp_path / "gone.npy", link)
    r = run("matmul", a, link, "-o", tmp_path / "C.h5", timeout=60, env=FAST)
    line = assert_one_error(r, codes=(1, 2))
    assert "B.npy.link" in line or "gone.npy" in line, line


@pytest.mark.parametrize("spec", ["/", "", "/grp", "/grp/", "/missing"])
def test_h5_operand_naming_group_root_or_nothing(tmp_path, ops, spec):
    """FILE.h5:/ (the root group), FILE.h5: (no dataset), a group, a missing name: one line
    naming the problem; never the first dataset found."""
    a, _, A, B = ops
    h5 = tmp_path / "in.h5"
    with h5py.File(h5, "w") as f:
        f["grp/B"] = B
        f["B"] = B
    r = run("matmul", a, f"{h5}:{spec}", "-o", tmp_path / "C.h5", timeout=60, env=FAST)
    assert_one_error(r, codes=(1, 2))
    assert not (tmp_path / "C.h5").exists()


# found by the third adversarial pass (fixed)
def test_h5_operand_file_is_a_fifo(tmp_path, ops):
    a, _, _, _ = ops
    fifo = tmp_path / "in.h5"
    os.mkfifo(fifo)
    r = bounded("matmul", a, f"{fifo}:/B", "-o", tmp_path / "C.h5", env=FAST)
    assert_one_error(r, codes=(1, 2))


def test_operand_is_dev_stdin_with_npy_on_it(tmp_path, ops):
    """/dev/stdin fed an .npy: read like a file (result correct) or one line; no hang."""
    a, b, A, B = ops
    import subprocess
    from adversary import cmd
    with open(b, "rb") as f:
        r = subprocess.run(cmd("matmul", a, "/dev/stdin", "-o", tmp_path / "C.h5", "--planes",
                               "2"), stdin=f, capture_output=True, text=True, timeout=60, env=FAST)
    if r.returncode != 0:
        assert_one_error(r, codes=(1, 2))
        return
    C, _ = load(tmp_path / "C.h5")
    assert np.abs(C - A @ B).max() < 1e-2

