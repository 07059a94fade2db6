"""Checksums (issue #24 D17): damage is an error, never a number; files written before
checksums still read, are marked unchecked, and a job resumed from them writes its new
files with checksums (checksums_from)."""
import contextlib
import io
import os
import signal
import time

import h5py
import numpy as np
import pytest

from lrmpi import config
from lrmpi.cli import main
from lrmpi.errors import CheckpointError
from lrmpi.jobs.checkpoint import Checkpoint, checksum
from lrmpi.jobs.checkpoint import schema as S
from lrmpi.jobs.matmul import load_result, run_matmul


def strip_checksums(out):
    """The checkpoint as an lrmpi before checksums wrote it."""
    ck = Checkpoint(out)
    for path in [out] + [os.path.join(ck.folder, f) for f in os.listdir(ck.folder)
                         if f.endswith(".h5")]:
        with h5py.File(path, "r+") as f:
            for key in (S.CHECKSUM, S.CHECKSUMS_FROM):
                if key in f.attrs:
                    del f.attrs[key]

            def one(name, obj):
                if S.CHECKSUM in obj.attrs:
                    del obj.attrs[S.CHECKSUM]
            f.visititems(one)


def inspect(path):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = main(["inspect", str(path)])
    return code, out.getvalue()


def test_every_file_carries_checksums_and_a_changed_value_is_an_error(tmp_path):
    rng = np.random.default_rng(1)
    A, B = rng.standard_normal((30, 20)), rng.standard_normal((20, 25))
    out = str(tmp_path / "c.h5")
    run_matmul(A, B, out, planes=2)
    ck = Checkpoint(out)
    assert ck.checked and ck.checksums_from == 1
    assert ck.verify() == {1: "verified", 2: "verified", 3: "verified"}
    path = os.path.join(ck.folder, "res003.h5")
    with h5py.File(path, "r+") as f:  # one entry changed, the checksum left as it was
        C = f["C"][()]
        C[4, 5] += 1e-12
        f["C"][...] = C
    with pytest.raises(CheckpointError, match="res003.h5: dataset C is damaged"):
        load_result(out)
    with h5py.File(path, "r+") as f:  # an attribute changed
        f["C"][...] = C - np.where(np.arange(C.size).reshape(C.shape) == 4 * 25 + 5, 1e-12, 0)
        f.attrs["bound_abs"] = 0.0
    with pytest.raises(CheckpointError, match="res003.h5 is damaged: its checksum does not"):
        load_result(out)


def test_files_written_before_checksums_read_and_are_marked_unchecked(tmp_path):
    rng = np.random.default_rng(2)
    A, B = rng.standard_normal((40, 20)), rng.standard_normal((20, 25))

    def stop_at_2(meta, C):
        if meta["index"] == 2:
            os.kill(os.getpid(), signal.SIGUSR1)
            time.sleep(0.3)  # the handler runs on the main thread: before the next round
    for attempt in range(3):
        # on a loaded machine the stop can be seen after the last round was already
        # computed: the job then rightly says complete; stop another run (a new file:
        # an --overwrite stopped early would keep the complete one)
        out = str(tmp_path / f"old{attempt}.h5")
        with config.configure(test_slow_rank=0, test_slow_s=0.2):  # tasks after the stop
            part = run_matmul(A, B, out, planes=3, on_resolution=stop_at_2)  # are slow
        if part.status != "complete":
            break
    done = part.completed  # 2, or 3 if it was finished when the stop was seen
    assert part.status == "deadline" and 2 <= done < 5
    strip_checksums(out)
    ck = Checkpoint(out)
    assert not ck.checked and ck.verify() == {i: "unchecked" for i in range(1, done + 1)}
    code, shown = inspect(out)
    assert code == 0 and "unchecked" in shown and "before lrmpi kept checksums" in shown
    # resumed: the new resolutions carry checksums, the old ones stay unchecked
    assert run_matmul(A, B, out, planes=3, resume=True).status == "complete"
    ck = Checkpoint(out)
    assert ck.checked and ck.checksums_from == done + 1
    assert ck.verify() == {i: "unchecked" if i <= done else "verified" for i in range(1, 6)}
    full = str(tmp_path / "full.h5")
    run_matmul(A, B, full, planes=3)
    np.testing.assert_array_equal(load_result(out)[0], load_result(full)[0])
    # from checksums_from on, a file without its checksum is damaged, not "old"
    with h5py.File(os.path.join(ck.folder, "res005.h5"), "r+") as f:
        del f.attrs[S.CHECKSUM]
    with pytest.raises(CheckpointError, match="res005.h5 is damaged: its checksum is missing"):
        Checkpoint(out).resolution(5)
    assert checksum.array_digest(np.zeros(3)) != checksum.array_digest(np.zeros(3, np.float32))


def to_sha256(out):
    """The checkpoint as an lrmpi whose digests were SHA-256 wrote it: every dataset's
    checksum and the input fingerprint in that form, the root checksums sealed again."""
    from lrmpi.jobs.job import fingerprint
    ck = Checkpoint(out)
    for path in [out] + [os.path.join(ck.folder, f) for f in os.listdir(ck.folder)
                         if f.endswith(".h5")]:
        with h5py.File(path, "r+") as f:
            def one(name, obj):
                if isinstance(obj, h5py.Dataset) and not obj.is_virtual and \
                        S.CHECKSUM in obj.attrs:
                    obj.attrs[S.CHECKSUM] = checksum.array_digest(obj[()], obj.dtype,
                                                                  legacy=True)
            f.visititems(one)
            if f.filename == out:
                f.attrs[S.FINGERPRINT] = fingerprint(*to_sha256.inputs, legacy=True)
            checksum.seal(f)


def test_checkpoints_with_sha256_digests_still_read_resume_and_find_damage(tmp_path):
    """Digests name their algorithm (xxh3:...); SHA-256's bare hex, which lrmpi wrote
    before, is still verified, and the fingerprint in that form still matches the
    same inputs on --resume (and not other ones)."""
    rng = np.random.default_rng(3)
    A, B = rng.standard_normal((30, 20)), rng.standard_normal((20, 25))
    out = str(tmp_path / "c.h5")
    full = str(tmp_path / "full.h5")
    run_matmul(A, B, full, planes=3)
    with h5py.File(full, "r") as f:
        assert S.py(f.attrs[S.FINGERPRINT]).startswith("xxh3:")
    # a job stopped after resolution 2 (its tasks slowed: resolution 3 must not finish
    # first), its digests made SHA-256's
    from lrmpi import config
    with config.configure(test_slow_rank=0, test_slow_s=0.3):
        run_matmul(A, B, out, planes=3, on_resolution=_stop_at(2))
    to_sha256.inputs = (A, B)
    to_sha256(out)
    ck = Checkpoint(out)
    assert ck.completed == 2 and ck.status == "deadline"
    assert all(v == "verified" for v in ck.verify().values())
    with h5py.File(os.path.join(ck.folder, "res002.h5"), "r") as f:
        assert not S.py(f["C"].attrs[S.CHECKSUM]).startswith("xxh3:")
    with pytest.raises(CheckpointError, match="inputs differ"):
        run_matmul(A, B + 1, out, planes=3, resume=True)
    done = run_matmul(A, B, out, planes=3, resume=True)
    assert done.status == "complete"
    np.testing.assert_array_equal(load_result(out)[0], load_result(full)[0])
    with h5py.File(os.path.join(ck.folder, "res001.h5"), "r+") as f:  # damage
        C = f["C"][()]
        C[0, 0] += 1.0
        f["C"][...] = C
    with pytest.raises(CheckpointError, match="res001.h5: dataset C is damaged"):
        load_result(out, 1)


def _stop_at(index):
    def stop(meta, C):
        if meta["index"] == index:
            os.kill(os.getpid(), signal.SIGUSR1)
    return stop


def test_a_resolution_file_given_as_the_job_file_is_named_for_what_it_is(tmp_path):
    """inspect / resume of a job's resolution file (not its job file): one line saying
    it is not a job file, not "format_version None is not supported"."""
    rng = np.random.default_rng(0)
    out = str(tmp_path / "C.h5")
    run_matmul(rng.standard_normal((6, 5)), rng.standard_normal((5, 4)), out, planes=2)
    res = [os.path.join(Checkpoint(out).folder, f) for f in os.listdir(Checkpoint(out).folder)
           if f.startswith("res")][0]
    with pytest.raises(CheckpointError, match="is not an lrmpi job file .* give that one"):
        Checkpoint(res)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        assert main(["inspect", res]) == 1
    assert "not an lrmpi job file" in err.getvalue() and "None" not in err.getvalue()
