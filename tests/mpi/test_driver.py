"""The distributed driver under mpirun: identical to one process at any size.

Run as `mpiexec -n N python -m pytest --with-mpi tests/mpi` with
LRMPI_EXPECT_SIZE=N (a launcher that does not match mpi4py's MPI silently
gives N processes of size 1: the first test catches that).
"""
import os
import signal

import numpy as np
import pytest

from lrmpi import LayeredMatmul, WorkerError, config, run_matmul
from lrmpi.jobs.checkpoint import Checkpoint
from lrmpi.parallel.comm import get_comm

pytestmark = pytest.mark.mpi(min_size=1)


def comm():
    return get_comm()


def test_world_size_is_the_one_launched():
    expected = os.environ.get("LRMPI_EXPECT_SIZE")
    if expected is None:
        pytest.skip("set LRMPI_EXPECT_SIZE to the -n given to mpiexec")
    assert comm().Get_size() == int(expected)


def shared_path(tmp_path):
    """rank 0's tmp_path on every rank (only the root writes; all may read)."""
    return comm().bcast(str(tmp_path), root=0)


SHAPES = [(1, 1, 1), (3, 70, 2), (130, 64, 90), (200, 33, 7), (5, 40, 300)]


@pytest.mark.parametrize("m, k, n", SHAPES)
@pytest.mark.parametrize("order", ["antidiagonal", "pairwise", "lshape"])
def test_identical_to_the_single_process_api(m, k, n, order, tmp_path):
    rank = comm().Get_rank()
    rng = np.random.default_rng(m * 1000 + n)
    A = rng.standard_normal((m, k)) * np.exp(rng.uniform(-5, 5, (m, 1)))
    B = rng.standard_normal((k, n))
    got = []
    out = os.path.join(shared_path(tmp_path), "c.h5")
    outcome = run_matmul(A if rank == 0 else None, B if rank == 0 else None, out, planes=3,
                         order=order, on_resolution=lambda meta, C: got.append((meta, C.copy())))
    if rank != 0:
        assert outcome is None
        return
    ref = list(LayeredMatmul(A, B, planes=3, order=order))
    assert outcome.status == "complete" and outcome.completed == len(ref)
    assert len(got) == len(ref)
    ck = Checkpoint(out)
    assert ck.attrs["status"] == "complete" and ck.attrs["completed"] == len(ref)
    for (meta, C), r in zip(got, ref):
        np.testing.assert_array_equal(C, r.C)
        assert meta["bound_abs"] == r.bound_abs and meta["bound_rel"] == r.bound_rel
        assert meta["pairs"] == r.pairs
        attrs, data = ck.resolution(r.index)
        np.testing.assert_array_equal(data["C"], r.C)
        assert attrs["bound_abs"] == r.bound_abs


@pytest.mark.parametrize("m, k, n", [(1, 1, 1), (300, 64, 90), (5, 40, 300)])
def test_crt_final_resolution_identical_to_the_single_process_api(m, k, n, tmp_path):
    rank = comm().Get_rank()
    rng = np.random.default_rng(m + k + n)
    A = (rng.random((m, k)) - 0.5) * np.exp(2 * rng.standard_normal((m, k)))
    B = (rng.random((k, n)) - 0.5) * np.exp(2 * rng.standard_normal((k, n)))
    got = []
    out = os.path.join(shared_path(tmp_path), "c.h5")
    outcome = run_matmul(A if rank == 0 else None, B if rank == 0 else None, out, planes=2,
                         final="crt", on_resolution=lambda meta, C: got.append((meta, C.copy())))
    if rank != 0:
        assert outcome is None
        return
    ref = list(LayeredMatmul(A, B, planes=2, final="crt"))
    assert outcome.status == "complete" and outcome.completed == len(ref) == 4
    for (meta, C), r in zip(got, ref):
        np.testing.assert_array_equal(C, r.C)
        assert meta["method"] == r.method and meta["products"] == r.products
        assert meta["bound_abs"] == r.bound_abs and meta["bound_rel"] == r.bound_rel
    attrs, data = Checkpoint(out).resolution(4)
    np.testing.assert_array_equal(data["C"], ref[-1].C)
    assert attrs["method"] == ref[-1].method == "crt" and attrs["products"] == ref[-1].products
    if comm().Get_size() > 1 and m >= 300:  # several tiles each: the workers computed
        # some, so their rows of A left the root and their tiles of C came back
        assert attrs["root_bytes_sent"] >= 15 * k and attrs["root_bytes_recv"] >= 8 * n


# issue #24 D7, D8: a CRT resolution worse than the layers replaced them (bound 908 after
# 0.12), and the fallback did not apply to it (C[0,1] = 0 instead of 2e100)
@pytest.mark.parametrize("write", ["root", "ranks"])
@pytest.mark.parametrize("case", ["one modulus", "beyond the residues' reach"])
def test_the_crt_rules_hold_under_mpi_and_across_a_resume(case, write, tmp_path):
    rank = comm().Get_rank()
    if case == "one modulus":
        rng = np.random.default_rng(201)
        A = (rng.random((150, 90)) - 0.5) * np.exp(rng.standard_normal((150, 90)))
        B = (rng.random((90, 70)) - 0.5) * np.exp(rng.standard_normal((90, 70)))
        opts = dict(planes=2, final="crt", moduli=1, write=write)
    else:
        A = np.ones((130, 40))
        B = np.ones((40, 60))
        A[0, 0], B[1, 1] = 1e100, 1e100
        opts = dict(planes=2, final="crt", moduli=16, write=write)
    ref = list(LayeredMatmul(A, B, **{k: v for k, v in opts.items() if k != "write"}))
    base = shared_path(tmp_path)
    got = []
    outcome = run_matmul(A if rank == 0 else None, B if rank == 0 else None,
                         os.path.join(base, "c.h5"), **opts,
                         on_resolution=lambda meta, C: got.append(meta) if rank == 0 else None)
    # stopped right after the last layered resolution, resumed: the CRT rule then needs
    # the layers' C, decoded again from the exact state
    out2 = os.path.join(base, "stopped.h5")

    def stop_after_layers(meta, C):
        if meta["index"] == len(ref) - 1:
            os.kill(os.getpid(), signal.SIGUSR1)
    # results are applied on the root's collector thread: every rank's tasks slow, and
    # the CRT's handed out only once the layers' are in, so that the stop lands before
    # the CRT resolution's last tile has arrived
    with config.configure(test_slow_rank=rank, test_slow_s=0.2, lookahead=1):
        part = run_matmul(A if rank == 0 else None, B if rank == 0 else None, out2, **opts,
                          on_resolution=stop_after_layers if rank == 0 else None)
    done = run_matmul(A if rank == 0 else None, B if rank == 0 else None, out2, resume=True,
                      **opts)
    if rank != 0:
        return
    assert outcome.status == "complete" and done.status == "complete"
    # the CRT resolution runs ahead (lookahead): on a loaded machine it may finish before
    # the root sees the stop; then the resume has nothing to do, and the files must agree
    assert (part.status, part.completed) in (("deadline", len(ref) - 1),
                                             ("complete", len(ref))), (part.status,
                                                                       part.completed)
    last = ref[-1]
    if case == "one modulus":
        assert last.method == "planes" and last.bound_abs == ref[-2].bound_abs
    else:
        assert last.method == "crt" and len(last.fallback[0]) >= 1
        assert last.C[0, 1] == 2e100 and last.C[1, 1] == 1e100  # 1e100 + 39: rounded
    for path in ("c.h5", "stopped.h5"):
        attrs, data = Checkpoint(os.path.join(base, path)).resolution(len(ref))
        np.testing.assert_array_equal(data["C"], last.C)
        assert attrs["method"] == last.method and attrs["bound_abs"] == last.bound_abs
        assert attrs["bound_rel"] == last.bound_rel
    assert [m["bound_abs"] for m in got] == [r.bound_abs for r in ref]


@pytest.mark.parametrize("m, k, n, final", [(300, 64, 90, None), (130, 40, 300, "crt"),
                                           (1, 1, 1, None)])
def test_results_written_by_the_ranks_identical_to_the_root_writing(m, k, n, final, tmp_path):
    """--write ranks: every resolution's C (a virtual dataset over the workers' files)
    bit-identical to the single-process API; the root receives no C; a resume from
    such a checkpoint (its level sums in the rank files) completes identically; a
    missing rank file is an error, never fill values."""
    from lrmpi.errors import CheckpointError
    from lrmpi.jobs.checkpoint import schema
    size, rank = comm().Get_size(), comm().Get_rank()
    rng = np.random.default_rng(m + n)
    A, B = rng.standard_normal((m, k)), rng.standard_normal((k, n))
    base = shared_path(tmp_path)
    opts = dict(planes=3, final=final, write="ranks")
    out = os.path.join(base, "c.h5")
    outcome = run_matmul(A if rank == 0 else None, B if rank == 0 else None, out, **opts)
    ref = list(LayeredMatmul(A, B, planes=3, final=final))
    if rank == 0:
        assert outcome.status == "complete" and outcome.completed == len(ref)
        ck = Checkpoint(out)
        ranks_wrote = bool(schema.rank_files_of(out, ck.job_id, 1))
        assert ranks_wrote == (size > 1)  # one rank: the root writes, as always
        for r in ref:
            attrs, data = ck.resolution(r.index)
            np.testing.assert_array_equal(data["C"], r.C)
            assert attrs["bound_abs"] == r.bound_abs
            if ranks_wrote:
                assert attrs["root_bytes_recv"] < 4096 * 16  # headers only, no C
        if ranks_wrote:  # the resume data, gathered from the rank files, is exact:
            # resolution 1's one level sum, decoded alone, is C_1 again
            from lrmpi.numerics import planes as planes_mod
            from lrmpi.numerics.accumulate import ExactAccumulator
            (level, S1), = ck.sums(1, (m, n))
            ea = planes_mod.encode(A, 7, 3)
            eb = planes_mod.encode_columns(B, 7, 3)
            C1 = ExactAccumulator(m, n, 7, 3, k).decode_sum(np.asarray(S1, np.int64), level,
                                                           ea.exps, eb.exps)
            np.testing.assert_array_equal(C1, ref[0].C)
    # stopped after resolution 1, resumed (by the root writing): the same results
    out2 = os.path.join(base, "stopped.h5")

    def stop_after_first(meta, C):
        if meta["index"] == 1:
            os.kill(os.getpid(), signal.SIGUSR1)
    with config.configure(test_slow_rank=1, test_slow_s=0.05):  # the stop lands mid-job
        part = run_matmul(A if rank == 0 else None, B if rank == 0 else None, out2,
                          on_resolution=stop_after_first if rank == 0 else None, **opts)
    done = run_matmul(A if rank == 0 else None, B if rank == 0 else None, out2, resume=True,
                      **opts)
    if rank != 0:
        return
    assert part.status == "deadline" and 1 <= part.completed < len(ref)
    assert done.status == "complete"
    ck2 = Checkpoint(out2)
    for r in ref:
        np.testing.assert_array_equal(ck2.resolution(r.index)[1]["C"], r.C)
    if ranks_wrote:
        victim = schema.rank_files_of(out, ck.job_id, 2)[0]
        os.unlink(victim)
        with pytest.raises(CheckpointError, match="missing"):
            Checkpoint(out).resolution(2)


@pytest.mark.mpi(min_size=3)
def test_a_2d_tiling_broadcasts_b_once(tmp_path):
    """2 x 8 tiles: every column block of B is needed by two workers; its planes
    travel by broadcast, about once from the root (point to point: about twice)."""
    rank = comm().Get_rank()
    rng = np.random.default_rng(9)
    m, k, n = 256, 40, 2048
    A, B = rng.standard_normal((m, k)), rng.standard_normal((k, n))
    got = []
    with config.configure(tiles_per_worker=8, root_computes="no"):
        outcome = run_matmul(A if rank == 0 else None, B if rank == 0 else None, None,
                             planes=2, on_resolution=lambda meta, C: got.append((meta, C.copy())))
    if rank != 0:
        return
    ref = list(LayeredMatmul(A, B, planes=2))
    assert outcome.status == "complete"
    for (meta, C), r in zip(got, ref):
        np.testing.assert_array_equal(C, r.C)
    sent = got[0][0]["root_bytes_sent"]  # resolution 1: A's and B's plane 1
    assert sent <= m * k + 1.2 * n * k, sent


@pytest.mark.mpi(min_size=2)
def test_a_worker_exception_reaches_the_root_and_ends_the_job(tmp_path):
    with config.configure(test_fail_rank=1, test_fail_after=3):
        _worker_exception(tmp_path)


def _worker_exception(tmp_path):
    rank, size = comm().Get_rank(), comm().Get_size()
    out = os.path.join(shared_path(tmp_path), "c.h5")
    A = np.random.default_rng(0).standard_normal((256, 64))
    if rank == 0:
        with pytest.raises(WorkerError, match=f"worker 1 of {size} on .*RuntimeError: injected"):
            run_matmul(A, A.T.copy(), out, planes=6, order="pairwise")
        ck = Checkpoint(out)
        assert ck.attrs["status"] == "failed" and "worker 1" in ck.attrs["message"]
        for i in ck.resolution_indices():  # what finished before the failure is intact
            ck.resolution(i)
    else:
        assert run_matmul(None, None, out) is None


def test_root_input_error_releases_the_workers():
    rank = comm().Get_rank()
    if rank == 0:
        with pytest.raises(ValueError, match="shape mismatch"):
            run_matmul(np.ones((3, 4)), np.ones((5, 2)))
    else:
        assert run_matmul(None, None) is None
    # the communicator is still usable: the next job runs normally
    got = run_matmul(np.eye(3) if rank == 0 else None, np.eye(3) if rank == 0 else None, planes=1)
    if rank == 0:
        assert got.status == "complete"
