"""Area 1: safety promises — never delete or overwrite a user's file, the lock, -o refusals."""
import os
import time

import h5py
import numpy as np

from adversary import (assert_ok, assert_one_error, attrs_of, digest, kill_group, load, mlp_onnx,
                      run, save, snapshot, start, wait_for)


def _job_dir(out):
    d = out + ".d"
    subs = [s for s in os.listdir(d) if os.path.isdir(os.path.join(d, s))
            and not os.path.islink(os.path.join(d, s))]
    assert len(subs) >= 1, os.listdir(d)
    return subs


def test_output_is_infer_data_h5(tmp_path, rng):
    """-o naming the HDF5 file that holds infer's DATA dataset is refused; DATA intact."""
    model = mlp_onnx(tmp_path / "m.onnx", rng)
    data = tmp_path / "d.h5"
    with h5py.File(data, "w") as f:
        f["X"] = rng.standard_normal((6, 16)).astype(np.float32)
    before = digest(data)
    res = run("infer", model, f"{data}:/X", "-o", data, "--overwrite", cwd=tmp_path)
    assert_one_error(res, codes=(1, 2))
    assert digest(data) == before


def test_output_is_model_file(tmp_path, rng):
    """-o naming the ONNX model itself (with --overwrite) is refused; the model intact."""
    model = mlp_onnx(tmp_path / "m.onnx", rng)
    save(tmp_path / "d.npy", rng.standard_normal((4, 16)).astype(np.float32))
    before = digest(model)
    res = run("infer", model, tmp_path / "d.npy", "-o", model, "--overwrite")
    assert_one_error(res, codes=(1, 2))
    assert digest(model) == before


def test_output_is_empty_existing_file(tmp_path, ops):
    """A 0-byte file the user made is not lrmpi's: refused, even with --overwrite; still there."""
    a, b, _, _ = ops
    out = tmp_path / "empty.h5"
    out.write_bytes(b"")
    for extra in ((), ("--overwrite",), ("--resume",)):
        res = run("matmul", a, b, "-o", out, "--planes", "1", *extra)
        assert_one_error(res, codes=(1, 2))
        assert out.exists() and out.stat().st_size == 0
    assert not os.path.exists(str(out) + ".d") or not os.listdir(str(out) + ".d")


def test_output_is_a_directory(tmp_path, ops):
    """-o naming an existing folder: one line, the folder and its contents untouched."""
    a, b, _, _ = ops
    d = tmp_path / "results"
    d.mkdir()
    (d / "keep.txt").write_text("mine")
    before = snapshot(d)
    res = run("matmul", a, b, "-o", d, "--overwrite")
    assert_one_error(res, codes=(1, 2))
    assert snapshot(d) == before


def test_output_dir_missing_parent(tmp_path, ops):
    """-o inside a folder that does not exist: one line before any work, nothing created."""
    a, b, _, _ = ops
    res = run("matmul", a, b, "-o", tmp_path / "no" / "such" / "C.h5")
    assert_one_error(res, codes=(1, 2))
    assert not (tmp_path / "no").exists()


def test_tmp_of_live_pid_beside_output_survives(tmp_path, ops):
    """`OUT.h5.tmp.PID` of a process that is alive (ours) is not lrmpi's stale temporary."""
    a, b, _, _ = ops
    out = tmp_path / "C.h5"
    live = tmp_path / f"C.h5.tmp.{os.getpid()}"
    live.write_text("a live process's file")
    odd = [tmp_path / "C.h5.tmp.12ab", tmp_path / "C.h5.tmp.", tmp_path / "C.h5.tmp.-1"]
    for p in odd:
        p.write_text("x")
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "1"))
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "2", "--overwrite"))
    assert live.read_text() == "a live process's file"
    for p in odd:
        assert p.read_text() == "x"


def test_lookalike_names_in_job_folder_survive_overwrite(tmp_path, ops):
    """Files whose names only resemble lrmpi's (`res001.h5.bak`, `res1.h5`, `RES001.h5`,
    `sums001.h5~`) in the job's own folder survive --overwrite and --keep latest."""
    a, b, _, _ = ops
    out = str(tmp_path / "C.h5")
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "2"))
    job = os.path.join(out + ".d", _job_dir(out)[0])
    names = ["res001.h5.bak", "res1.h5", "RES001.h5", "sums001.h5~", "res0001.h5",
             "rank1-res001.h5", "state001.h5.old"]
    for n in names:
        with open(os.path.join(job, n), "w") as f:
            f.write(n)
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "3", "--overwrite", "--keep", "latest"))
    for n in names:
        with open(os.path.join(job, n)) as f:
            assert f.read() == n


def test_lock_through_symlinked_folder(tmp_path, ops):
    """A second job on the same output spelled through a linked folder is refused while the
    first runs; the first completes."""
    a, b, _, _ = ops
    out = tmp_path / "C.h5"
    alias = tmp_path / "alias"
    alias.symlink_to(tmp_path)
    env = {"LRMPI_TEST_SLOW_RANK": "1", "LRMPI_TEST_SLOW_S": "2", "LRMPI_ROOT_COMPUTES": "no"}
    first = start("matmul", a, b, "-o", out, "--planes", "3", n=2, env=env)
    try:
        assert wait_for(out, 1, first, timeout=60)
        second = run("matmul", a, b, "-o", alias / "C.h5", "--resume", "--planes", "3")
        assert_one_error(second, codes=(1, 2))
        _, err = first.communicate(timeout=120)
        assert first.returncode == 0, err
    finally:
        kill_group(first)
    load(out)
    assert attrs_of(out)["status"] == "complete"


def test_pack_onto_its_own_checkpoint_and_a_resolution(tmp_path, ops):
    """pack OUT.h5 OUT.h5 / pack OUT.h5 OUT.h5.d/<id>/res001.h5 --overwrite: refused, the
    checkpoint still loads with the same C."""
    a, b, _, _ = ops
    out = str(tmp_path / "C.h5")
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "2"))
    C0, _ = load(out)
    res1 = os.path.join(out + ".d", _job_dir(out)[0], "res001.h5")
    for target in (out, res1, out + ".d"):
        r = run("pack", out, target, "--overwrite")
        assert_one_error(r, codes=(1, 2))
        C, _ = load(out)
        assert np.array_equal(C, C0) and attrs_of(out)["status"] == "complete"
    assert_ok(run("inspect", out))


def test_output_is_another_checkpoints_resolution_file(tmp_path, ops):
    """-o naming a resolution file of another checkpoint, with --overwrite: that checkpoint
    still loads, unchanged."""
    a, b, _, _ = ops
    other = str(tmp_path / "other.h5")
    assert_ok(run("matmul", a, b, "-o", other, "--planes", "2"))
    C0, _ = load(other)
    res1 = os.path.join(other + ".d", _job_dir(other)[0], "res001.h5")
    before = snapshot(other + ".d")
    r = run("matmul", a, b, "-o", res1, "--planes", "1", "--overwrite")
    assert_one_error(r, codes=(1, 2))
    after = snapshot(other + ".d")
    assert {k: v for k, v in after.items() if k.endswith(".h5")} == \
        {k: v for k, v in before.items() if k.endswith(".h5")}
    C, _ = load(other)
    assert np.array_equal(C, C0)
    assert_ok(run("inspect", other))


def test_output_below_a_regular_file(tmp_path, ops):
    """-o file.txt/C.h5 (the "folder" is the user's file): one line, the file untouched."""
    a, b, _, _ = ops
    f = tmp_path / "file.txt"
    f.write_text("mine")
    r = run("matmul", a, b, "-o", f / "C.h5")
    assert_one_error(r, codes=(1, 2))
    assert f.read_text() == "mine"


def test_sigkill_during_overwrite_other_inputs_keeps_old_and_planted(tmp_path, ops, rng):
    """SIGKILL of an --overwrite with other inputs right after its first resolution: the old
    result still loads (or the new one), a planted file in the folder survives."""
    a, b, A, B = ops
    out = str(tmp_path / "C.h5")
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "2"))
    planted = os.path.join(out + ".d", "notes.txt")
    with open(planted, "w") as f:
        f.write("mine")
    a2 = save(tmp_path / "A2.npy", rng.standard_normal((40, 24)))
    env = {"LRMPI_TEST_SLOW_RANK": "1", "LRMPI_TEST_SLOW_S": "0.5", "LRMPI_ROOT_COMPUTES": "no"}
    p = start("matmul", a2, b, "-o", out, "--planes", "4", "--overwrite", n=2, env=env)
    try:
        t = time.time()
        while time.time() - t < 60 and p.poll() is None:
            try:
                with h5py.File(out, "r") as f:
                    if f.attrs.get("planes") == 4 and len(f.get("resolutions", {})) >= 1:
                        break
            except OSError:
                pass
            time.sleep(0.02)
    finally:
        kill_group(p)
    C, attrs = load(out)
    assert np.isfinite(C).all()
    with open(planted) as f:
        assert f.read() == "mine"
    assert_ok(run("inspect", out))


def test_dot_d_is_a_user_file_or_lock_is_a_folder(tmp_path, ops):
    """`C.h5.d` that is the user's file, or `.lock` that is a folder: one line, untouched."""
    a, b, _, _ = ops
    f = tmp_path / "C.h5.d"
    f.write_text("mine")
    r = run("matmul", a, b, "-o", tmp_path / "C.h5", "--planes", "1")
    assert_one_error(r, codes=(1, 2))
    assert f.read_text() == "mine"
    lock = tmp_path / "D.h5.d" / ".lock"
    lock.mkdir(parents=True)
    (lock / "x").write_text("y")
    r = run("matmul", a, b, "-o", tmp_path / "D.h5", "--planes", "1")
    assert_one_error(r, codes=(1, 2))
    assert (lock / "x").read_text() == "y"


def test_job_folder_replaced_by_link_to_a_copy(tmp_path, ops):
    """The user moved the job folder away and left a link in its place: --resume refuses
    with one line, --overwrite writes a new job; the link and every file it points to stay."""
    a, b, _, _ = ops
    out = str(tmp_path / "C.h5")
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "2"))
    job = _job_dir(out)[0]
    moved = tmp_path / "elsewhere"
    os.rename(os.path.join(out + ".d", job), moved)
    os.symlink(moved, os.path.join(out + ".d", job))
    before = snapshot(moved)
    assert_one_error(run("matmul", a, b, "-o", out, "--planes", "2", "--resume"), codes=(1, 2))
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "3", "--overwrite"))
    assert os.path.islink(os.path.join(out + ".d", job))
    assert snapshot(moved) == before
    assert attrs_of(out)["planes"] == 3
