"""Every environment variable and tunable constant of lrmpi, in one table.

Each field of `Config` is one setting: its meaning and unit, its environment
variable (always `LRMPI_` + the field name in capitals) and its default. The
environment is read once, when lrmpi is imported (`Config.from_env`); code reads
`config.get().<field>`. `configure(**changes)` replaces values at run time (tests,
benchmarks) and refuses unknown names, listing the valid ones.

The build switch `LRMPI_CYTHON_DEBUG=1` (bounds checks in the Cython wrappers,
`-O0 -g`) is read by setup.py at build time and is not part of this table.
"""
import contextlib
import dataclasses
import os
from dataclasses import dataclass, fields

from lrmpi.errors import ConfigError

PREFIX = "LRMPI_"


@dataclass(frozen=True)
class Config:
    # --- kernels and logging ---
    kernel: str = ""             # kernel ISA: ref | avx2 | avx512 | amx; "" = the best this CPU has
    log_level: str = "INFO"      # level of the "lrmpi" logger: DEBUG, INFO, WARNING, ERROR

    # --- matmul scheduling (parallel.scheduler, parallel.partition, parallel.worker) ---
    depth: int = 2               # tasks outstanding per worker (its next one is always queued)
    lookahead: int = 2           # resolutions whose tasks may be in flight at once
    backup_factor: float = 2.0   # a task running this many median task times is recomputed ...
    backup_min_s: float = 0.05   # ... on an idle worker, once it ran at least this long (s)
    chunk_cols: int = 1024       # a worker computes a task in chunks of this many columns of C
    tiles_per_worker: int = 4    # C is cut into about this many tiles per worker
    min_tile_rows: int = 64      # ... of at least this many rows
    root_computes: str = "auto"  # rank 0 computes tasks too: yes / no / auto (ranks <= cores)

    # --- failure detection ---
    stop_timeout_s: float = 10.0  # workers that do not acknowledge STOP by then: MPI_Abort (s)
    hang_first_s: float = 600.0   # a rank silent this long on its first task is hung (s) ...
    hang_factor: float = 20.0     # ... later, this many times the longest task so far ...
    hang_min_s: float = 30.0      # ... but at least this long (s); --worker-timeout overrides

    # --- checkpoint writing (jobs.checkpoint) ---
    writer_nice: int = 0         # niceness of the checkpoint writer thread (Linux, per thread)
    write_queue: int = 2         # resolutions waiting for the disk at most; more blocks the job
    probe_timeout_s: float = 60.0  # reading an untrusted HDF5 file in a child process: limit (s)

    # --- deadlines (jobs.deadline) ---
    max_margin_s: float = 10.0   # time kept free before the deadline, at most (s) ...
    margin_fraction: float = 0.1  # ... and at most this share of the time available

    # --- per-model caches (lrmpi.cache: imported graphs, norms, packed weights) ---
    cache_dir: str = "~/.cache/lrmpi"  # folder of per-model work kept across runs ("" : none)

    # --- inputs (jobs.inputs) and bounds (numerics.bounds) ---
    memory_fraction: float = 0.5  # refuse operands whose float64 copy needs more of the RAM
    bound_row_block: int = 32    # rows of C per block of the bound GEMM (temporary in L2)

    # --- SLURM (jobs.slurm) ---
    slurm_timeout_s: float = 10.0  # squeue / scontrol calls give up after this long (s)

    # --- fault injection, for lrmpi's own tests (parallel.faults); -1 = off ---
    test_fail_rank: int = -1     # this worker raises on its test_fail_after-th task
    test_fail_after: int = 1     # ... (also the task on which test_hang_rank hangs)
    test_hang_rank: int = -1     # this worker hangs (sleeps an hour) on that task
    test_slow_rank: int = -1     # this worker is slow: sleeps test_slow_s before each task ...
    test_slow_s: float = 0.0     # ... (s) ...
    test_slow_factor: float = 1.0  # ... and spins (factor - 1) x each task's compute time after it
    test_slow_prepare_s: float = 0.0  # an inference job's preparation takes this much longer (s)

    @classmethod
    def names(cls):
        return [f.name for f in fields(cls)]

    @classmethod
    def env_name(cls, name):
        return PREFIX + name.upper()

    @classmethod
    def from_env(cls, env=None):
        """A Config with every LRMPI_* variable set in `env` (os.environ) applied."""
        env = os.environ if env is None else env
        values = {}
        for f in fields(cls):
            raw = env.get(cls.env_name(f.name))
            if raw is None or raw == "":
                continue
            try:
                values[f.name] = f.type(raw) if f.type is not str else raw
            except ValueError:
                raise ConfigError(f"{cls.env_name(f.name)}={raw!r}: expected a "
                                  f"{f.type.__name__}") from None
        return cls(**values)


_current = Config.from_env()


def get():
    """The settings in force."""
    return _current


_appliers = {}  # setting -> function that makes a new value take effect


def on_change(name, apply):
    """`apply(value)` makes setting `name` take effect when configure() changes it (a
    setting read once, at import: numerics.kernels registers the kernel ISA's)."""
    _appliers[name] = apply


def _apply(values):
    for name, value in values.items():
        if name in _appliers:
            _appliers[name](value)


@contextlib.contextmanager
def configure(**changes):
    """Replace some settings for the duration of a `with` block (those read once,
    at import, take effect through their on_change function, or are refused by it)."""
    global _current
    unknown = sorted(set(changes) - set(Config.names()))
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(unknown)}; valid: "
                          + ", ".join(Config.names()))
    old, new = _current, dataclasses.replace(_current, **changes)
    _apply(changes)
    _current = new
    try:
        yield _current
    finally:
        _current = old
        _apply({name: getattr(old, name) for name in changes})


def table():
    """(env variable, default, meaning) for every setting: the README's table."""
    import inspect
    import re
    src = inspect.getsource(Config)
    rows = []
    for f in fields(Config):
        m = re.search(rf"^\s*{f.name}: \w+ = [^#\n]*#\s*(.*)$", src, re.M)
        rows.append((Config.env_name(f.name), f.default, m.group(1).strip() if m else ""))
    return rows
