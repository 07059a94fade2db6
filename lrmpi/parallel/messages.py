"""What the messages between the ranks carry: the objects protocol.py sends and
receives (it alone knows their tags and layouts)."""
from dataclasses import dataclass
from enum import IntEnum

import numpy as np


class Operand(IntEnum):
    A = 0
    B = 1
    AF = 2   # A's rows of a block in float64 (plane 0), and B's columns of a block in
    BF = 3   # float64, (k, columns): the CRT resolution's residues are taken from them


@dataclass(frozen=True)
class Job:
    """JOB: what every worker needs to know, once (parallel.plan.Plan.job builds it)."""
    bits: int
    planes: int
    k: int
    schedule: tuple          # resolutions, each a tuple of (p, q) pairs
    tiling: tuple            # (m, n, row_blocks, col_blocks): partition.Tiling's fields
    bcast: tuple = ()        # planes q of B (whole: every column block) by Ibcast, in order
    crt: int = 0             # moduli of the CRT resolution after the layers (0: none)
    # results written by the ranks (jobs.checkpoint.rank_files): (checkpoint path, job
    # id, fsync), and the row and column exponents to decode C with; () : the root writes
    write: tuple = ()
    exps: tuple = ()


@dataclass(frozen=True)
class CrtSetup:
    """CRT: what the CRT resolution's tasks need besides their float64 blocks (from
    which the rank computing a task takes the residues)."""
    moduli: int              # crt.plan(moduli) on both sides
    ea: np.ndarray           # int32 (m,): exponents of A's rows
    eb: np.ndarray           # int32 (n,): exponents of B's columns
    bcast: tuple = ()        # (0,): B in float64, whole (every BF block), comes by Ibcast


@dataclass(frozen=True)
class Work:
    """WORK: task `task` is (resolution res, tile); its PLANE messages follow, one per key."""
    task: int
    res: int
    tile: int
    keys: list               # (operand, block, plane)


@dataclass(frozen=True)
class Seal:
    """SEAL: resolution res has every tile: commit this rank's file of it."""
    res: int


class Stop:
    """STOP: end the job (answered by BYE once a job started)."""


@dataclass
class FarmTask:
    """TASK: a task of a task farm (inference: a batch of samples at a resolution)."""
    id: int
    payload: object      # what the farm's compute function receives


@dataclass
class FarmResult:
    """DONE: a farm task's result."""
    id: int
    value: object        # what the compute function returned
    seconds: float       # its compute time


class StreamCommand:
    LAYERED = "layered"
    ONESHOT = "oneshot"
    DONE = "done"
