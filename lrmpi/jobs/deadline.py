"""Wall-clock deadlines (--deadline, SLURM) and stop signals."""
import datetime as _dt
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

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)([smhd]))+$")
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_CLOCK = re.compile(r"^(?:(\d+)-)?(\d+):(\d{2})(?::(\d{2}))?$")  # SLURM time: [D-]H:MM[:SS]


def parse(text, now=None):
    """Absolute epoch seconds of a deadline given as a duration or a time.

    Durations: "90", "90s", "5m", "1h30m", "1-00:00:00" / "2:30:00" (SLURM style).
    Times: ISO 8601 ("2026-11-27T18:00", with or without offset; local if
    none) or "@EPOCH".
    """
    now = time.time() if now is None else now
    s = str(text).strip()
    if s.startswith("-"):
        raise ConfigError(f"--deadline {text!r}: a deadline must lie ahead (a positive "
                          "duration such as 90s, or a later time)")
    try:
        if s.startswith("@"):
            at = float(s[1:])
        elif re.fullmatch(r"\d+(?:\.\d+)?", s):
            at = now + float(s)
        elif _DURATION.match(s):
            at = now + sum(float(v) * _UNITS[u] for v, u in _PART.findall(s))
        elif _CLOCK.match(s):
            d, h, mi, se = _CLOCK.match(s).groups()
            at = now + int(d or 0) * 86400 + int(h) * 3600 + int(mi) * 60 + int(se or 0)
        else:
            at = _dt.datetime.fromisoformat(s).timestamp()
    except (ValueError, OverflowError):
        raise ConfigError(f"--deadline {text!r}: expected a duration (90s, 5m, 1h30m, "
                          "2:30:00) or a time (2026-11-27T18:00, @EPOCH)") from None
    if not at > now:
        raise ConfigError(f"--deadline {text!r} is already past")
    return at


class Deadline:
    """When to stop: `at` (epoch seconds or None) minus a safety margin."""

    def __init__(self, at=None, margin=None, start=None):
        self.start = time.time() if start is None else start
        self.at = at
        if margin is None:
            c = config.get()
            margin = 0.0 if at is None else min(c.max_margin_s,
                                                c.margin_fraction * (at - self.start))
        if margin < 0:
            raise ConfigError(f"--margin must be >= 0, got {margin}")
        self.margin = margin

    @classmethod
    def resolve(cls, text=None, margin=None):
        """From --deadline, else from SLURM, else none; the earlier of the two wins."""
        at = parse(text) if text else None
        end = slurm.end_time()
        if end is not None:
            logger.info("lrmpi: SLURM job ends at %s", time.strftime("%H:%M:%S",
                                                               time.localtime(end)))
            at = end if at is None else min(at, end)
        return cls(at, margin)

    def remaining(self):
        return float("inf") if self.at is None else self.at - self.margin - time.time()

    def expired(self):
        return self.remaining() <= 0


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
        return self

    def _handle(self, signum, frame):
        self.received = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False
