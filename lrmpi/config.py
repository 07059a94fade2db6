"""Every environment variable and tunable constant of lrmpi, in one table.

Each field of `Config` is one setting: its meaning and unit, its environment
variable (always `LRMPI_` + the field name in capitals) and its default; RULES
holds the values each may take. The environment is read once, when lrmpi is
imported (`Config.from_env`); a value of the wrong type or outside its range is
kept for `check()` (the CLI's first step, one line naming the variable and its
range, exit 2) and raised by every `config.get()`; code reads `config.get().<field>`. `configure(**changes)` replaces values at run time (tests,
benchmarks) and refuses unknown names, listing the valid ones.

The build switch `LRMPI_CYTHON_DEBUG=1` (bounds checks in the Cython wrappers,
`-O0 -g`) is read by setup.py at build time and is not part of this table.
"""
import contextlib
import dataclasses
import math
import os
from dataclasses import dataclass, fields

from lrmpi.errors import ConfigError

PREFIX = "LRMPI_"
# settings whose empty value means something of its own (the table says what): an
# empty LRMPI_CACHE_DIR turns the cache off; other empty variables stand for unset
EMPTY_IS_A_VALUE = ("cache_dir",)


@dataclass(frozen=True)
class Config:
    # --- kernels and logging ---
    kernel: str = ""             # kernel ISA: ref | avx2 | avx512 | amx; "" = the best this CPU has
    log_level: str = "INFO"      # level of the "lrmpi" logger: DEBUG, INFO, WARNING, ERROR
    stats_file: str = ""         # a matmul's root writes each rank's stage times and peak memory here (JSON)

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

    # --- inference bounds (nn.certify, nn.plan) ---
    bound_budget: float = 0.5    # the logit bound's products at most this share of its resolution's
    bound_f64: int = 0           # 1: the logit bound may estimate with float64 products too
    bound_retry: float = 2.0     # ... a second pass at most this share for samples it would certify

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
    test_slow_start_s: float = 0.0  # rank 0 waits this long (s) between the handshake and its job

    @classmethod
    def names(cls):
        return [f.name for f in fields(cls)]

    @classmethod
    def env_name(cls, name):
        return PREFIX + name.upper()

    @classmethod
    def from_env(cls, env=None):
        """A Config with every LRMPI_* variable set in `env` (os.environ) applied; a
        ConfigError naming the first variable that is not of its type and range."""
        env = os.environ if env is None else env
        values = {}
        for f in fields(cls):
            name = cls.env_name(f.name)
            raw = env.get(name)
            if raw is None or (raw == "" and f.name not in EMPTY_IS_A_VALUE):
                continue
            try:  # int() and float() take any script's digits: ASCII ones only here
                if f.type is not str and not raw.strip().isascii():
                    raise ValueError(raw)
                values[f.name] = f.type(raw.strip()) if f.type is not str else raw
            except ValueError:
                values[f.name] = raw  # not even of its type: _check says what it takes
            _check(f.name, values[f.name], f"{name}={raw!r}")
        return cls(**values)


class Rule:
    """The values a setting may take: a closed range of numbers (`lo`, `hi`; `open_lo`
    excludes lo) or a set of `choices` (strings, case-insensitive for `upper`)."""

    def __init__(self, lo=None, hi=None, open_lo=False, choices=None, upper=False):
        self.lo, self.hi, self.open_lo, self.choices, self.upper = lo, hi, open_lo, choices, upper

    def ok(self, v):
        if self.choices is not None:
            return isinstance(v, str) and (v.upper() if self.upper else v) in self.choices
        if self.lo is None:
            return isinstance(v, str)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return False
        if isinstance(v, float) and not math.isfinite(v):  # an int of 400 digits is finite
            return False                                     # (math.isfinite overflows)
        return (v > self.lo if self.open_lo else v >= self.lo) and v <= self.hi

    def text(self, typ):
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) if c else '"" (none)' for c in self.choices)
        if self.lo is None:
            return "a string"
        kind = "an integer" if typ is int else "a number"
        lo = f"> {self.lo:g}" if self.open_lo else f">= {self.lo:g}"
        return f"{kind} {lo} and <= {self.hi:g}" if typ is not int else \
            f"{kind} in {self.lo}..{self.hi}"


# the allowed values of every setting: a value outside them could hang a job (a
# queue of 0, a depth of 0), disable a safety limit (a negative timeout) or fail
# deep inside a run; each is refused at start with one line instead
RULES = {
    "kernel": Rule(choices=("", "ref", "avx2", "avx512", "amx")),
    "log_level": Rule(choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"), upper=True),
    "stats_file": Rule(),
    "depth": Rule(1, 1024),
    "lookahead": Rule(1, 1024),
    "backup_factor": Rule(1.0, 1e6),
    "backup_min_s": Rule(0.0, 1e6),
    "chunk_cols": Rule(1, 1 << 24),
    "tiles_per_worker": Rule(1, 1 << 16),
    "min_tile_rows": Rule(1, 1 << 24),
    "root_computes": Rule(choices=("yes", "no", "auto")),
    "stop_timeout_s": Rule(0.0, 1e6, open_lo=True),
    "hang_first_s": Rule(0.0, 1e6, open_lo=True),
    "hang_factor": Rule(1.0, 1e6),
    "hang_min_s": Rule(0.0, 1e6, open_lo=True),
    "writer_nice": Rule(-20, 19),
    "write_queue": Rule(1, 1024),
    "probe_timeout_s": Rule(0.0, 1e6, open_lo=True),
    "max_margin_s": Rule(0.0, 1e6),
    "margin_fraction": Rule(0.0, 0.9),
    "cache_dir": Rule(),
    "memory_fraction": Rule(0.0, 1.0, open_lo=True),
    "bound_row_block": Rule(1, 1 << 24),
    "bound_budget": Rule(0.0, 1e6),
    "bound_f64": Rule(0, 1),
    "bound_retry": Rule(0.0, 1e6),
    "slurm_timeout_s": Rule(0.0, 1e6, open_lo=True),
    "test_fail_rank": Rule(-1, 1 << 24),
    "test_fail_after": Rule(1, 1 << 30),
    "test_hang_rank": Rule(-1, 1 << 24),
    "test_slow_rank": Rule(-1, 1 << 24),
    "test_slow_s": Rule(0.0, 3600.0),
    "test_slow_factor": Rule(1.0, 1000.0),
    "test_slow_prepare_s": Rule(0.0, 3600.0),
    "test_slow_start_s": Rule(0.0, 3600.0),
}


def _check(name, value, shown=None):
    typ = {f.name: f.type for f in fields(Config)}[name]
    rule = RULES[name]
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if (typ is int and (isinstance(value, bool) or not isinstance(value, int))) \
            or (typ is float and isinstance(value, str)) or not rule.ok(value):
        shown = shown or f"{name}={value!r}"
        meaning = {r[0]: r[2] for r in table()}.get(Config.env_name(name), "")
        raise ConfigError(f"{shown}: expected {rule.text(typ)}"
                          + (f" ({meaning.rstrip('. ')})" if meaning else ""))


def check():
    """ConfigError (one line, naming the setting and its range) if an LRMPI_* variable
    is not valid; the CLI calls this first, on every rank."""
    if _error is not None:
        raise _error


def defer(exc):
    """Keep `exc` (a setting found unusable at import, e.g. a kernel ISA this CPU lacks)
    for check() to raise, instead of failing the import with a traceback."""
    global _error
    _error = _error or exc


def get():
    """The settings in force (ConfigError if the environment holds an invalid one)."""
    check()
    return _current


def peek():
    """The settings in force without the check (at import time: the defaults stand in
    for an invalid environment until check() reports it)."""
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
    for name, value in changes.items():
        _check(name, value)
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


try:
    _current, _error = Config.from_env(), None
except ConfigError as exc:  # raised by check()/get(), inside the CLI's one-line errors
    _current, _error = Config(), exc
