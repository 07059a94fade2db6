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

# The public API is imported on first use (PEP 562): `lrmpi infer` needs neither the
# matmul job nor HDF5 on its workers, and every rank pays for what it imports
# before the first product (python -X importtime).
_LAZY = {"run_matmul": "lrmpi.jobs.matmul", "load_result": "lrmpi.jobs.matmul",
         "LayeredMatmul": "lrmpi.numerics.layered", "Resolution": "lrmpi.numerics.layered",
         "layered_matmul": "lrmpi.numerics.layered", "ORDERS": "lrmpi.numerics.schedule"}


def __getattr__(name):
    if name in _LAZY:
        import importlib
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lrmpi' has no attribute {name!r}")


__all__ = [
    "LayeredMatmul", "Resolution", "layered_matmul", "run_matmul", "load_result", "ORDERS",
    "LrmpiError", "ConfigError", "InputError", "CheckpointError", "WorkerError",
    "__version__",
]
