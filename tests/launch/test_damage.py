"""Issue #24's second class test: a byte flipped in any file lrmpi writes is an error,
never a number. For every file of four checkpoints (the root writing; the ranks
writing; an inference job; a CRT resolution stopped part way), a byte is flipped in a
dataset's data, in the file's checksum attribute, and at a random offset; then reading
the last result (load_result), inspect, pack and --resume each either fail with one
line -- always, when they read what was damaged -- or give what they gave before (a
flip in bytes nothing reads changes no number)."""
import contextlib
import io
import os
import random
import shutil
import signal

import h5py
import numpy as np
import pytest
from launching import run
from tamper import data_offsets, flip

from lrmpi import config
from lrmpi.cli import main
from lrmpi.jobs.checkpoint import Checkpoint
from lrmpi.jobs.checkpoint import schema as S


def cli(*argv):
    """(exit code, stdout, stderr) of `lrmpi ARGV` in this process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
            config.configure(probe_timeout_s=10):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """{name: (folder, job file name, the --resume command)} of four checkpoints."""
    from lrmpi.jobs.matmul import run_matmul
    from lrmpi.nn import graph as G
    from lrmpi.parallel.root import Root
    d = tmp_path_factory.mktemp("damage")
    rng = np.random.default_rng(2)
    np.save(d / "A.npy", rng.standard_normal((40, 24)))
    np.save(d / "B.npy", rng.standard_normal((24, 30)))
    mm = ("matmul", d / "A.npy", d / "B.npy", "--planes", 2)
    out = {}
    for name, extra, n in (("root", (), None), ("ranks", ("--write", "ranks"), 2)):
        (d / name).mkdir()
        assert run(*mm, "-o", d / name / "c.h5", *extra, n=n).returncode == 0
        out[name] = (d / name, "c.h5", (*mm, "--resume"))
    (d / "infer").mkdir()
    g = G.sequential([("linear", {"W": rng.standard_normal((8, 6)), "b": np.zeros(8)}),
                      ("relu", {}), ("linear", {"W": rng.standard_normal((3, 8)),
                                                "b": np.zeros(3)})], (6,))
    G.save(g, str(d / "m.npz"))
    np.save(d / "x.npy", rng.standard_normal((10, 6)))
    inf = ("infer", d / "m.npz", d / "x.npy", "--planes", 2, "--rule", "none")
    assert cli(*inf, "-o", d / "infer" / "c.h5")[0] == 0
    out["infer"] = (d / "infer", "c.h5", (*inf, "--resume"))
    # a CRT resolution stopped after two of its tiles: its partial file is resume data
    (d / "partial").mkdir()
    A, B = rng.standard_normal((600, 20)), rng.standard_normal((20, 12))
    np.save(d / "A6.npy", A)
    np.save(d / "B6.npy", B)
    real, applied = Root._apply_crt, []

    def stop_after_two(self, r, tile, sums, buf):
        applied.append(tile.index)
        real(self, r, tile, sums, buf)
        if len(applied) == 2:
            os.kill(os.getpid(), signal.SIGUSR1)
    Root._apply_crt = stop_after_two
    try:  # results are applied on the collector's thread: slow tasks, so that the stop
        # lands before the last tile has arrived
        with config.configure(test_slow_rank=0, test_slow_s=0.1):
            part = run_matmul(A, B, str(d / "partial" / "c.h5"), planes=2, final="crt",
                              moduli=5)
    finally:
        Root._apply_crt = real
    assert part.status == "deadline"
    out["partial"] = (d / "partial", "c.h5", ("matmul", d / "A6.npy", d / "B6.npy", "--planes",
                                              2, "--final", "crt", "--moduli", 5, "--resume"))
    return out


def files_of(folder, name):
    """(relative path, path) of every file lrmpi wrote in a checkpoint."""
    ck = Checkpoint(folder / name)
    yield name, folder / name
    for f in sorted(os.listdir(ck.folder)):
        yield os.path.join(name + ".d", ck.job_id, f), os.path.join(ck.folder, f)


def reads(ck, rel, dataset, op):
    """True if `op` reads `dataset` of the file `rel` (None: the file itself)."""
    base = os.path.basename(rel)
    listed = {f"res{S.res_name(i)}.h5" for i in ck.resolution_indices()}
    last = f"res{S.res_name(ck.completed)}.h5"
    if op in ("inspect", "resume") or rel == "c.h5":
        return True
    wanted = {last} if op == "read" else listed
    if base in wanted:
        return True
    if base.startswith("rank"):  # the rank files hold C (read) and level sums (not read)
        res = f"res{base.split('-res')[1]}"
        return res in wanted and (dataset is None or dataset.startswith("C"))
    return False


OPS = ("read", "inspect", "pack", "resume")


def operations(folder, name, resume, work, ops=OPS):
    """What each operation gives on the checkpoint at folder/name: (ok, what)."""
    path = folder / name
    got = {}
    if "read" in ops:
        try:
            ck = Checkpoint(path, safe=True)
            got["read"] = (True, ck.resolution(ck.completed)[1])
        except Exception as exc:  # noqa: BLE001 -- it must be an lrmpi error: checked below
            got["read"] = (False, exc)
    if "inspect" in ops:
        code, out, err = cli("inspect", path)
        got["inspect"] = (code == 0, (code, out.replace(str(path), "P"), err))
    if "pack" in ops:
        dst = work / "packed.h5"
        if dst.exists():
            dst.unlink()
        code, out, err = cli("pack", path, dst)
        got["pack"] = (code == 0, (code, out, err))
    if "resume" in ops:
        code, out, err = cli(*resume, "-o", path)
        got["resume"] = (code == 0, (code, out, err))
    return got


def one_line(op, what):
    if op == "read":
        from lrmpi.errors import CheckpointError
        assert isinstance(what, CheckpointError) and "\n" not in str(what), repr(what)
        return
    code, _, err = what
    errs = [ln for ln in err.splitlines() if ln.startswith("lrmpi: error:")]
    assert code == 1 and len(errs) == 1 and "Traceback" not in err, err


def same(op, a, b):
    if op == "read":
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
    elif op == "inspect":
        assert a[1] == b[1]


@pytest.mark.parametrize("kind", ["root", "ranks", "infer", "partial"])
def test_a_flipped_byte_is_an_error_never_a_number(kind, checkpoints, tmp_path):
    folder, name, resume = checkpoints[kind]
    rnd = random.Random(kind)

    def copy():
        work = tmp_path / f"w{rnd.randrange(10**9)}"
        shutil.copytree(folder, work, symlinks=True)
        return work
    base = operations(copy(), name, resume, tmp_path)
    assert all(ok for ok, _ in base.values()), {k: w for k, (ok, w) in base.items() if not ok}
    ck = Checkpoint(folder / name)
    files = list(files_of(folder, name))
    chance = rnd.choice(files)[0]  # one random offset in one random file
    cases = 0
    for rel, path in files:
        with h5py.File(path, "r") as f:
            stored = S.py(f.attrs[S.CHECKSUM]).encode()
        with open(path, "rb") as f:
            raw = f.read()
        # a hex digit of the stored checksum, another one (the file's attributes and
        # its datasets' checksums are what it covers); a byte of a dataset's data
        places = [("checksum", None, raw.find(stored) + 3, 0x01)]
        places += [("data", ds, off, 0xFF) for ds, off in data_offsets(path)[:1]]
        if rel == chance:
            places += [("random", None, rnd.randrange(len(raw)), 0xFF)]
        for what, ds, off, mask in places:
            work = copy()
            flip(work / rel, off, mask)
            # the operations that read what was damaged (all of them for a random byte:
            # those that do not read it must give what they gave before)
            ops = OPS if what == "random" else [
                op for op in OPS if reads(ck, rel, ds if what == "data" else None, op)]
            got = operations(work, name, resume, tmp_path, ops)
            cases += 1
            for op, (ok, result) in got.items():
                must_fail = what != "random" and reads(ck, rel, ds if what == "data" else None,
                                                       op)
                where = (kind, rel, what, ds, op)
                if must_fail or not ok:
                    assert not ok, where
                    one_line(op, result)
                else:
                    same(op, result, base[op][1])
    assert cases >= 6
