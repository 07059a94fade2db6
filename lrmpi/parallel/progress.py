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

    def resolution(self, meta, durable=None):
        """The log line of a finished resolution (`meta`: its checkpoint attributes;
        `durable`: when it was on disk, if it was written)."""
        if self.tty:
            sys.stderr.write("\r\033[K")  # clear the progress bar, then the log line
        on_disk = "" if durable is None else f"  durable {durable:.3f} s"
        how = f"pairs {meta['pairs']}" if meta.get("method", "planes") == "planes" else \
            f"{meta['method']} {meta['products']} int8 products"
        logger.info("lrmpi: resolution %d/%d  computed %.3f s%s  %s  bound_abs %.3e  "
                    "bound_rel %.3e", meta["index"], self.planned, meta["elapsed_s"], on_disk,
                    how, meta["bound_abs"], meta["bound_rel"])
