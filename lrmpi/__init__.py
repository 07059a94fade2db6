"""lrmpi: layered-resolution (successive refinement) computation over MPI.

Data flow of a layered matrix product C = A B::

    A (m x k, float) ──encode──▶ planes A_1 … A_s  (int8, 2^e per row, most significant first)
    B (k x n, float) ──encode──▶ planes B_1 … B_s  (int8, 2^e per column)
                                   │
              resolution r: pairs (p, q) of the schedule (antidiagonal / pairwise / lshape)
                                   ▼
          int8 × int8 → int32 kernels (exact)  ──▶  level sums S_l (int32/64, exact)
                                   ▼
          exact multi-limb accumulator N += S_l 2^shift
                                   ▼
          C_r = fl(N · 2^(e_A + e_B − 2bs))   one correct rounding,  + rigorous error bound

Public API: `layered_matmul` / `LayeredMatmul` (one process, an iterator over
resolutions); `run_matmul` (every rank of an MPI job, checkpoints, deadlines);
`load_result` (read a checkpoint).
"""
from lrmpi import blas_threads

blas_threads.apply()  # before anything imports numpy (see blas_threads)

from lrmpi._version import __version__  # noqa: E402
from lrmpi.errors import CheckpointError, ConfigError, InputError, LrmpiError, WorkerError  # noqa: E402
from lrmpi.jobs.matmul import load_result, run_matmul  # noqa: E402
from lrmpi.numerics.layered import LayeredMatmul, Resolution, layered_matmul  # noqa: E402
from lrmpi.numerics.schedule import ORDERS  # noqa: E402

__all__ = [
    "LayeredMatmul", "Resolution", "layered_matmul", "run_matmul", "load_result", "ORDERS",
    "LrmpiError", "ConfigError", "InputError", "CheckpointError", "WorkerError",
    "__version__",
]
