"""The wire format between the ranks: tags, header layouts, every message's codec.

No other module writes a tag number, a header offset or a message layout. Bulk
arrays (digit planes, level sums) travel with the buffer methods (Isend/Irecv)
into preallocated NumPy arrays; only small control messages are pickled.

    root -> worker   JOB     pickled Job, once (or STOP)
    worker -> root   HELLO   pickled str: its host name (answer to JOB)
    root -> worker   WORK    int64[WORK_LEN] header, then one PLANE message per
                             plane block it lists, in that order
    root -> worker   PLANE   int8 array (rows, k) of one plane of one block
    worker -> root   RESULT  int64[RESULT_HDR] header (task, kernel microseconds,
                             levels), then the exact level sums
                             of the tile, (levels, rows, cols) of int32 or int64
                             (layered.sum_dtype: both sides derive it from the Job)
    worker -> root   ERROR   pickled dict (error_message): where, what, traceback
    root -> worker   STOP    int64[1], no payload
    worker -> root   BYE     pickled int: RESULT messages it sent in all (after STOP)
    root -> worker   TASK    pickled FarmTask: a task of a task farm (inference)
    worker -> root   DONE    pickled FarmResult: its result
    root -> worker   STREAM  pickled str (StreamCommand): the next job of a stream
                             (lrmpi.experiments.stream)
    worker -> root   RESULT  (results written by the ranks, Job.write) the header only:
                             R_NLEVELS = WRITTEN, max |C tile| in the first level slot
    root -> worker   SEAL    int64[1]: resolution r (0-based) is complete; commit
                             your file of it (results written by the ranks)
    worker -> root   SEALED  pickled (r, file name or None, tile indices in it)
    root -> worker   CRT     pickled CrtSetup, to every worker once the residues of
                             the CRT resolution exist (before any of its WORK); the
                             root then posts the Ibcasts it lists, in order

The CRT resolution (numerics/crt.py) is resolution len(Job.schedule) (0-based): its
WORK lists residue blocks (Operand.RA / RB, block, modulus index) as PLANE
messages, and its RESULT carries one "level" CRT_LEVEL: the tile of C itself, in
float64.
"""
import socket
import traceback
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

VERSION = 6  # 6: results written by the ranks (Job.write, SEAL); 5: the CRT resolution (Job.crt, CRT, Operand.RA/RB); 4: RESULT carries
# the kernel time; 3: JOB is a Job dataclass
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
    PART = 19
    STREAM = 20
    TASK = 21
    DONE = 22
    CRT = 23
    SEAL = 24
    SEALED = 25


class Operand(IntEnum):
    A = 0
    B = 1
    RA = 2   # residues of A's rows modulo one CRT modulus (plane = modulus index)
    RB = 3   # residues of B's columns


def is_rows_of_a(op):
    """True for blocks cut by C's row blocks (A's planes, A's residues)."""
    return op in (Operand.A, Operand.RA)


CRT_LEVEL = 0  # the "level" of a CRT result: the tile of C (float64), not a level sum


# --- JOB: what every worker needs to know, once ---

@dataclass(frozen=True)
class Job:
    bits: int
    planes: int
    k: int
    schedule: tuple          # resolutions, each a tuple of (p, q) pairs
    tiling: tuple            # (m, n, row_blocks, col_blocks): partition.Tiling's fields
    bcast: tuple = ()        # planes q of B (whole: every column block) by MPI_Ibcast, in order
    crt: int = 0             # moduli of the CRT resolution after the layers (0: none)
    # results written by the ranks (jobs.checkpoint.rank_files): (checkpoint path, job
    # id, fsync), and the row and column exponents to decode C with; () : the root writes
    write: tuple = ()
    exps: tuple = ()
    version: int = VERSION

    def check(self):
        if self.version != VERSION:
            raise RuntimeError(f"protocol version {self.version} != {VERSION}: "
                               "mixed lrmpi versions")
        return self


def job_message(bits, planes, k, schedule, tiling, bcast=(), crt=0, write=(), exps=()):
    return Job(bits, planes, k, tuple(schedule),
               (tiling.m, tiling.n, tiling.row_blocks, tiling.col_blocks), tuple(bcast), crt,
               tuple(write), tuple(exps))


# --- CRT: what the CRT resolution's tasks need besides their residue blocks ---

@dataclass(frozen=True)
class CrtSetup:
    moduli: int              # crt.plan(moduli) on both sides
    ea: np.ndarray           # int32 (m,): exponents of A's rows
    eb: np.ndarray           # int32 (n,): exponents of B's columns
    bcast: tuple = ()        # moduli indices l whose B residues (RB, all blocks) come by Ibcast


def crt_bcast(moduli, tiling, workers):
    """Moduli whose B residues are broadcast (same rule as bcast_planes)."""
    return tuple(range(moduli)) if _shared(tiling, workers) else ()


def _shared(tiling, workers):
    """Whether B's blocks are each needed by several workers: one column block (all
    of them need it), or a 2-D tiling (every row block's owner needs each column
    block). Column blocks in one row (wide C) go to one worker each: point to
    point sends B once already, and a broadcast would give every worker all of it."""
    return workers >= 2 and (tiling.col_blocks == 1 or tiling.row_blocks > 1)


def bcast_planes(schedule, tiling, workers):
    """B's planes that every worker will need, to broadcast once (collective:
    the root sends about one copy whatever the number of workers) instead of
    one point-to-point copy per worker: all of B's planes the schedule uses, when
    several workers need each of its blocks (_shared). A plane travels whole; a
    worker holds every column block of it (views)."""
    if not _shared(tiling, workers):
        return ()
    return tuple(sorted({q for pairs in schedule for _, q in pairs}))


# --- WORK header: [version, task, resolution, tile, nkeys, (operand, block, plane) * nkeys] ---
W_VERSION, W_TASK, W_RES, W_TILE, W_NKEYS, W_KEYS = range(6)
WORK_LEN = W_KEYS + 3 * MAX_KEYS


def work_buffer():
    return np.empty(WORK_LEN, np.int64)


def encode_work(task, resolution, tile, keys):
    """Header of a work unit; `keys` are the (operand, block, plane) PLANE messages that follow."""
    if len(keys) > MAX_KEYS:
        raise ValueError(f"{len(keys)} plane blocks exceed the protocol's {MAX_KEYS}")
    h = np.zeros(WORK_LEN, np.int64)
    h[[W_VERSION, W_TASK, W_RES, W_TILE, W_NKEYS]] = VERSION, task, resolution, tile, len(keys)
    if keys:
        h[W_KEYS:W_KEYS + 3 * len(keys)] = np.asarray(keys, np.int64).ravel()
    return h


def decode_work(h):
    """(task, resolution, tile, keys) from a WORK header."""
    if h[W_VERSION] != VERSION:
        raise RuntimeError(f"protocol version {h[W_VERSION]} != {VERSION}: mixed lrmpi versions")
    n = int(h[W_NKEYS])
    keys = [tuple(int(x) for x in h[W_KEYS + 3 * i:W_KEYS + 3 * i + 3]) for i in range(n)]
    return int(h[W_TASK]), int(h[W_RES]), int(h[W_TILE]), keys


# --- RESULT: [task, kernel microseconds, nlevels, levels * MAX_LEVELS], level sums ---
R_TASK, R_USEC, R_NLEVELS, R_LEVELS = range(4)
RESULT_HDR = R_LEVELS + MAX_LEVELS


def result_size(nlevels, shape, dtype=np.int64):
    """int64 elements of a RESULT message for a tile of `shape`, sums of `dtype`."""
    nbytes = nlevels * shape[0] * shape[1] * np.dtype(dtype).itemsize
    return RESULT_HDR + -(-nbytes // 8)


def result_body(buf, nlevels, shape, dtype=np.int64):
    """The level sums' place in a RESULT buffer, (nlevels, rows, cols) of `dtype`:
    compute into it."""
    count = nlevels * shape[0] * shape[1]
    return buf[RESULT_HDR:].view(dtype)[:count].reshape(nlevels, *shape)


def encode_result(buf, task, level_sums, seconds=0.0):
    """Fill `buf` (of result_size) with [(level, S)] of one task and the seconds its
    kernels took; S arrays that are already views of result_body(buf) are not copied."""
    buf[R_TASK], buf[R_USEC], buf[R_NLEVELS] = task, round(seconds * 1e6), len(level_sums)
    if not level_sums:
        return buf
    S0 = level_sums[0][1]
    body = result_body(buf, len(level_sums), S0.shape, S0.dtype)
    for i, (level, S) in enumerate(level_sums):
        buf[R_LEVELS + i] = level
        if not np.shares_memory(body[i], S):
            body[i] = S
    return buf


WRITTEN = -1  # R_NLEVELS of a result the worker wrote to its own file


@dataclass(frozen=True)
class Written:
    """A tile the worker decoded and wrote itself: only its max |C| travels."""
    amax: float


def encode_written(buf, task, amax, seconds=0.0):
    """The header-only RESULT of a tile written by the worker."""
    buf[R_TASK], buf[R_USEC], buf[R_NLEVELS] = task, round(seconds * 1e6), WRITTEN
    buf[R_LEVELS:R_LEVELS + 1].view(np.float64)[0] = amax
    return buf[:RESULT_HDR]


def result_nbytes(buf):
    """Bytes of the RESULT message received into `buf` (a written tile's is the header)."""
    return RESULT_HDR * 8 if buf[R_NLEVELS] == WRITTEN else buf.nbytes


SEAL_LEN = 1


def decode_result(buf, shape, dtype=np.int64):
    """(task, [(level, S view)] or Written, kernel seconds) from a RESULT buffer of a
    tile of `shape`."""
    n = int(buf[R_NLEVELS])
    if n == WRITTEN:
        return (int(buf[R_TASK]), Written(float(buf[R_LEVELS:R_LEVELS + 1].view(np.float64)[0])),
                int(buf[R_USEC]) * 1e-6)
    body = result_body(buf, n, shape, dtype)
    return (int(buf[R_TASK]), [(int(buf[R_LEVELS + i]), body[i]) for i in range(n)],
            int(buf[R_USEC]) * 1e-6)


# --- ERROR: a worker's exception, for the root to re-raise ---

def error_message(rank, size, exc):
    """The ERROR message for `exc` raised on `rank` (call inside the except block)."""
    return {"where": f"worker {rank} of {size} on {socket.gethostname()}",
            "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}


def decode_error(msg):
    """(one-line description naming the rank, remote traceback) of an ERROR message."""
    return f"{msg['where']}: {msg['error']}", msg["traceback"]


# --- STOP ---

STOP_MESSAGE = np.zeros(1, np.int64)


def stop_buffer():
    """A receive buffer for STOP."""
    return np.empty(1, np.int64)


# --- PART: one rank's share of an inference resolution ---

@dataclass
class Part:
    refined: object      # (n,) bool: samples refined at this resolution
    work: float          # multiply-adds done
    work_all: float      # ... had every sample been refined
    state: dict          # the rank's engine state (exact, for checkpoints and re-sharding)


# --- TASK / DONE: a task farm's work (inference: a batch of samples at a resolution) ---

@dataclass
class FarmTask:
    id: int
    payload: object      # what the farm's compute function receives


@dataclass
class FarmResult:
    id: int
    value: object        # what it returned
    seconds: float       # its compute time


# --- STREAM: the next job of a stream of jobs ---

class StreamCommand:
    LAYERED = "layered"
    ONESHOT = "oneshot"
    DONE = "done"
