"""lrmpi deletes only what it wrote, reads only inside the checkpoint (issue #24 D1-D4,
D16, D23, D24a): files it names itself in the job's own folder, never through a link,
never another job's folder, never an input; a job file whose folder does not hold its
job is refused, and --overwrite then writes beside it."""
import os
import shutil

import h5py
import numpy as np
import pytest
from launching import run
from tamper import reseal
from tamper import snapshot as tree

from lrmpi import LayeredMatmul
from lrmpi.jobs.checkpoint import Checkpoint
from lrmpi.jobs.matmul import load_result


def errors(p):
    return [ln for ln in p.stderr.splitlines() if ln.startswith("lrmpi: error:")]


@pytest.fixture
def ab(tmp_path):
    rng = np.random.default_rng(3)
    A, B = rng.standard_normal((24, 16)), rng.standard_normal((16, 20))
    np.save(tmp_path / "A.npy", A)
    np.save(tmp_path / "B.npy", B)
    np.save(tmp_path / "A2.npy", 2 * A)
    return A, B, tmp_path / "A.npy", tmp_path / "B.npy"


def job(out, a, b, *extra, n=None):
    return run("matmul", a, b, "-o", out, "--planes", 2, *extra, n=n)


def test_a_users_folder_in_the_output_folder_survives_every_run(ab, tmp_path):
    """D1: `mkdir -p new.h5.d/mydir; lrmpi matmul ... -o new.h5` deleted mydir."""
    _, _, a, b = ab
    out = tmp_path / "new.h5"
    mine = tmp_path / "new.h5.d" / "mydir"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("keep me")
    (tmp_path / "new.h5.d" / "0123456789abcdef").mkdir()  # looks like a job folder
    (tmp_path / "new.h5.d" / "0123456789abcdef" / "res001.h5").write_text("mine")
    assert job(out, a, b).returncode == 0
    assert job(out, a, b, "--planes", 3, "--overwrite").returncode == 0
    assert job(out, a, b, "--planes", 3, "--resume").returncode == 0
    assert (mine / "notes.txt").read_text() == "keep me"
    assert (tmp_path / "new.h5.d" / "0123456789abcdef" / "res001.h5").read_text() == "mine"


def test_an_output_folder_that_is_a_link_is_refused_and_nothing_behind_it_touched(ab, tmp_path):
    """D2: the sweep followed sym.h5.d and deleted folders inside its target; also a
    .d linked to /dev/full said "File exists" (D24b)."""
    _, _, a, b = ab
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "0123456789abcdef").mkdir(parents=True)
    (elsewhere / "data").mkdir()
    (elsewhere / "data" / "x.txt").write_text("x")
    before = tree(elsewhere)
    os.symlink(elsewhere, tmp_path / "sym.h5.d")
    os.symlink("/dev/full", tmp_path / "full.h5.d")
    for out, target in ((tmp_path / "sym.h5", elsewhere), (tmp_path / "full.h5", "/dev/full")):
        p = job(out, a, b, n=2)
        assert p.returncode == 2 and len(errors(p)) == 1, p.stderr
        assert f"{out}.d is a symbolic link (to {target})" in errors(p)[0]
        assert not out.exists()
    assert tree(elsewhere) == before


def test_a_lock_file_that_is_a_link_is_never_written_through(ab, tmp_path):
    _, _, a, b = ab
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / "c.h5.d").mkdir()
    os.symlink(victim, tmp_path / "c.h5.d" / ".lock")
    p = job(tmp_path / "c.h5", a, b)
    assert p.returncode == 1 and len(errors(p)) == 1 and "symbolic link" in errors(p)[0]
    assert victim.read_text() == "precious"


def test_a_job_file_copied_over_another_is_refused_and_overwrite_writes_beside(ab, tmp_path):
    """D3: `cp M2.h5 M.h5; --resume` said "already complete" (exit 0) and deleted
    M.h5.d/<M's job id>; afterwards --overwrite refused to run."""
    A, B, a, b = ab
    m, m2 = tmp_path / "M.h5", tmp_path / "M2.h5"
    assert job(m, a, b).returncode == 0
    assert job(m2, a, b, "--planes", 3).returncode == 0
    own = Checkpoint(m).job_id
    before = tree(str(m) + ".d")
    shutil.copy(m2, m)
    p = job(m, a, b, "--planes", 3, "--resume", n=2)
    assert p.returncode == 1 and len(errors(p)) == 1, p.stderr
    e = errors(p)[0]
    assert "res001.h5 is missing" in e and "to start over, run with --overwrite" in e
    assert tree(str(m) + ".d") == before
    p = job(m, a, b, "--planes", 3, "--overwrite")
    assert p.returncode == 0, p.stderr
    assert "not intact" in p.stderr
    for name in before:  # every file of M's real job is still there
        assert os.path.exists(os.path.join(str(m) + ".d", name)), name
    assert own in os.listdir(str(m) + ".d")
    np.testing.assert_array_equal(load_result(m)[0], list(LayeredMatmul(A, B, planes=3))[-1].C)


def test_an_edited_job_id_deletes_nothing_and_reads_nothing_outside(ab, tmp_path):
    """D3 (an edited job_id and --overwrite) and D23 (job_id used as a path unchecked:
    ../../../tmp was followed)."""
    _, _, a, b = ab
    out = tmp_path / "c.h5"
    assert job(out, a, b).returncode == 0
    own = Checkpoint(out).job_id
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "res001.h5").write_text("not lrmpi's")
    for bad in ("../../outside", "fedcba9876543210"):
        with h5py.File(out, "r+") as f:
            f.attrs["job_id"] = bad
        reseal(out)  # past the checksum: the identity checks themselves
        before = tree(tmp_path)
        with pytest.raises(Exception) as exc:
            load_result(out)
        assert "\n" not in str(exc.value)
        for argv in (("inspect", out), ("pack", out, tmp_path / "p.h5"),
                     ("matmul", a, b, "-o", out, "--planes", 2, "--resume")):
            p = run(*argv)
            assert p.returncode == 1 and len(errors(p)) == 1, (argv, p.stderr)
        assert tree(tmp_path) == before
    p = job(out, a, b, "--overwrite")  # the job file is damaged: replaced, nothing deleted
    assert p.returncode == 0, p.stderr
    assert (outside / "res001.h5").read_text() == "not lrmpi's"
    assert os.path.isdir(os.path.join(str(out) + ".d", own))


def test_overwrite_never_deletes_one_of_its_inputs(ab, tmp_path):
    """D24a: --overwrite deleted the old job folder holding one of the new job's inputs
    (C.h5.d/<id>/res002.h5:/C as A)."""
    _, _, a, b = ab
    out = tmp_path / "C.h5"
    np.save(tmp_path / "sq.npy", np.random.default_rng(1).standard_normal((20, 20)))
    assert job(out, a, b).returncode == 0
    old = Checkpoint(out).job_id
    res = os.path.join(str(out) + ".d", old, "res003.h5")
    C = load_result(out)[0]
    p = run("matmul", f"{res}:/C", tmp_path / "sq.npy", "-o", out, "--planes", 2,
            "--overwrite")
    assert p.returncode == 0, p.stderr
    assert Checkpoint(out).job_id != old and os.path.exists(res)
    with h5py.File(res, "r") as f:
        np.testing.assert_array_equal(f["C"][()], C)
    assert "it is one of this job's inputs" in p.stderr


def test_a_virtual_source_or_rank_file_from_elsewhere_is_refused(ab, tmp_path):
    """D4: a --write ranks resolution whose virtual source was edited to an absolute path
    elsewhere: load_result returned that file's data, inspect saw nothing, pack copied it."""
    _, _, a, b = ab
    out, other = tmp_path / "c.h5", tmp_path / "o.h5"
    assert job(out, a, b, "--write", "ranks", n=3).returncode == 0
    assert job(other, tmp_path / "A2.npy", b, "--write", "ranks", n=3).returncode == 0
    ck, ko = Checkpoint(out), Checkpoint(other)
    res = os.path.join(ck.folder, "res002.h5")
    foreign = os.path.join(ko.folder, "rank0001-res002.h5")
    pristine = tmp_path / "pristine.h5"
    shutil.copy(res, pristine)

    def retarget(path):  # C's first tile read from `path` instead
        with h5py.File(res, "r+") as f:
            maps = [(m.file_name, m.dset_name, m.vspace.get_select_bounds())
                    for m in f["C"].virtual_sources()]
            shape = f["C"].shape
            del f["C"]
            layout = h5py.VirtualLayout(shape, np.float64)
            for i, (name, dset, ((r0, c0), (r1, c1))) in enumerate(maps):
                src = path if i == 0 else name
                layout[r0:r1 + 1, c0:c1 + 1] = h5py.VirtualSource(src, dset,
                                                                  shape=(r1 + 1 - r0, c1 + 1 - c0))
            f.create_virtual_dataset("C", layout, fillvalue=np.nan)
        reseal(res)
    for case in ("absolute", "another job's rank file"):
        shutil.copy(pristine, res)
        if case == "absolute":
            retarget(foreign)
        else:  # the other job's file under this job's name
            mine = os.path.join(ck.folder, "rank0001-res002.h5")
            os.replace(mine, mine + ".bak")
            shutil.copy(foreign, mine)
        with pytest.raises(Exception, match="not one of this resolution's rank files|"
                                            "belongs to another job"):
            Checkpoint(out).resolution(2)
        for argv in (("inspect", out), ("pack", out, tmp_path / "p.h5", "--overwrite")):
            p = run(*argv)
            assert p.returncode == 1 and len(errors(p)) == 1, (case, argv, p.stderr)
        if case != "absolute":
            os.replace(mine + ".bak", mine)


def test_the_readme_snippet_reads_a_packed_copy_with_plain_h5py(ab, tmp_path):
    """D16: renamed OUT.h5 + OUT.h5.d break plain h5py (the links hold the old name);
    load_result reads them, and `lrmpi pack` makes a file plain h5py reads."""
    A, B, a, b = ab
    out = tmp_path / "C.h5"
    assert job(out, a, b).returncode == 0
    os.rename(out, tmp_path / "D.h5")
    os.rename(str(out) + ".d", tmp_path / "D.h5.d")
    want = list(LayeredMatmul(A, B, planes=2))[-1].C
    np.testing.assert_array_equal(load_result(tmp_path / "D.h5")[0], want)
    assert run("pack", tmp_path / "D.h5", tmp_path / "one.h5").returncode == 0
    with h5py.File(tmp_path / "one.h5", "r") as f:  # the README's snippet
        last = f["resolutions"][f"{f.attrs['completed']:03d}"]
        C = last["C"][()]
    np.testing.assert_array_equal(C, want)
