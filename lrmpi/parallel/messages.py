"""What the messages between the ranks carry: the objects protocol.py sends and
receives (it alone knows their tags and layouts)."""
from dataclasses import dataclass
from enum import IntEnum

import numpy as np


class Operand(IntEnum):
    A = 0
    B = 1
    RA = 2   # residues of A's rows modulo one CRT modulus (plane = modulus index)
    RB = 3   # residues of B's columns


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
    """CRT: what the CRT resolution's tasks need besides their residue blocks."""
    moduli: int              # crt.plan(moduli) on both sides
    ea: np.ndarray           # int32 (m,): exponents of A's rows
    eb: np.ndarray           # int32 (n,): exponents of B's columns
    bcast: tuple = ()        # moduli indices l whose B residues (RB, all blocks) come by Ibcast


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
