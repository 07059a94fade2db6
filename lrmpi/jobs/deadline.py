"""Wall-clock deadlines (--deadline, SLURM) and stop signals."""
import datetime as _dt
import math
import re
import signal
import time

from lrmpi import config
from lrmpi.errors import ConfigError
from lrmpi.jobs import slurm
from lrmpi.log import logger

# SLURM's --signal, a scheduler's TERM, and Ctrl-C (SIGINT reaches every process of
# the foreground group under mpiexec): all are a stop, decided by the root
STOP_SIGNALS = ("SIGTERM", "SIGUSR1", "SIGUSR2", "SIGINT")

_NUM = r"([0-9]+(?:\.[0-9]+)?)"  # ASCII digits only (\d takes any script's: '٣')
# durations with units, largest first, each at most once: 90s, 5m, 1h30m, 2d12h, and
# with blanks between the parts as people write them: "1h 30m" (not inside one: "5 m")
_UNITS = re.compile(rf"^(?:{_NUM}d)?\s*(?:{_NUM}h)?\s*(?:{_NUM}m)?\s*(?:{_NUM}s)?$")
# SLURM's --time colon and day forms (days, hours, minutes, seconds; a bare number is
# NOT minutes here: it stays seconds, as documented)
_SLURM = [(re.compile(r"^([0-9]+):([0-9]+)$"), (60, 1)),                   # M:S
          (re.compile(r"^([0-9]+):([0-9]+):([0-9]+)$"), (3600, 60, 1)),    # H:M:S
          (re.compile(r"^([0-9]+)-([0-9]+)$"), (86400, 3600)),              # D-H
          (re.compile(r"^([0-9]+)-([0-9]+):([0-9]+)$"), (86400, 3600, 60)),  # D-H:M
          (re.compile(r"^([0-9]+)-([0-9]+):([0-9]+):([0-9]+)$"),
           (86400, 3600, 60, 1))]                                             # D-H:M:S
LONGEST = 100 * 366 * 86400.0  # a deadline further ahead is a typo, not a plan
GRAMMAR = ("a duration (90 = 90 seconds, 90s, 5m, 1h30m or 1h 30m; SLURM's M:S, H:M:S, D-H, "
           "D-H:M, D-H:M:S) or a time (2026-11-27T18:00, @EPOCH)")


def parse(text, now=None):
    """Absolute epoch seconds of a deadline given as a duration or a time.

    Durations: a bare number of seconds ("90", "1.5": seconds, not SLURM's minutes),
    units ("90s", "5m", "1h30m", "1d12h"), SLURM's colon and day forms ("M:S",
    "H:M:S", "D-H", "D-H:M", "D-H:M:S"). Times: ISO 8601 ("2026-11-27T18:00", with
    or without offset; local if none) or "@EPOCH". Anything else (an empty string,
    a negative or non-finite value, a time already past) is a ConfigError.
    """
    now = time.time() if now is None else now
    s = str(text).strip()
    if s.startswith("-"):
        raise ConfigError(f"--deadline {text!r}: a deadline must lie ahead (a positive "
                          "duration such as 90s, or a later time)")
    at = _parse(s, now)
    if at is None or not math.isfinite(at):
        raise ConfigError(f"--deadline {text!r}: expected {GRAMMAR}")
    if not at > now:
        raise ConfigError(f"--deadline {text!r} is already past")
    if at - now > LONGEST:
        raise ConfigError(f"--deadline {text!r} lies more than 100 years ahead")
    return at


def _parse(s, now):
    if not s:
        return None
    if re.fullmatch(r"@[0-9]+(?:\.[0-9]+)?", s):
        return float(s[1:])
    if re.fullmatch(_NUM, s):
        return now + float(s)
    m = _UNITS.match(s)
    if m and any(m.groups()):
        return now + sum(float(v) * u for v, u in zip(m.groups(), (86400, 3600, 60, 1)) if v)
    for pattern, units in _SLURM:
        m = pattern.match(s)
        if m:
            return now + sum(int(v) * u for v, u in zip(m.groups(), units))
    if not re.match(r"^[0-9]{4}-?[0-9]{2}", s):  # ISO 8601 begins with the year
        return None
    try:
        return _dt.datetime.fromisoformat(s).timestamp()
    except (ValueError, OverflowError, OSError):
        return None


class Deadline:
    """When to stop: `at` (epoch seconds or None) minus a safety margin."""

    def __init__(self, at=None, margin=None, start=None):
        self.start = time.time() if start is None else start
        self.at = at
        if margin is None:
            c = config.get()
            # a deadline already past (a SLURM job's end time) leaves no margin to keep
            margin = 0.0 if at is None else max(0.0, min(c.max_margin_s,
                                                         c.margin_fraction * (at - self.start)))
        elif not math.isfinite(margin) or margin < 0:
            raise ConfigError(f"--margin must be a number of seconds >= 0, got {margin}")
        elif at is not None and self.start < at <= self.start + margin:
            raise ConfigError(f"--margin {margin:g} leaves no time before the deadline "
                              f"({at - self.start:.1f} s away)")
        self.margin = margin

    @classmethod
    def resolve(cls, text=None, margin=None):
        """From --deadline, else from SLURM, else none; the earlier of the two wins."""
        at = parse(text) if text is not None else None
        end = slurm.end_time()
        if end is not None:
            logger.info("lrmpi: SLURM job ends at %s", time.strftime("%H:%M:%S",
                                                               time.localtime(end)))
            if end <= time.time():
                logger.warning("lrmpi: the SLURM job's end time has passed: stopping at once")
            at = end if at is None else min(at, end)
        return cls(at, margin)

    def remaining(self):
        return float("inf") if self.at is None else self.at - self.margin - time.time()

    def expired(self):
        return self.remaining() <= 0


_held = []  # stop signals a job command received outside any job (hold_stop_signals)
# a scheduler's signals, held outside a job; Ctrl-C keeps Python's own handling there
# (an interactive user must be able to end a process blocked before or after its job)
HELD_SIGNALS = ("SIGTERM", "SIGUSR1", "SIGUSR2")


def hold_stop_signals():
    """For the job commands (the CLI, before anything else): a scheduler's stop signal
    outside a job's StopSignals is recorded instead of killing the process. One that
    lands before the job starts stops it as soon as it starts (the job file says so);
    one that lands after the job has ended changes nothing: the result is on disk and
    the exit code is the job's (SLURM's USR1 warning to a job finishing just before its
    limit killed it: 138, or 143 for a TERM, with a complete result)."""
    _handle_held(_hold)


def _hold(signum, frame):
    _held.append(signal.Signals(signum).name)


def hold_interrupt():
    """For a job command between the ranks' handshake and the end of its job: Ctrl-C
    (SIGINT, which a launcher forwards to every rank) is recorded like the scheduler's
    signals, so that it ends the job through the root's STOP wherever each rank is. A
    rank that raised KeyboardInterrupt in that window returned without the others: a
    worker left waiting for a root that had gone (a hang), or a root waiting for a
    worker that had (found by CI, 3 ranks on 2 busy cores). Held before its job starts,
    it stops the job at its first check (the job file says so). Returns the handler
    it replaced (for release_interrupt)."""
    previous = signal.signal(signal.SIGINT, _hold)
    return signal.SIG_DFL if previous is None else previous


def test_slow_start(root):
    """Only in lrmpi's own tests (config test_slow_start_s): rank 0 waits up to that long
    between the handshake and its job, a held stop signal ending the wait (the job then
    starts and stops at its first check)."""
    end = time.monotonic() + (config.get().test_slow_start_s if root else 0.0)
    if end > time.monotonic():
        logger.info("lrmpi: (test_slow_start_s) waiting before the job")
    while time.monotonic() < end and not _held:
        time.sleep(0.05)


def release_interrupt(previous):
    """Ctrl-C back to `previous` (what hold_interrupt replaced: Python's
    KeyboardInterrupt, or an inherited SIG_IGN) once the job command has returned; one
    held after the job ended is dropped (the result is on disk and the exit code
    stands, as for a TERM then)."""
    signal.signal(signal.SIGINT, previous)
    while "SIGINT" in _held:
        _held.remove("SIGINT")


def held():
    """The stop signals held so far (outside a job), oldest first."""
    return list(_held)


def ignore_stop_signals():
    """The job command is ending (its exit code decided): a scheduler's stop signals are
    ignored from here to the exit. Python's finalization puts its own handlers
    (hold_stop_signals') back to the default, which kills; an ignored signal stays
    ignored. Ctrl-C still ends the process (a finalization that hangs on a dead peer)."""
    _handle_held(signal.SIG_IGN)


def _handle_held(handler):
    for name in HELD_SIGNALS:
        sig = getattr(signal, name, None)  # (Windows has no SIGUSR1)
        if sig is not None:
            signal.signal(sig, handler)


class StopSignals:
    """Turns SIGTERM/SIGUSR1/SIGUSR2/SIGINT into a flag the root polls between steps.

    On the other ranks (`root=False`) the flag is never read: they wait for the
    root's STOP, so a signal to every rank ends the job once, in order.
    """

    def __init__(self, root=True):
        self.root = root
        self.received = None
        self._old = {}

    def __enter__(self):
        for name in STOP_SIGNALS:
            sig = getattr(signal, name, None)
            if sig is not None:
                self._old[sig] = signal.signal(sig, self._handle)
        if _held:  # one that came before the job: it stops the job at its first check
            self.received = _held[0]
            _held.clear()
        return self

    def _handle(self, signum, frame):
        self.received = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False
