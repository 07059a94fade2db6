"""Third adversarial pass, area 1: safety promises — special files (FIFOs, sockets, device
files, dangling links) wherever lrmpi writes: the output, the lock, pack's target, the plot,
the stats file. Nothing of the user's is changed, nothing hangs."""
import os
import socket
import stat

import numpy as np
import pytest

from adversary import assert_ok, assert_one_error, load, run

FAST = {"LRMPI_PROBE_TIMEOUT_S": "8"}   # a pipe blocks the HDF5 probe until this limit


def make_socket(path):
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    return s


def test_output_is_a_fifo_refused_no_hang(tmp_path, ops):
    """-o naming a named pipe (an existing file lrmpi did not write): one line, promptly;
    the pipe stays a pipe."""
    a, b, _, _ = ops
    out = tmp_path / "C.h5"
    os.mkfifo(out)
    r = run("matmul", a, b, "-o", out, "--planes", "1", timeout=60, env=FAST)
    assert_one_error(r, codes=(1, 2))
    assert stat.S_ISFIFO(os.lstat(out).st_mode)
    r = run("matmul", a, b, "-o", out, "--planes", "1", "--overwrite", timeout=60, env=FAST)
    assert_one_error(r, codes=(1, 2))
    assert stat.S_ISFIFO(os.lstat(out).st_mode)


@pytest.mark.parametrize("dev", ["/dev/null", "/dev/full"])
def test_output_is_a_device_refused_even_with_overwrite(tmp_path, ops, dev):
    """-o /dev/null or /dev/full (with --overwrite): refused with one line, the device
    untouched (still a character device)."""
    a, b, _, _ = ops
    r = run("matmul", a, b, "-o", dev, "--planes", "1", "--overwrite", timeout=60, cwd=tmp_path)
    assert_one_error(r, codes=(1, 2))
    assert stat.S_ISCHR(os.stat(dev).st_mode)
    assert not os.path.exists(dev + ".d")


def test_output_is_a_socket_refused(tmp_path, ops):
    a, b, _, _ = ops
    out = tmp_path / "C.h5"
    s = make_socket(out)
    try:
        r = run("matmul", a, b, "-o", out, "--planes", "1", "--overwrite", timeout=60, env=FAST)
        assert_one_error(r, codes=(1, 2))
        assert stat.S_ISSOCK(os.lstat(out).st_mode)
    finally:
        s.close()


# found by the third adversarial pass (fixed)
def test_output_dangling_symlink_is_not_silently_replaced(tmp_path, ops):
    """-o a dangling link into another folder, no --overwrite: refused with one line (the
    link is an existing entry lrmpi did not write, as `pack` and `--plot` say), or the result
    written through it; never the user's link silently replaced by a file."""
    a, b, A, B = ops
    elsewhere = tmp_path / "other"
    elsewhere.mkdir()
    out = tmp_path / "C.h5"
    os.symlink(elsewhere / "target.h5", out)
    r = run("matmul", a, b, "-o", out, "--planes", "3", timeout=60)
    assert os.path.islink(out), "the user's symbolic link was replaced by a file"
    if r.returncode != 0:
        assert_one_error(r, codes=(1, 2))
        return
    C, _ = load(out)
    assert np.abs(C - A @ B).max() < 1e-2


def test_lock_dangling_link_refused(tmp_path, ops):
    """OUT.h5.d/.lock a dangling link (README: a `.lock` that is a link is refused with one
    line); its would-be target is never created."""
    a, b, _, _ = ops
    out = str(tmp_path / "C.h5")
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "1"))
    lock = out + ".d/.lock"
    if os.path.lexists(lock):
        os.remove(lock)
    os.symlink(tmp_path / "nowhere", lock)
    r = run("matmul", a, b, "-o", out, "--planes", "2", "--overwrite", timeout=60, env=FAST)
    assert_one_error(r, codes=(1, 2))
    assert not (tmp_path / "nowhere").exists() and os.path.islink(lock)


def test_lock_is_a_socket_no_hang(tmp_path, ops):
    """OUT.h5.d/.lock replaced by a UNIX socket: an --overwrite ends promptly, completing or
    with one line; the old result still reads."""
    a, b, _, _ = ops
    out = str(tmp_path / "C.h5")
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "1"))
    before, _ = load(out)
    lock = out + ".d/.lock"
    if os.path.lexists(lock):
        os.remove(lock)
    s = make_socket(lock)
    try:
        r = run("matmul", a, b, "-o", out, "--planes", "2", "--overwrite", timeout=60, env=FAST)
        if r.returncode != 0:
            assert_one_error(r, codes=(1, 2))
            assert np.array_equal(load(out)[0], before)
        else:
            assert load(out)[1]["completed"] == 3
    finally:
        s.close()


@pytest.mark.parametrize("kind", ["fifo", "/dev/null", "dangling"])
def test_pack_target_special_refused(tmp_path, ops, kind):
    """`lrmpi pack OUT.h5 X --overwrite` where X is a pipe, /dev/null or a dangling link:
    one line (only a file lrmpi wrote is replaced), nothing hangs, X unchanged."""
    a, b, _, _ = ops
    out = str(tmp_path / "C.h5")
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "1"))
    if kind == "fifo":
        target = tmp_path / "ONE.h5"
        os.mkfifo(target)
    elif kind == "dangling":
        target = tmp_path / "ONE.h5"
        os.symlink(tmp_path / "gone" / "x.h5", target)
    else:
        target = kind
    r = run("pack", out, target, "--overwrite", timeout=60, env=FAST)
    assert_one_error(r, codes=(1, 2))
    if kind == "fifo":
        assert stat.S_ISFIFO(os.lstat(target).st_mode)
    elif kind == "dangling":
        assert os.path.islink(target) and not (tmp_path / "gone").exists()
    else:
        assert stat.S_ISCHR(os.stat(target).st_mode)


def test_plot_onto_fifo_or_dangling_link_refused(tmp_path, ops):
    """inspect --plot onto an existing pipe or a dangling link, no --overwrite: refused
    with one line (never over an existing file), no hang, the entry unchanged."""
    a, b, _, _ = ops
    out = str(tmp_path / "C.h5")
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "1"))
    fifo = tmp_path / "p.png"
    os.mkfifo(fifo)
    r = run("inspect", out, "--plot", fifo, timeout=60, env=FAST)
    assert_one_error(r, codes=(1, 2))
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    link = tmp_path / "q.png"
    os.symlink(tmp_path / "gone" / "q.png", link)
    r = run("inspect", out, "--plot", link, timeout=60, env=FAST)
    assert_one_error(r, codes=(1, 2))
    assert os.path.islink(link) and not (tmp_path / "gone").exists()
