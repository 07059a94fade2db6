"""Fourth adversarial pass, area 3: damaged and hostile checkpoints — files the user may
not read, folders the user may not write, read-only mounts, attributes of the wrong type."""
import os
import shutil
import subprocess

import h5py
import numpy as np
import pytest

from adversary import (NOCAP, PY, assert_ok, assert_one_error, attrs_of, job_folder, load,
                      run, run_nocap, snapshot, stop_after)


def _load_nocap(out):
    code = ("import sys, lrmpi\n"
            "try:\n"
            "    C, a = lrmpi.load_result(sys.argv[1])\n"
            "except lrmpi.LrmpiError as e:\n"
            "    print('ERR', e, file=sys.stderr); sys.exit(1)\n"
            "print(C.shape)\n")
    return subprocess.run([*NOCAP, PY, "-c", code, str(out)], capture_output=True, text=True,
                          timeout=60)


def test_unreadable_resolution_file(tmp_path, done):
    """A resolution file the user may not read (mode 000): load_result, inspect and pack
    each fail with one line (exit 1) and pack writes nothing."""
    out = done[0]
    res = os.path.join(job_folder(out), "res003.h5")
    os.chmod(res, 0)
    try:
        r = _load_nocap(out)
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
        assert_one_error(run_nocap("inspect", out), code=1)
        assert_one_error(run_nocap("pack", out, tmp_path / "P.h5"), code=1)
        assert not (tmp_path / "P.h5").exists()
    finally:
        os.chmod(res, 0o644)


def test_unreadable_sums_file_resume_one_line_nothing_changed(tmp_path, ops):
    """A stopped job whose resume data the user may not read: --resume is one line
    (exit 1), the checkpoint is unchanged; inspect (which reads the resume data too) is one
    line or still shows the listed resolution."""
    a, b, _, _ = ops
    out = str(tmp_path / "C.h5")
    rc, err = stop_after(out, 2, "matmul", a, b, "-o", out, "--planes", "3")
    assert rc == 3, err
    sums = [os.path.join(job_folder(out), f) for f in os.listdir(job_folder(out))
            if f.startswith("sums")]
    assert sums
    for s in sums:
        os.chmod(s, 0)
    before = snapshot(tmp_path)
    try:
        assert_one_error(run_nocap("matmul", a, b, "-o", out, "--planes", "3", "--resume"),
                         code=1)
        r = run_nocap("inspect", out)
        if r.returncode != 0:
            assert_one_error(r, code=1)
    finally:
        for s in sums:
            os.chmod(s, 0o644)
    assert snapshot(tmp_path) == before
    assert attrs_of(out)["status"] == "deadline"


def test_read_only_job_folder_resume_one_line(tmp_path, ops):
    """A stopped job whose job folder the user may not write: --resume fails with one line
    (exit 1, never 0 or 3) and every listed resolution still reads back."""
    a, b, _, _ = ops
    out = str(tmp_path / "C.h5")
    rc, err = stop_after(out, 1, "matmul", a, b, "-o", out, "--planes", "3")
    assert rc == 3, err
    C1, _ = load(out)
    jf = job_folder(out)
    os.chmod(jf, 0o555)
    try:
        r = run_nocap("matmul", a, b, "-o", out, "--planes", "3", "--resume")
    finally:
        os.chmod(jf, 0o755)
    if r.returncode == 0:       # it found another way to write: then the result is whole
        assert_ok(r)
        assert attrs_of(out)["status"] == "complete"
        return
    assert_one_error(r, code=1)
    assert np.array_equal(load(out)[0], C1)


def test_checkpoint_on_read_only_mount_is_readable(tmp_path, done):
    """A complete checkpoint on a read-only bind mount (an archive): inspect, load_result
    and pack read it (reading needs no write), with the same C."""
    out, *_ = done
    C, _ = load(out)
    ro = tmp_path / "ro"
    ro.mkdir()
    r = subprocess.run(["mount", "--bind", "-o", "ro", str(tmp_path), str(ro)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot bind-mount: {r.stderr.strip()}")
    try:
        rout = ro / os.path.basename(out)
        dest = tmp_path.parent / (tmp_path.name + "-packed.h5")
        assert_ok(run_nocap("inspect", rout))
        r = _load_nocap(rout)
        assert r.returncode == 0, r.stderr
        assert_ok(run_nocap("pack", rout, dest))
        assert np.array_equal(load(dest)[0], C)
        os.unlink(dest)
    finally:
        subprocess.run(["umount", "-l", str(ro)], capture_output=True)


@pytest.mark.parametrize("name,value", [("planned", "three"), ("completed", 2.5),
                                        ("status", np.array([1, 2, 3]))])
def test_job_attributes_of_the_wrong_type(tmp_path, done, name, value):
    """The job file's planned / completed / status edited to a value of the wrong type:
    inspect, load_result and --resume each fail with one line or read the resolutions
    still listed, never a traceback."""
    out, a, b, *_ = done
    with h5py.File(out, "r+") as f:
        f.attrs[name] = value
    for r in (run("inspect", out), run("matmul", a, b, "-o", out, "--planes", "2", "--resume")):
        if r.returncode != 0:
            assert_one_error(r, code=1)
        else:
            assert "Traceback" not in r.stderr
    code = ("import sys, lrmpi\n"
            "try:\n"
            "    lrmpi.load_result(sys.argv[1])\n"
            "except lrmpi.LrmpiError as e:\n"
            "    print('ERR', e, file=sys.stderr); sys.exit(1)\n")
    r = subprocess.run([PY, "-c", code, out], capture_output=True, text=True, timeout=60)
    assert r.returncode in (0, 1) and "Traceback" not in r.stderr, r.stderr


def test_job_file_alone_without_its_folder(tmp_path, done):
    """The job file copied elsewhere without OUT.h5.d: inspect, load_result and --resume
    each fail with one line saying what is missing (never an empty result or exit 0)."""
    out, a, b, *_ = done
    other = tmp_path / "elsewhere"
    other.mkdir()
    shutil.copy(out, other / "C.h5")
    r = run("inspect", other / "C.h5")
    assert r.returncode != 0, r.stdout
    assert_one_error(r, code=1)
    assert_one_error(run("matmul", a, b, "-o", other / "C.h5", "--planes", "2", "--resume"),
                     code=1)
    assert os.listdir(other) in (["C.h5"], sorted(["C.h5", "C.h5.d"]))
