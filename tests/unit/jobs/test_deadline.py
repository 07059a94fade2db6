"""The deadline grammar (issue #24 D13-D15): SLURM's colon and day forms, durations with
units, absolute times, bare numbers as seconds; everything else one ConfigError."""
import math
import time

import pytest

from lrmpi.errors import ConfigError
from lrmpi.jobs import deadline
from lrmpi.jobs.deadline import Deadline, parse

NOW = 1_800_000_000.0


@pytest.mark.parametrize("text, seconds", [
    ("90", 90), ("1.5", 1.5), (" 90 ", 90),              # a bare number: seconds
    ("90s", 90), ("5m", 300), ("1h30m", 5400), ("2d12h", 216000), ("1h0m5s", 3605),
    ("1h 30m", 5400), ("2d 12h", 216000), ("1h 0m 5s", 3605),  # blanks between parts
    ("0:03", 3), ("3:00", 180), ("90:00", 5400),         # SLURM M:S
    ("2:30:00", 9000), ("0:0:7", 7),                     # H:M:S
    ("1-2", 93600), ("1-2:30", 95400), ("1-0:0:9", 86409),  # D-H, D-H:M, D-H:M:S
])
def test_durations(text, seconds):
    assert parse(text, NOW) == NOW + seconds


def test_absolute_times():
    import datetime as dt
    assert parse(f"@{NOW + 60:.0f}", NOW) == NOW + 60
    assert parse("@1800000090.5", NOW) == NOW + 90.5
    want = dt.datetime(2027, 1, 16, 8, tzinfo=dt.timezone.utc).timestamp()  # NOW + 1 day
    assert parse("2027-01-16T08:00+00:00", NOW) == want == NOW + 86400
    assert parse("2027-01-16T08:00", NOW) == dt.datetime(2027, 1, 16, 8).timestamp()


@pytest.mark.parametrize("text, message", [
    ("", "expected a duration"), ("   ", "expected a duration"),
    ("soon", "expected a duration"), ("inf", "expected a duration"),
    ("nan", "expected a duration"), ("1e999", "expected a duration"),
    ("5x", "expected a duration"), ("30m1h", "expected a duration"), ("1::2", "expected"),
    ("1h 30", "expected a duration"), ("1 30", "expected a duration"),
    ("5 m", "expected a duration"), ("1 h 30 m", "expected a duration"),  # inside a part
    ("\u0663", "expected a duration"), ("\u0661:\u0662", "expected"),  # Arabic-Indic digits
    ("@", "expected a duration"), ("@abc", "expected a duration"), ("1:2:3:4", "expected"),
    ("-5s", "must lie ahead"), ("-1", "must lie ahead"),
    ("0", "already past"), ("0s", "already past"), ("0:00", "already past"),
    ("2001-01-01T00:00", "already past"), ("@1", "already past"),
    ("99999999999999999999", "more than 100 years"),
])
def test_everything_else_is_one_clear_error(text, message):
    with pytest.raises(ConfigError, match=message) as exc:
        parse(text, NOW)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("margin", [math.nan, math.inf, -1.0])
def test_a_margin_that_is_not_a_finite_number_of_seconds_is_refused(margin):
    """D13: --margin nan disabled the deadline."""
    with pytest.raises(ConfigError, match="--margin must be a number of seconds >= 0"):
        Deadline(time.time() + 3, margin)


def test_a_margin_that_leaves_no_time_is_refused():
    with pytest.raises(ConfigError, match="--margin 10 leaves no time"):
        Deadline(time.time() + 3, 10.0)


def test_a_slurm_end_time_already_past_stops_at_once(monkeypatch):
    """D14: it was '--margin must be >= 0, got -10.15' although no --margin was given."""
    monkeypatch.setenv("SLURM_JOB_END_TIME", str(int(time.time()) - 10))
    d = Deadline.resolve()
    assert d.margin == 0 and d.expired()


def test_a_slurm_end_time_that_is_not_epoch_seconds_is_refused(monkeypatch):
    """D14: SLURM_JOB_END_TIME=abc was silently no deadline."""
    monkeypatch.setenv("SLURM_JOB_END_TIME", "abc")
    with pytest.raises(ConfigError, match="SLURM_JOB_END_TIME='abc': expected the job's end"):
        Deadline.resolve()


def test_the_earlier_of_deadline_and_slurm_end_wins(monkeypatch):
    end = int(time.time()) + 3600
    monkeypatch.setenv("SLURM_JOB_END_TIME", str(end))
    assert Deadline.resolve("5m").at < end
    assert Deadline.resolve("2h").at == end


def test_an_empty_deadline_is_not_none():
    """D15: --deadline "" silently meant no deadline."""
    with pytest.raises(ConfigError, match="expected a duration"):
        Deadline.resolve("")
    assert deadline.GRAMMAR.startswith("a duration (90 = 90 seconds")
