"""The wire format between the ranks: every message, its tag and its layout.

No other module names a tag, builds a header or reads one: each message has one
function that sends it and one that receives it (a worker receives everything the
root sends through `recv_from_root`; the root polls for what workers send). Bulk
arrays (digit planes, level sums, tiles of C) travel with the buffer methods into
preallocated NumPy arrays; control messages are small pickled objects, and nothing
from a user file is ever unpickled. The table of messages is in design.md, "Wire
format" (a test compares it with `Tag`).

Each message's pair (layouts: design.md, "Wire format"; direction root -> worker
unless marked <-): JOB send_job; HELLO<- send_hello / poll_hello; WORK send_work and
PLANE send_plane / recv_plane (a WORK's PLANEs follow it); RESULT<- send_result /
post_result, decode_result; ERROR<- send_error / poll_error; STOP send_stop, release
/ stop_waiting; BYE<- send_bye / poll_bye; CRT send_crt; SEAL send_seal; SEALED<-
send_sealed / poll_sealed; TASK send_task; DONE<- send_done / poll_done; STREAM
send_stream / recv_stream. post_bcast posts a broadcast (no tag: by posting order).
"""
import socket
import traceback
from enum import IntEnum

import numpy as np

from lrmpi.errors import ProtocolError
from lrmpi.parallel.comm import mpi
from lrmpi.parallel.messages import Seal, Stop, Work

VERSION = 9  # 9: CRT tasks carry float64 blocks (Operand.AF/BF), residues taken where they
# run; 8: RESULT by Isend, BYE carries the rank's stage figures; 7: one STOP, explicit result kinds; 6: results written by the ranks (Job.write,
# SEAL); 5: the CRT resolution (Job.crt, CRT, Operand.RA/RB); 4: RESULT carries the kernel
# time; 3: JOB is a Job dataclass
MAX_KEYS = 2 * 16          # plane blocks one WORK can carry: all planes (or residues,
                           # at most 16 moduli) of A and B
MAX_LEVELS = 32            # levels in one resolution (2 * MAX_PLANES)


class Tag(IntEnum):
    JOB = 11
    WORK = 12
    PLANE = 13
    RESULT = 14
    ERROR = 15
    STOP = 16
    BYE = 17
    HELLO = 18
    # 19 was PART (an inference rank's share; the farm replaced it)
    STREAM = 20
    TASK = 21
    DONE = 22
    CRT = 23
    SEAL = 24
    SEALED = 25


def _version_check(version):
    if version != VERSION:
        raise ProtocolError(f"protocol version {version} != {VERSION}: mixed lrmpi versions "
                            "among the ranks (install one lrmpi everywhere)")


# --- what a worker receives ---

def recv_from_root(comm, backoff):
    """Wait, probing and sleeping with `backoff` (never spinning a core), for the next
    message from rank 0; receive it: a Job, CrtSetup, Work (its PLANEs still to
    receive), Seal, FarmTask or Stop."""
    status = mpi().Status()
    while not comm.Iprobe(source=0, tag=mpi().ANY_TAG, status=status):
        backoff.sleep()
    backoff.reset()
    tag = status.Get_tag()
    if tag not in _FROM_ROOT:  # taken off the queue first: the next one may be fine
        comm.Recv(np.empty(status.Get_count(mpi().BYTE), np.uint8), source=0, tag=tag)
        raise ProtocolError(f"unexpected message (tag {tag}) from the root")
    return _FROM_ROOT[tag](comm)


# --- JOB / HELLO ---

def send_job(comm, worker, job):
    comm.send((VERSION, job), dest=worker, tag=Tag.JOB)


def _recv_job(comm):
    version, job = comm.recv(source=0, tag=Tag.JOB)
    _version_check(version)
    return job


def send_hello(comm):
    comm.send(socket.gethostname(), dest=0, tag=Tag.HELLO)


def poll_hello(comm, worker):
    """The host name `worker` answered JOB with, or None while it has not."""
    return comm.recv(source=worker, tag=Tag.HELLO) if comm.iprobe(source=worker, tag=Tag.HELLO) \
        else None


# --- WORK / PLANE: [version, task, resolution, tile, nkeys, (operand, block, plane) * nkeys] ---
W_VERSION, W_TASK, W_RES, W_TILE, W_NKEYS, W_KEYS = range(6)
WORK_LEN = W_KEYS + 3 * MAX_KEYS


def encode_work(task, resolution, tile, keys):
    """Header of a work unit; `keys` are the (operand, block, plane) PLANE messages that follow."""
    if len(keys) > MAX_KEYS:
        raise ProtocolError(f"{len(keys)} plane blocks exceed the protocol's {MAX_KEYS}")
    h = np.zeros(WORK_LEN, np.int64)
    h[[W_VERSION, W_TASK, W_RES, W_TILE, W_NKEYS]] = VERSION, task, resolution, tile, len(keys)
    if keys:
        h[W_KEYS:W_KEYS + 3 * len(keys)] = np.asarray(keys, np.int64).ravel()
    return h


def decode_work(h):
    """The Work a WORK header describes."""
    _version_check(int(h[W_VERSION]))
    n = int(h[W_NKEYS])
    keys = [tuple(int(x) for x in h[W_KEYS + 3 * i:W_KEYS + 3 * i + 3]) for i in range(n)]
    return Work(int(h[W_TASK]), int(h[W_RES]), int(h[W_TILE]), keys)


def send_work(comm, worker, task, resolution, tile, keys):
    """The WORK header (nonblocking; its PLANE messages follow with send_plane)."""
    return comm.Isend(encode_work(task, resolution, tile, keys), dest=worker, tag=Tag.WORK)


def _recv_work(comm):
    h = np.empty(WORK_LEN, np.int64)
    comm.Recv(h, source=0, tag=Tag.WORK)
    return decode_work(h)


def send_plane(comm, worker, block):
    return comm.Isend(block, dest=worker, tag=Tag.PLANE)


def recv_plane(comm, buf):
    comm.Recv(buf, source=0, tag=Tag.PLANE)
    return buf


# --- RESULT: [task, kernel microseconds, kind, nlevels, levels * MAX_LEVELS], its body ---
R_TASK, R_USEC, R_KIND, R_NLEVELS, R_LEVELS = range(5)
RESULT_HDR = R_LEVELS + MAX_LEVELS


class ResultKind(IntEnum):
    SUMS = 0     # exact level sums (nlevels, rows, cols) of the job's sum dtype
    TILE = 1     # the tile of C itself, float64 (rows, cols): the CRT resolution
    WRITTEN = 2  # the worker wrote the tile to its own file: the header only, max |C tile|


def result_size(nlevels, shape, dtype=np.int64):
    """int64 elements of a RESULT message for a tile of `shape`, `nlevels` arrays of `dtype`."""
    nbytes = nlevels * shape[0] * shape[1] * np.dtype(dtype).itemsize
    return RESULT_HDR + -(-nbytes // 8)


def result_body(buf, nlevels, shape, dtype=np.int64):
    """The body's place in a RESULT buffer, (nlevels, rows, cols) of `dtype`: compute
    into it."""
    count = nlevels * shape[0] * shape[1]
    return buf[RESULT_HDR:].view(dtype)[:count].reshape(nlevels, *shape)


def result_buffers(pool, nlevels, shape, dtype):
    """(a RESULT buffer from `pool`, its body): where a task computes its result. The
    body starts on a page, so that level sums can be written to the checkpoint around
    the page cache (jobs.checkpoint.direct)."""
    buf = pool.get((result_size(nlevels, shape, dtype),), np.int64, at=RESULT_HDR * 8)
    return buf, result_body(buf, nlevels, shape, dtype)


def _header(buf, task, kind, seconds):
    buf[R_TASK], buf[R_USEC], buf[R_KIND] = task, round(seconds * 1e6), kind


def pack_sums(buf, task, level_sums, seconds=0.0):
    """RESULT of [(level, S)] (S arrays that are already views of result_body(buf) are
    not copied) and the seconds its kernels took."""
    _header(buf, task, ResultKind.SUMS, seconds)
    buf[R_NLEVELS] = len(level_sums)
    if not level_sums:
        return buf
    S0 = level_sums[0][1]
    body = result_body(buf, len(level_sums), S0.shape, S0.dtype)
    for i, (level, S) in enumerate(level_sums):
        buf[R_LEVELS + i] = level
        if not np.shares_memory(body[i], S):
            body[i] = S
    return buf


def pack_tile(buf, task, C, seconds=0.0):
    """RESULT of a tile of C (float64; not copied if it is result_body(buf)[0])."""
    _header(buf, task, ResultKind.TILE, seconds)
    buf[R_NLEVELS] = 1
    body = result_body(buf, 1, C.shape, np.float64)
    if not np.shares_memory(body[0], C):
        body[0] = C
    return buf


def pack_written(buf, task, amax, seconds=0.0):
    """The header-only RESULT of a tile the worker wrote itself."""
    _header(buf, task, ResultKind.WRITTEN, seconds)
    buf[R_NLEVELS] = 0
    buf[R_LEVELS:R_LEVELS + 1].view(np.float64)[0] = amax
    return buf[:RESULT_HDR]


def send_result(comm, msg):
    """RESULT (nonblocking: a request; `msg` stays untouched until it completes). A
    result is rendezvous-sized: a blocking send would hold the worker until the root
    drives MPI progress, instead of computing its next task meanwhile."""
    return comm.Isend(msg, dest=0, tag=Tag.RESULT)


def post_result(comm, worker, buf):
    """The receive of a RESULT from `worker` into `buf` (of result_size): a request."""
    return comm.Irecv(buf, source=worker, tag=Tag.RESULT)


def result_nbytes(buf):
    """Bytes of the RESULT message received into `buf` (a written tile's is the header)."""
    return RESULT_HDR * 8 if buf[R_KIND] == ResultKind.WRITTEN else buf.nbytes


def decode_result(buf, kind, shape, dtype=np.int64):
    """(task, value, kernel seconds) from a RESULT buffer of a tile of `shape` that must be
    of `kind`: value is [(level, S view)] (SUMS), the tile of C (TILE) or max |C tile|
    (WRITTEN)."""
    task, seconds = int(buf[R_TASK]), int(buf[R_USEC]) * 1e-6
    if buf[R_KIND] != kind:
        raise ProtocolError(f"a result of kind {int(buf[R_KIND])} for task {task}, expected "
                            f"{ResultKind(kind).name}")
    if kind == ResultKind.WRITTEN:
        return task, float(buf[R_LEVELS:R_LEVELS + 1].view(np.float64)[0]), seconds
    n = int(buf[R_NLEVELS])
    body = result_body(buf, n, shape, dtype)
    if kind == ResultKind.TILE:
        return task, body[0], seconds
    return task, [(int(buf[R_LEVELS + i]), body[i]) for i in range(n)], seconds


# --- ERROR: a worker's exception, for the root to re-raise ---

def send_error(comm, rank, size, exc):
    """Report `exc`, raised on `rank`, to the root (call inside the except block)."""
    comm.send({"where": f"worker {rank} of {size} on {socket.gethostname()}",
               "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()},
              dest=0, tag=Tag.ERROR)


def poll_error(comm):
    """(one-line description naming the rank, remote traceback) of a worker's ERROR, or None."""
    got = _poll(comm, Tag.ERROR)
    if got is None:
        return None
    _, msg = got
    return f"{msg['where']}: {msg['error']}", msg["traceback"]


# --- STOP / BYE ---

def _stop_message():
    return np.zeros(1, np.int64)


def send_stop(comm, worker):
    """STOP (nonblocking): the worker ends its job and answers BYE."""
    return comm.Isend(_stop_message(), dest=worker, tag=Tag.STOP)


def release(comm):
    """STOP every worker still waiting for a job (the root failed before the job began,
    or has nothing to do); they answer no BYE."""
    if comm is not None:
        for w in range(1, comm.Get_size()):
            comm.Send(_stop_message(), dest=w, tag=Tag.STOP)


def _recv_stop(comm):
    comm.Recv(np.empty(1, np.int64), source=0, tag=Tag.STOP)
    return Stop()


def stop_waiting(comm):
    """Whether a STOP from the root is waiting (a worker looks between chunks)."""
    return comm.Iprobe(source=0, tag=Tag.STOP)


def send_bye(comm, sent, report=None):
    """BYE: the results this rank sent, and its report (stages.Stages.report)."""
    comm.send((sent, report or {}), dest=0, tag=Tag.BYE)


def poll_bye(comm):
    """(worker, results it sent, its report) of a BYE, or None."""
    got = _poll(comm, Tag.BYE)
    return None if got is None else (got[0], *got[1])


# --- CRT / broadcasts ---

def send_crt(comm, worker, setup):
    """CRT (nonblocking: a busy worker reads it after its task)."""
    return comm.isend(setup, dest=worker, tag=Tag.CRT)


def _recv_crt(comm):
    return comm.recv(source=0, tag=Tag.CRT)


def post_bcast(comm, buf):
    """A whole plane (or residues) by MPI_Ibcast from rank 0: every rank posts the same
    ones in the same order (collectives match by order, not by tag)."""
    return comm.Ibcast(buf, root=0)


# --- SEAL / SEALED: results written by the ranks ---

def send_seal(comm, worker, res):
    return comm.Isend(np.array([res], np.int64), dest=worker, tag=Tag.SEAL)


def _recv_seal(comm):
    r = np.empty(1, np.int64)
    comm.Recv(r, source=0, tag=Tag.SEAL)
    return Seal(int(r[0]))


def send_sealed(comm, res, name, tiles):
    """SEALED: this rank's file of resolution res is committed (name None: it has none;
    tiles None: it could not be committed, so res is never listed)."""
    comm.send((res, name, tiles), dest=0, tag=Tag.SEALED)


def poll_sealed(comm):
    """(worker, (res, file name or None, tile indices)) of a SEALED, or None."""
    return _poll(comm, Tag.SEALED)


# --- TASK / DONE: a task farm ---

def send_task(comm, worker, task):
    """TASK (nonblocking: a blocking send of a large task while the worker blocks
    sending its result to the root would deadlock)."""
    return comm.isend(task, dest=worker, tag=Tag.TASK)


def _recv_task(comm):
    return comm.recv(source=0, tag=Tag.TASK)


def send_done(comm, result):
    comm.send(result, dest=0, tag=Tag.DONE)


def poll_done(comm):
    """(worker, FarmResult) of a DONE, or None."""
    return _poll(comm, Tag.DONE)


# --- STREAM: the next job of a stream of jobs (lrmpi.experiments.stream) ---

def send_stream(comm, worker, command):
    comm.send(command, dest=worker, tag=Tag.STREAM)


def recv_stream(comm, backoff):
    """The next StreamCommand, waiting with `backoff` (the cores belong to the jobs)."""
    req = comm.irecv(source=0, tag=Tag.STREAM)
    while True:
        done, msg = req.test()
        if done:
            backoff.reset()
            return msg
        backoff.sleep()


def _poll(comm, tag):
    """(source, pickled message) of a waiting message with `tag` from any rank, or None."""
    status = mpi().Status()
    if not comm.iprobe(source=mpi().ANY_SOURCE, tag=tag, status=status):
        return None
    src = status.Get_source()
    return src, comm.recv(source=src, tag=tag)


_FROM_ROOT = {Tag.STOP: _recv_stop, Tag.JOB: _recv_job, Tag.WORK: _recv_work,
              Tag.CRT: _recv_crt, Tag.SEAL: _recv_seal, Tag.TASK: _recv_task}
