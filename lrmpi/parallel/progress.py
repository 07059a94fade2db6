"""Progress on the root: a one-line bar on a terminal, one log line per resolution."""
import sys

from lrmpi.log import logger


class Progress:
    def __init__(self, planned, ntiles):
        self.planned, self.ntiles = planned, ntiles
        self.tty = sys.stderr.isatty() and logger.isEnabledFor(20)

    def tile(self, r, done, elapsed):
        """Tile `done` of resolution r (0-based) is in (terminal only)."""
        if not self.tty:
            return
        frac = (r + done / self.ntiles) / self.planned
        bar = "#" * int(30 * frac)
        sys.stderr.write(f"\r[{bar:<30}] resolution {r + 1}/{self.planned} tiles "
                         f"{done}/{self.ntiles} {elapsed:7.2f} s")
        if r + 1 == self.planned and done == self.ntiles:
            sys.stderr.write("\n")
        sys.stderr.flush()

    def resolution(self, meta):
        """The log line of a finished resolution (`meta`: its checkpoint attributes)."""
        if self.tty:
            sys.stderr.write("\r\033[K")  # clear the progress bar, then the log line
        logger.info("lrmpi: resolution %d/%d  %.3f s  pairs %d  bound_abs %.3e  bound_rel %.3e",
                    meta["index"], self.planned, meta["elapsed_s"], meta["pairs"],
                    meta["bound_abs"], meta["bound_rel"])
