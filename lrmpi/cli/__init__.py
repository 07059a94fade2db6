"""Command line: `lrmpi <command>` / `python -m lrmpi <command>`.

Commands are plain functions registered with @command (mpi4py.bench style), one
module per group: jobs (matmul, infer), demo, tools (inspect, pack, info), bench,
jobscript.
Errors lrmpi raises on purpose print one line and exit non-zero; --debug shows
the traceback.
"""
import argparse
import errno
import os
import signal
import sys

from lrmpi import errors
from lrmpi.log import setup as setup_logging

from lrmpi.cli.commands import (  # noqa: F401  (the exit codes: lrmpi.cli.EXIT_*)
    COMMANDS, EXIT_DEADLINE, EXIT_ERROR, EXIT_INTERRUPTED, EXIT_NOTHING, EXIT_OK, EXIT_USAGE,
    VALUE_OPTIONS, _Parser, _QuietParser, command, exit_code, parser)


def _joined(argv):
    """["--deadline", "-5s"] -> ["--deadline=-5s"] for options that take a value."""
    out, i = [], 0
    while i < len(argv):
        if argv[i] in VALUE_OPTIONS and i + 1 < len(argv) and argv[i + 1].startswith("-") \
                and argv[i + 1][1:2].isdigit():
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def _top_help():
    width = max(len(n) for n in COMMANDS)
    lines = [f"  {n:<{width}}  {(f.__doc__ or '').strip().splitlines()[0]}"
             for n, f in sorted(COMMANDS.items())]
    return ("usage: lrmpi [--version] COMMAND [OPTIONS] [--debug]\n\n"
            "Layered-resolution computation over MPI: results in layers of increasing\n"
            "numeric resolution, each checkpointed before the deadline.\n\ncommands:\n"
            + "\n".join(lines) + "\n\n`lrmpi COMMAND --help` describes a command's options; "
            "--debug shows tracebacks.\n")


def main(argv=None):
    """Run one command; returns the exit code (see README: 0, 1, 2, 3, 4, 130)."""
    from lrmpi.cli import bench, demo, jobs, jobscript, tools  # noqa: F401  (registers them)
    from lrmpi.parallel.comm import env_rank
    argv = sys.argv[1:] if argv is None else list(argv)
    root = env_rank() == 0
    _Parser[0] = argparse.ArgumentParser if root else _QuietParser
    debug = "--debug" in argv
    try:  # every LRMPI_* setting, before anything reads one
        from lrmpi import config
        config.check()
        refused = None
    except errors.ConfigError as exc:
        refused = str(exc)
    # the ranks' environments and commands may differ (MPMD, nodes): under a launcher,
    # every rank learns every rank's before any returns (or raises)
    from lrmpi.jobs.deadline import held
    from lrmpi.parallel.comm import handshake
    found = handshake(argv[0] if argv else "", refused, stopped=held)
    if found is not None:
        if debug and refused is not None:
            raise errors.ConfigError(refused)
        if root:
            where = "" if found[0] == 0 else f"rank {found[0]}: "
            print(f"lrmpi: error: {where}{found[1]}", file=sys.stderr)
        return EXIT_USAGE if root else EXIT_OK  # rank 0's code is the job's (below)
    setup_logging()
    if not argv or argv[0] in ("-h", "--help"):
        if root:
            sys.stdout.write(_top_help())
        return EXIT_OK if argv else EXIT_USAGE
    if argv[0] == "--version":
        from lrmpi._version import __version__
        if root:
            print(f"lrmpi {__version__}")
        return EXIT_OK
    name, rest = argv[0], _joined(argv[1:])
    if name not in COMMANDS:
        if root:
            print(f"lrmpi: error: invalid choice {name!r}: expected one of "
                  f"{', '.join(sorted(COMMANDS))} (lrmpi --help)", file=sys.stderr)
        return EXIT_USAGE
    debug = "--debug" in rest
    job = name in JOB_COMMANDS
    if job:
        from lrmpi.jobs import deadline
        from lrmpi.parallel.launcher import launcher_size
        # held only where peers wait on this rank (alone, Ctrl-C before the job, e.g.
        # in demo's reference product, ends the process at once as it always did)
        sigint = deadline.hold_interrupt() if launcher_size()[1] > 1 else None
        deadline.test_slow_start(root)
    try:
        return COMMANDS[name](rest)
    except errors.LrmpiError as exc:
        if debug:
            raise
        if root:  # one line, even when a library's message (HDF5's) spans several
            print("lrmpi: error: " + " ".join(str(exc).split()), file=sys.stderr)
        elif isinstance(exc, (errors.LaunchError, errors.ConfigError)):
            # Each rank found the same (its own world, or the same options): launcher
            # rank 0's exit is the job's status. A non-zero exit here could make Open
            # MPI's launcher kill rank 0 before it has printed the one line that says why.
            return EXIT_OK
        return EXIT_USAGE if isinstance(exc, errors.ConfigError) else EXIT_ERROR
    except KeyboardInterrupt:
        if root:
            print("lrmpi: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        if job and sigint is not None:
            deadline.release_interrupt(sigint)


class _TolerantStream:
    """A stdout/stderr that drops writes once its reader is gone (EPIPE): a job's
    output piped into `head` must not end the job."""

    def __init__(self, stream):
        self._stream, self._closed = stream, False

    def write(self, text):
        if not self._closed:
            try:
                return self._stream.write(text)
            except (BrokenPipeError, ValueError, OSError):
                self._closed = True
        return len(text)

    def flush(self):
        if not self._closed:
            try:
                self._stream.flush()
            except (BrokenPipeError, ValueError, OSError):
                self._closed = True

    def __getattr__(self, name):
        return getattr(self._stream, name)


JOB_COMMANDS = ("matmul", "infer", "demo")
_WRITE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO)


def _or_null(stream):
    """The stream, or /dev/null where the process started with that descriptor closed
    (`>&-`, some daemons): Python then has no sys.stdout/sys.stderr, and the job must
    run and exit as usual. Opening it also takes the lowest free descriptor (the closed
    1 or 2), so no file the job opens later lands there."""
    return stream if stream is not None else open(os.devnull, "w")


def console():
    """Console-script entry point: exit with main()'s status; an unexpected
    exception on any rank ends the whole MPI job (as mpi4py.run does)."""
    job = len(sys.argv) > 1 and sys.argv[1] in JOB_COMMANDS
    if job:
        from lrmpi.jobs import deadline
        deadline.hold_stop_signals()  # a TERM/USR1/USR2 before or after the job: no kill
    if hasattr(signal, "SIGPIPE"):
        if job:
            # a closed stdout/stderr never ends a job: writes fail quietly instead
            signal.signal(signal.SIGPIPE, signal.SIG_IGN)
            sys.stdout, sys.stderr = _TolerantStream(_or_null(sys.stdout)), \
                _TolerantStream(_or_null(sys.stderr))
        else:  # `lrmpi inspect x.h5 | head` ends quietly, like Unix tools
            signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    try:
        code = main()
        sys.stdout.flush()  # here, not at exit: a full disk is then one line, below
    except SystemExit:
        raise
    except OSError as exc:
        if exc.errno not in _WRITE_ERRORS or "--debug" in sys.argv:
            raise
        # what the command printed could not be written (stdout on a full disk, or
        # /dev/full): one line, and nothing more tried on that stream
        sys.stdout = open(os.devnull, "w")
        print(f"lrmpi: error: cannot write the output: {exc.strerror}", file=sys.stderr)
        code = EXIT_ERROR
    except KeyboardInterrupt:  # Ctrl-C while starting (imports, MPI_Init): one line, 130,
        # every rank ends (one that has not started its command yet cannot be waited for)
        from lrmpi.parallel.comm import abort, env_rank
        if env_rank() == 0:
            print("lrmpi: interrupted", file=sys.stderr)
        abort(EXIT_INTERRUPTED)
        code = EXIT_INTERRUPTED
    except BaseException:
        import traceback
        traceback.print_exc()
        from lrmpi.parallel.comm import abort
        abort(1)
        code = EXIT_ERROR
    if job:
        deadline.ignore_stop_signals()  # the job has ended: its exit code stands
    sys.exit(code)
