"""The wire format between root and workers: tags, header layouts, codecs.

No other module writes a tag number or a header offset. Bulk arrays (digit
planes, level sums) travel with the buffer methods (Isend/Irecv) into
preallocated NumPy arrays; only the small JOB description and ERROR reports
are pickled.

    root -> worker   JOB     pickled dict (see job_message), once, or STOP
    root -> worker   WORK    int64[WORK_LEN] header, then one PLANE message per
                             plane block it lists, in that order
    root -> worker   PLANE   int8 array (rows, k) of one plane of one block
    worker -> root   RESULT  int64[RESULT_HDR] header, then the exact level sums
                             of the tile, (levels, rows, cols) of int32 or int64
                             (layered.sum_dtype: both sides derive it from the job)
    worker -> root   ERROR   pickled str: "worker R of N on HOST: traceback"
    root -> worker   STOP    int64[1], no payload
    worker -> root   BYE     pickled int: RESULT messages it sent in all (after STOP)
    worker -> root   HELLO   pickled str: its host name (answer to JOB)
    rank -> root     PART    pickled tuple: one rank's share of an inference resolution
    root -> worker   STREAM  pickled str: next job of a stream (lrmpi.experiments.stream): "layered",
                             "oneshot" or "done"
"""
from enum import IntEnum

import numpy as np

VERSION = 2  # 2: level sums may travel as int32
MAX_KEYS = 2 * 16          # plane blocks one WORK can carry: all planes of A and B
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


class Operand(IntEnum):
    A = 0
    B = 1


# --- WORK header: [version, task, resolution, tile, nkeys, (operand, block, plane) * nkeys] ---
W_VERSION, W_TASK, W_RES, W_TILE, W_NKEYS, W_KEYS = range(6)
WORK_LEN = W_KEYS + 3 * MAX_KEYS


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


# --- RESULT: [task, nlevels, levels * MAX_LEVELS] then the level sums ---
R_TASK, R_NLEVELS, R_LEVELS = range(3)
RESULT_HDR = R_LEVELS + MAX_LEVELS


def result_size(nlevels, shape, dtype=np.int64):
    """int64 elements of a RESULT message for a tile of `shape`, sums of `dtype`."""
    nbytes = nlevels * shape[0] * shape[1] * np.dtype(dtype).itemsize
    return RESULT_HDR + -(-nbytes // 8)


def result_buffer(nlevels, shape, dtype=np.int64):
    """A receive/send buffer for one tile's level sums."""
    return np.empty(result_size(nlevels, shape, dtype), np.int64)


def result_body(buf, nlevels, shape, dtype=np.int64):
    """The level sums' place in a RESULT buffer, (nlevels, rows, cols) of `dtype`:
    compute into it."""
    count = nlevels * shape[0] * shape[1]
    return buf[RESULT_HDR:].view(dtype)[:count].reshape(nlevels, *shape)


def encode_result(buf, task, level_sums):
    """Fill `buf` (from result_buffer) with [(level, S)] of one task; S arrays that
    are already views of result_body(buf) are not copied."""
    buf[R_TASK], buf[R_NLEVELS] = task, len(level_sums)
    if not level_sums:
        return buf
    S0 = level_sums[0][1]
    body = result_body(buf, len(level_sums), S0.shape, S0.dtype)
    for i, (level, S) in enumerate(level_sums):
        buf[R_LEVELS + i] = level
        if not np.shares_memory(body[i], S):
            body[i] = S
    return buf


def decode_result(buf, shape, dtype=np.int64):
    """(task, [(level, S view)]) from a RESULT buffer of a tile of `shape`."""
    n = int(buf[R_NLEVELS])
    body = result_body(buf, n, shape, dtype)
    return int(buf[R_TASK]), [(int(buf[R_LEVELS + i]), body[i]) for i in range(n)]


def job_message(bits, planes, k, schedule, tiling):
    """The pickled job description every worker receives once."""
    return {"version": VERSION, "bits": bits, "planes": planes, "k": k,
            "schedule": schedule, "tiling": (tiling.m, tiling.n, tiling.row_blocks,
                                             tiling.col_blocks)}


STOP_MESSAGE = np.zeros(1, np.int64)
