"""The command registry and what every command module shares: @command, the
parsers, the exit codes. (The command modules import this, and cli/__init__ imports
them: imports run one way.)"""
import argparse
import sys

COMMANDS = {}

# the exit codes (README, docs/design.md): 0 complete (or, with --deadline-ok, stopped
# with a resolution of these inputs on disk); 1 error; 2 bad option or usage; 3
# stopped (deadline or signal) with a resolution of these inputs on disk; 4 stopped with
# nothing of these inputs on disk (never 0); 130 Ctrl-C
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_DEADLINE, EXIT_NOTHING, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130

# options that take a value which may start with "-" (a negative number, which
# argparse would take for an option): --deadline -5s must reach our own check
VALUE_OPTIONS = ("--deadline", "--margin", "--worker-timeout", "--n", "--planes", "--bits",
                 "--cutoff", "--class-margin", "--max-restarts", "--gray")


def command(func):
    """Register `func(argv) -> int` as the subcommand named after it."""
    COMMANDS[func.__name__] = func
    return func


def parser(name, func):
    """The argparse parser of subcommand `name`; its description is func's docstring."""
    p = _Parser[0](prog=f"lrmpi {name}", description=func.__doc__)
    p.add_argument("--debug", action="store_true",
                   help="show the Python traceback of an error (default: one line)")
    return p


def exit_code(outcome, deadline_ok=False):
    """complete -> 0; interrupted (Ctrl-C) -> 130; stopped by a deadline or a signal
    with a resolution of these inputs on disk -> 3 (0 with --deadline-ok), with none
    -> 4 (whatever --deadline-ok says); workers (outcome None) -> 0."""
    if outcome is None or outcome.status == "complete":
        return EXIT_OK
    if outcome.interrupted:
        return EXIT_INTERRUPTED
    if not outcome.on_disk:
        return EXIT_NOTHING
    return EXIT_OK if deadline_ok else EXIT_DEADLINE


class _QuietParser(argparse.ArgumentParser):
    """On ranks other than 0: usage errors exit without printing (rank 0 prints, and its
    exit 2 is the job's: a non-zero exit here could make Open MPI's launcher kill rank 0
    before it has printed the usage)."""

    def error(self, message):
        sys.exit(EXIT_OK)

    def print_help(self, file=None):
        pass


_Parser = [argparse.ArgumentParser]  # the parser class main() picked for this rank
