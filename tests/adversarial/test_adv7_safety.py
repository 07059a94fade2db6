"""Seventh adversarial pass, area 1: safety promises — `demo -o` and `pack` onto files lrmpi
did not write, `-o` naming a model's external data file or the old result's own job file
as an operand, the cache folder holding user files or being the data's folder, user files
in the job folder across `--keep latest`, bench's `--dir` holding user files, `jobscript`
writing nothing. The README: `-o` refuses, before any work, one of the job's inputs or an
existing file lrmpi did not write; lrmpi deletes only what it wrote (files it names itself
in the job's own folder)."""
import os

import numpy as np
import pytest

from adversary import (PY, assert_ok, assert_one_error, digest, job_folder, mlp_onnx,
                       run, save, snapshot, stop_after)
from adversary6 import entries, infer
from adversary7 import pinfer


def test_demo_output_onto_a_user_file_refused_unchanged(tmp_path):
    """`lrmpi demo --n 32 -o notes.txt` where notes.txt is the user's: one line, non-zero,
    the file unchanged, no notes.txt.d created."""
    p = tmp_path / "notes.txt"
    p.write_text("mine\n")
    r = run("demo", "--n", "32", "--planes", "2", "-o", p)
    assert_one_error(r, codes=(1, 2))
    assert p.read_text() == "mine\n"
    assert not os.path.exists(str(p) + ".d")


def test_demo_output_onto_an_infer_result_needs_overwrite(tmp_path, tiny):
    """`lrmpi demo -o S.h5` over an inference result without `--overwrite`/`--resume`:
    refused with one line; the inference result unchanged byte for byte."""
    m1, _, data, _ = tiny
    out = tmp_path / "S.h5"
    assert_ok(infer(m1, data, out))
    h = digest(out)
    r = run("demo", "--n", "32", "--planes", "2", "-o", out)
    assert_one_error(r, codes=(1, 2))
    assert digest(out) == h


def external_data_model(tmp_path, rng):
    import onnx
    p = mlp_onnx(tmp_path / "ext.onnx", rng, sizes=(64, 32, 4))
    m = onnx.load(p)
    onnx.save_model(m, p, save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    return p, str(tmp_path / "weights.bin")


def test_output_naming_the_models_external_data_file_refused(tmp_path, rng):
    """`-o weights.bin` where weights.bin is the model's external data (an input of the
    job): refused before any work with one line; the weights unchanged (even with
    `--overwrite`)."""
    model, wbin = external_data_model(tmp_path, rng)
    data = save(tmp_path / "d.npy", rng.standard_normal((3, 64)).astype(np.float32))
    h = digest(wbin)
    for extra in ((), ("--overwrite",)):
        r = infer(model, data, wbin, *extra)
        assert_one_error(r, codes=(1, 2))
        assert digest(wbin) == h
        assert not os.path.exists(wbin + ".d")


def test_operand_read_through_the_old_job_file_with_overwrite(tmp_path, done):
    """A = `C.h5:/resolutions/003/C` (the old result read through its own job file) and
    `-o C.h5 --overwrite`: refused before any work (the output is an input), C.h5 and its
    files unchanged."""
    out, a, b, A, B = done
    before = snapshot(os.path.dirname(out))
    r = run("matmul", f"{out}:/resolutions/003/C", b, "-o", out, "--planes", "2",
            "--overwrite")
    assert_one_error(r, codes=(1, 2))
    after = snapshot(os.path.dirname(out))
    after.pop(".lock", None)
    assert {k: v for k, v in after.items() if not k.endswith(".lock")} == \
        {k: v for k, v in before.items() if not k.endswith(".lock")}


def test_cache_folder_with_user_files_keeps_them(tmp_path, tiny):
    """LRMPI_CACHE_DIR a folder of the user's holding `graph-notes.txt`, `norms3-x.npz`
    (a user's npz) and a subfolder: after two runs all are byte for byte as they were."""
    m1, _, data, ref1 = tiny
    cache = tmp_path / "c"
    cache.mkdir()
    (cache / "graph-notes.txt").write_text("mine")
    np.savez(cache / "norms3-x.npz", a=np.arange(4))
    (cache / "sub").mkdir()
    (cache / "sub" / "f").write_text("x")
    before = snapshot(cache)
    for name in ("a.h5", "b.h5"):
        assert_ok(infer(m1, data, tmp_path / name, cache=cache))
    after = snapshot(cache)
    for k, v in before.items():
        assert after.get(k) == v, k


def test_cache_folder_is_the_datas_folder(tmp_path, rng):
    """LRMPI_CACHE_DIR = the folder holding the model and the data: the job completes and
    the model and data files are byte for byte unchanged."""
    model = mlp_onnx(tmp_path / "m.onnx", rng)
    data = save(tmp_path / "d.npy", rng.standard_normal((4, 16)).astype(np.float32))
    h = (digest(model), digest(data))
    assert_ok(infer(model, data, tmp_path / "x.h5",
                    cache=tmp_path))
    assert_ok(infer(model, data, tmp_path / "y.h5", cache=tmp_path))
    assert (digest(model), digest(data)) == h


def test_user_files_in_job_folder_survive_keep_latest_pruning(tmp_path, ops):
    """`--keep latest` stopped after resolution 1; the user drops `res001.h5.bak`, `notes`
    and a folder into the job folder; `--resume` prunes its own older files and leaves
    them (and so the job folder)."""
    a, b, A, B = ops
    out = str(tmp_path / "C.h5")
    rc, err = stop_after(out, 1, "matmul", a, b, "-o", out, "--planes", "3",
                         "--keep", "latest", slow="0.3")
    assert rc == 3, err
    jf = job_folder(out)
    with open(os.path.join(jf, "res001.h5.bak"), "w") as f:
        f.write("bak")
    with open(os.path.join(jf, "notes"), "w") as f:
        f.write("n")
    os.mkdir(os.path.join(jf, "mine"))
    assert_ok(run("matmul", a, b, "-o", out, "--planes", "3", "--resume"))
    for name in ("res001.h5.bak", "notes", "mine"):
        assert os.path.exists(os.path.join(jf, name)), name


def test_bench_dir_with_user_files_keeps_them(tmp_path):
    """`lrmpi bench matmul --dir D` where D holds the user's `A.npy`, `B.npy`, `C.h5` and a
    subfolder: after a tiny run every one is byte for byte as it was."""
    d = tmp_path / "D"
    d.mkdir()
    save(d / "A.npy", np.ones((3, 3)))
    save(d / "B.npy", np.ones((3, 3)))
    (d / "C.h5").write_text("not hdf5")
    (d / "sub").mkdir()
    before = snapshot(d)
    r = run("bench", "matmul", "--shapes", "48", "--ranks", "1", "--repeats", "1",
            "--planes", "2", "--dir", d, "--json", tmp_path / "b.json", timeout=120)
    assert r.returncode == 0, r.stderr
    after = snapshot(d)
    for k, v in before.items():
        assert after.get(k) == v, k


def test_jobscript_writes_nothing(tmp_path, ops):
    """`lrmpi jobscript matmul ... -o C.h5` in a folder: prints a script, creates no file
    (neither C.h5 nor C.h5.d nor a log)."""
    a, b, A, B = ops
    before = set(os.listdir(tmp_path))
    r = run("jobscript", "matmul", a, b, "-o", "C.h5", "--python", PY, cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.startswith("#!/bin/bash"), r.stderr
    assert set(os.listdir(tmp_path)) == before


def test_output_naming_a_cache_entry_refused_entry_kept(tmp_path, tiny):
    """`-o` naming a graph entry of the cache (an .npz lrmpi wrote, not a checkpoint), with
    and without `--overwrite`: one line, the entry byte for byte as it was and still used
    (the next run equals the reference)."""
    m1, _, data, ref1 = tiny
    cache = tmp_path / "c"
    assert_ok(infer(m1, data, tmp_path / "a.h5", cache=cache))
    entry = entries(cache, "graph")[0]
    h = digest(entry)
    for extra in ((), ("--overwrite",)):
        assert_one_error(infer(m1, data, entry, *extra, cache=cache), codes=(1, 2))
        assert digest(entry) == h
    from adversary6 import assert_same
    assert_ok(infer(m1, data, tmp_path / "b.h5", cache=cache))
    assert_same(tmp_path / "b.h5", ref1)


@pytest.mark.parametrize("how", ["hardlink", "symlink"])
def test_packed_cache_entry_linked_to_a_user_file_leaves_it(tmp_path, packed2, how):
    """The packed weights' .npy (a model >= 16 MB packed) replaced by a hard or symbolic
    link to a user's file of the same size: the run equals the no-cache reference, and
    the user's file is byte for byte as it was."""
    import shutil
    from adversary6 import assert_same
    m1, _, data, c1, _, ref1 = packed2
    cache = tmp_path / "c"
    shutil.copytree(c1, cache)
    npy = [p for p in entries(cache, "packed") if p.endswith(".npy")][0]
    user = tmp_path / "mine.bin"
    user.write_bytes(os.urandom(os.path.getsize(npy)))
    h = digest(user)
    os.remove(npy)
    (os.link if how == "hardlink" else os.symlink)(user, npy)
    out = tmp_path / "b.h5"
    assert_ok(pinfer(m1, data, out, cache))
    assert_same(out, ref1)
    assert digest(user) == h
