"""Third adversarial pass, area 3: damaged and hostile checkpoints — special files in the
job folder, checksum attributes downgraded or of unknown kinds."""
import os
import socket

import h5py
import numpy as np
import pytest

from adversary import assert_ok, assert_one_error, bounded, load, run, stop_after


def job_dir(out):
    with h5py.File(out, "r") as f:
        jid = f.attrs["job_id"]
    jid = jid.decode() if isinstance(jid, bytes) else str(jid)
    return os.path.join(out + ".d", jid)


def complete(tmp_path, ops, planes="2"):
    a, b, _, _ = ops
    out = str(tmp_path / "C.h5")
    assert_ok(run("matmul", a, b, "-o", out, "--planes", planes))
    return out


def readers_fail(out):
    """inspect, pack and load_result: one line / an exception each, promptly."""
    r = bounded("inspect", out, env={"LRMPI_PROBE_TIMEOUT_S": "5"})
    assert_one_error(r, code=1)
    r = bounded("pack", out, out + ".one.h5", env={"LRMPI_PROBE_TIMEOUT_S": "5"})
    assert_one_error(r, code=1)
    assert not os.path.exists(out + ".one.h5")


# found by the third adversarial pass (fixed)
def test_resolution_file_replaced_by_fifo(tmp_path, ops):
    out = complete(tmp_path, ops)
    p = os.path.join(job_dir(out), "res002.h5")
    os.remove(p)
    os.mkfifo(p)
    readers_fail(out)


def test_resolution_file_replaced_by_socket(tmp_path, ops):
    out = complete(tmp_path, ops)
    p = os.path.join(job_dir(out), "res001.h5")
    os.remove(p)
    s = socket.socket(socket.AF_UNIX)
    s.bind(p)
    try:
        readers_fail(out)
    finally:
        s.close()


# found by the third adversarial pass (fixed)
def test_sums_file_replaced_by_fifo_resume_no_hang(tmp_path, ops):
    """A stopped job's sums001.h5 replaced by a pipe: --resume ends promptly with one line
    (it never adds sums it cannot read), the job file still lists resolution 1."""
    a, b, _, _ = ops
    out = str(tmp_path / "C.h5")
    rc, err = stop_after(out, 2, "matmul", a, b, "-o", out, "--planes", "3")
    assert rc == 3, err
    sums = sorted(f for f in os.listdir(job_dir(out)) if f.startswith("sums"))
    assert sums, os.listdir(job_dir(out))
    p = os.path.join(job_dir(out), sums[0])
    os.remove(p)
    os.mkfifo(p)
    r = bounded("matmul", a, b, "-o", out, "--planes", "3", "--resume",
                env={"LRMPI_PROBE_TIMEOUT_S": "5"})
    assert_one_error(r, code=1)


def set_attr(path, obj, name, value):
    with h5py.File(path, "r+") as f:
        target = f if obj == "/" else f[obj]
        target.attrs[name] = value


def checksum_of(path, obj="C"):
    with h5py.File(path, "r") as f:
        v = f[obj].attrs["checksum"]
    return v.decode() if isinstance(v, bytes) else str(v)


def test_checksum_downgraded_to_bare_legacy_form(tmp_path, ops):
    """An `xxh3:` checksum rewritten as a bare 32-hex digest (the form of earlier, SHA-256
    files) with the same hex: a mismatch, one line — never accepted as unchecked."""
    out = complete(tmp_path, ops)
    p = os.path.join(job_dir(out), "res003.h5")     # the last: what load_result reads
    v = checksum_of(p)
    assert v.startswith("xxh3:"), v
    set_attr(p, "C", "checksum", v[len("xxh3:"):][:32])
    readers_fail(out)
    with pytest.raises(Exception):
        load(out)


@pytest.mark.parametrize("value", ["md5:0123456789abcdef0123456789abcdef", "", "xxh3:",
                                   "XXH3:{hex}", "xxh3:{hex} "])
def test_checksum_unknown_or_malformed(tmp_path, ops, value):
    """A dataset checksum of an unknown kind, empty, or the right digest spelled otherwise:
    one line from the readers (a check that cannot be made is not passed)."""
    out = complete(tmp_path, ops)
    p = os.path.join(job_dir(out), "res001.h5")
    hexpart = checksum_of(p)[len("xxh3:"):]
    set_attr(p, "C", "checksum", value.format(hex=hexpart))
    readers_fail(out)


def test_checksum_attribute_of_wrong_type(tmp_path, ops):
    """A checksum attribute that is an integer array instead of a string: one line."""
    out = complete(tmp_path, ops)
    p = os.path.join(job_dir(out), "res001.h5")
    set_attr(p, "C", "checksum", np.arange(4))
    readers_fail(out)
