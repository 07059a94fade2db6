"""The root's endpoints and the worker loop over an in-process communicator (threads
for ranks, fakempi.py): tasks and their planes out, results in, errors, hangs, the
STOP/BYE handshake, and whole runs bit-identical to one process."""
import re
import time

import numpy as np
import pytest

from lrmpi import LayeredMatmul, config
from lrmpi.errors import ProtocolError, WorkerError, WorkerTimeout
from lrmpi.numerics.buffers import ScratchPool
from lrmpi.parallel import farm, protocol
from lrmpi.parallel.backoff import Backoff
from lrmpi.parallel.endpoints import Endpoints, MatmulRanks, ResultBuffers, WorkerRanks
from lrmpi.parallel.messages import FarmTask, Stop, Work
from lrmpi.parallel.partition import Tiling
from lrmpi.parallel.plan import Plan
from lrmpi.parallel.progress import Figures
from lrmpi.parallel.root import Root
from lrmpi.parallel.scheduler import Scheduler
from lrmpi.parallel.tilework import RootBlocks, compute_tile
from lrmpi.parallel.worker import worker_run

from fakempi import Aborted, World, run_ranks


@pytest.mark.parametrize("size", [2, 3])
@pytest.mark.parametrize("final", [None, "crt"])
def test_a_run_over_threads_equals_one_process(rng, size, final):
    A = rng.standard_normal((300, 70)) * np.exp(rng.uniform(-4, 4, (300, 1)))
    B = rng.standard_normal((70, 40))
    opts = dict(planes=3, final=final, moduli=5 if final else None)
    world = World(size)
    join = run_ranks(world, worker_run)
    got = []
    with config.configure(root_computes="no", tiles_per_worker=3):
        root = Root(LayeredMatmul(A, B, **opts), world.comms[0],
                    on_resolution=lambda meta, C: got.append((meta, C.copy())))
        assert root.run() == ("complete", "")
    assert set(join().values()) == {0}  # every worker said BYE and returned cleanly
    ref = list(LayeredMatmul(A, B, **opts))
    assert [m["index"] for m, _ in got] == [r.index for r in ref]
    for (meta, C), r in zip(got, ref):
        np.testing.assert_array_equal(C, r.C)
        assert meta["bound_abs"] == r.bound_abs and meta["root_bytes_recv"] > 0
    assert all(not q for q in world.queues.values())  # nothing left unreceived


@pytest.mark.parametrize("computes", ["no", "yes"])
def test_a_s_planes_leave_the_root_after_their_last_resolution_and_c_is_exact(rng, computes):
    """Plane p of A is released once no later resolution multiplies it (its blocks are
    big enough to have pages of their own); every resolution stays bit-identical."""
    A = rng.standard_normal((1536, 2048))
    B = rng.standard_normal((2048, 48))
    world = World(3)
    join = run_ranks(world, worker_run)
    got = []
    with config.configure(root_computes=computes, tiles_per_worker=1):
        root = Root(LayeredMatmul(A, B, planes=3), world.comms[0],
                    on_resolution=lambda meta, C: got.append(C.copy()))
        assert root.run() == ("complete", "")
    assert set(join().values()) == {0}
    for C, r in zip(got, LayeredMatmul(A, B, planes=3)):
        np.testing.assert_array_equal(C, r.C)
    parts = [root.ea.block(b) for b in range(len(root.ea.blocks))] \
        if hasattr(root.ea, "block") else [root.ea.digits]
    assert len(got) == 5 and all(D.nbytes >= 2 << 20 for D in parts)
    assert all(not D.any() for D in parts)  # each plane released after its last use


def _endpoint(world, rng, k=50):
    lm = LayeredMatmul(rng.standard_normal((130, k)), rng.standard_normal((k, 20)), planes=2)
    ea, eb = lm.encode()
    plan = Plan(lm.bits, lm.planes, k, tuple(lm.schedule), Tiling(130, 20, 2, 1))
    figures = Figures(plan.nres, world.size - 1)
    blocks = RootBlocks(ea, eb, plan.tiling)
    ranks = MatmulRanks(world.comms[0], blocks, ResultBuffers(plan, ScratchPool()), figures)
    ranks.state = "running"  # as after start() (JOB, HELLO, broadcasts: whole runs test it)
    sched = Scheduler(plan.tiles, plan.nres, ranks.workers, plan.keys)
    return plan, blocks, ranks, sched, figures


def test_a_task_carries_the_blocks_the_worker_lacks_and_its_result_comes_back(rng):
    world = World(2)
    plan, blocks, ranks, sched, figures = _endpoint(world, rng)
    worker = world.comms[1]
    tasks = [sched.assign(1, 0.0) for _ in range(2)]  # two tiles of resolution 1
    for task in tasks:
        ranks.send(task)
    got = {}  # the blocks the worker holds
    for task in tasks:  # the worker's side, through the protocol's own functions
        work = protocol.recv_from_root(worker, Backoff())
        assert work == Work(task.id, 0, task.tile.index, task.keys)
        for key in work.keys:
            got[key] = protocol.recv_plane(worker, np.empty(plan.block_shape(*key[:2]), np.int8))
            np.testing.assert_array_equal(got[key], blocks[key])
        nlevels, dtype = plan.layout(0)
        buf, body = protocol.result_buffers(ScratchPool(), nlevels, task.tile.shape, dtype)
        value = compute_tile(plan, 0, task.tile, got, body, ScratchPool(), lambda: False, 1)
        protocol.send_result(worker, protocol.pack_sums(buf, task.id, value, 0.5))
    # B's plane went once, with the first task; each tile's A block with its own
    assert [len(t.keys) for t in tasks] == [2, 1]
    done = ranks.poll()
    assert sorted(t.id for t, _ in done) == [t.id for t in tasks]
    for task, value in done:
        ref = compute_tile(plan, 0, task.tile, blocks, ranks.buffers.get(task), ScratchPool(),
                           lambda: False, 0)
        assert [lv for lv, _ in value] == [lv for lv, _ in ref] and task.kernel_s == 0.5
        for (_, S), (_, R) in zip(value, ref):
            np.testing.assert_array_equal(S, R)
    assert ranks.received == {1: 2}
    sent = sum(blocks[key].nbytes for t in tasks for key in t.keys)
    assert figures.traffic[0][0] == sent and figures.traffic[0][1] > 0


def test_a_result_for_another_task_is_a_protocol_error(rng):
    world = World(2)
    plan, blocks, ranks, sched, _ = _endpoint(world, rng)
    task = sched.assign(1, 0.0)
    ranks.send(task)
    nlevels, dtype = plan.layout(0)
    buf, _ = protocol.result_buffers(ScratchPool(), nlevels, task.tile.shape, dtype)
    protocol.send_result(world.comms[1], protocol.pack_sums(buf, task.id + 7, [], 0.0))
    with pytest.raises(ProtocolError, match="answered task"):
        ranks.poll()


def test_a_job_of_another_protocol_version_is_refused(monkeypatch):
    world = World(2)
    monkeypatch.setattr(protocol, "VERSION", protocol.VERSION + 1)
    protocol.send_job(world.comms[0], 1, "job")
    monkeypatch.undo()
    with pytest.raises(ProtocolError, match="mixed lrmpi versions"):
        protocol.recv_from_root(world.comms[1], Backoff())


def test_a_worker_error_and_a_hung_worker_are_named(rng):
    world = World(3)
    _, _, ranks, sched, _ = _endpoint(world, rng)
    ranks.hosts = {1: "node-a", 2: "node-b"}
    try:
        raise ValueError("bad tile")
    except ValueError as exc:
        protocol.send_error(world.comms[2], 2, 3, exc)
    with pytest.raises(WorkerError, match="worker 2 of 3 on .*ValueError: bad tile") as info:
        ranks.check(sched.watch, 0.0)
    assert "bad tile" in str(info.value.__cause__)
    task = sched.assign(1, 0.0)
    ranks.check(sched.watch, 4.0, timeout=5.0)  # within the limit: nothing
    with pytest.raises(WorkerTimeout, match=r"worker 1 of 3 on node-a did not answer for "
                                            r"6\.0 s \(task 0; limit 5\.0 s\)"):
        ranks.check(sched.watch, 6.0, timeout=5.0, describe=lambda t: f"task {t.id}")
    # the one failure path: a hung worker never says BYE, so the job ends now
    with pytest.raises(Aborted):
        Endpoints(None, ranks).fail(WorkerTimeout("hung"))
    assert world.aborted == 1 and task is not None


def test_stop_collects_the_results_in_flight_then_bye(rng):
    """A worker that sent a result just before STOP: the root receives it before the
    handshake ends (BYE says how many were sent), and cancels what will not come."""
    world = World(2)
    plan, blocks, ranks, sched, _ = _endpoint(world, rng)
    first, second = sched.assign(1, 0.0), sched.assign(1, 0.0)
    ranks.send(first)
    ranks.send(second)
    worker = world.comms[1]

    def serve(comm):
        for _ in range(2):
            work = protocol.recv_from_root(comm, Backoff())
            for key in work.keys:
                protocol.recv_plane(comm, np.empty(plan.block_shape(*key[:2]), np.int8))
        nlevels, dtype = plan.layout(0)
        buf, body = protocol.result_buffers(ScratchPool(), nlevels, first.tile.shape, dtype)
        body[...] = 0
        protocol.send_result(comm, protocol.pack_sums(buf, first.id, [], 0.0))
        assert isinstance(protocol.recv_from_root(comm, Backoff()), Stop)
        protocol.send_bye(comm, 1)  # the second task was dropped: STOP came first
        return 0
    join = run_ranks(world, serve)
    ranks.stop(timeout=30)
    assert join() == {1: 0} and ranks.received == {1: 1}
    assert not ranks.pending and not ranks.sends and worker is world.comms[1]


def test_a_worker_that_never_says_bye_ends_the_job(rng, capfd):
    world = World(2)
    _, _, ranks, _, _ = _endpoint(world, rng)
    ranks.hosts = {1: "node-a"}
    with pytest.raises(Aborted):
        ranks.stop(timeout=0.2)
    assert "worker 1 of 2 on node-a did not stop within" in capfd.readouterr().err


def test_a_farm_over_threads_with_the_same_worker_loop():
    world = World(3)
    join = run_ranks(world, lambda comm: farm.serve(comm, lambda p, stopping: p * p))
    with config.configure(root_computes="yes"):
        f = farm.Farm(world.comms[0], lambda p, stopping: p * p, worker_timeout=30)
        try:
            for _ in range(2):
                assert f.round(list(range(40))) == [i * i for i in range(40)]
        finally:
            f.stop()
    assert join() == {1: 0, 2: 0}
    assert sum(f.endpoints.ranks.received.values()) > 0  # the workers computed some


def test_a_farm_worker_error_reaches_the_root():
    world = World(2)

    def compute(p, stopping):
        if p == 3:
            raise ArithmeticError("no 3")
        time.sleep(0.001)
        return p
    join = run_ranks(world, lambda comm: farm.serve(comm, compute))
    with config.configure(root_computes="no"):
        f = farm.Farm(world.comms[0], compute)
        with pytest.raises(WorkerError, match="worker 1 of 2 .*ArithmeticError: no 3"):
            f.round(list(range(10)))
        f.stop()
    assert join() == {1: 1}  # the worker reports that a task failed


def test_a_worker_that_cannot_read_the_job_ends_it_with_one_clear_error(rng, monkeypatch,
                                                                        capfd):
    """Mixed lrmpi versions: the worker reports a ProtocolError, the root names the rank
    in one line and ends the job (the other workers wait for broadcasts the failing
    one never joins: no handshake can end them), instead of waiting for its HELLO."""
    world = World(3)
    join = run_ranks(world, worker_run)
    real = protocol.send_job

    def older(comm, worker, job):
        if worker == 2:
            comm.send((protocol.VERSION - 1, job), dest=worker, tag=protocol.Tag.JOB)
        else:
            real(comm, worker, job)
    monkeypatch.setattr(protocol, "send_job", older)
    A, B = rng.standard_normal((200, 10)), rng.standard_normal((10, 5))
    marked = []
    control = type("Control", (), {"stop_reason": lambda self: None,
                                   "mark": lambda self, *status: marked.append(status)})()
    with config.configure(root_computes="no"):
        root = Root(LayeredMatmul(A, B, planes=2), world.comms[0], control=control)
        assert root.bcast  # the other worker waits for broadcasts
        with pytest.raises(Aborted):
            root.run()
    err = capfd.readouterr().err
    assert err.count("lrmpi: error:") == 1
    assert re.search(r"lrmpi: error: worker 2 of 3 on .*: ProtocolError: protocol version "
                     r".*mixed lrmpi versions", err)
    assert marked[0][0] == "failed" and "mixed lrmpi versions" in marked[0][1]
    with pytest.raises(Aborted):
        join()


def test_a_root_that_fails_before_any_job_releases_the_workers(rng):
    world = World(3)
    join = run_ranks(world, worker_run)
    with config.configure(root_computes="no"):
        root = Root(LayeredMatmul(rng.standard_normal((9, 4)), rng.standard_normal((4, 3)),
                                  planes=2), world.comms[0])
    root.fail(ValueError("before the job"))  # e.g. start_workers raised before any JOB
    assert join() == {1: 0, 2: 0} and world.aborted is None


def test_a_message_of_another_job_kind_is_a_protocol_error_reported_to_the_root():
    world = World(2)
    join = run_ranks(world, worker_run)
    root = world.comms[0]
    protocol.send_task(root, 1, FarmTask(0, "x"))  # a farm's task to a matmul worker
    ranks = WorkerRanks(root)
    deadline = time.time() + 30
    with pytest.raises(WorkerError, match="ProtocolError: a matmul worker received a FarmTask"):
        while time.time() < deadline:
            ranks.check_error()
            time.sleep(0.001)
    ranks.stop(timeout=30)  # a failed worker answers STOP with BYE
    assert join() == {1: 1}
