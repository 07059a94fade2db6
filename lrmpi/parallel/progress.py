"""Progress on the root: a one-line bar on a terminal, the one log line of a finished
resolution (every job kind), and the per-resolution figures a matmul records."""
import sys

from lrmpi.log import logger


def log_resolution(meta, planned, durable, details):
    """The log line of a finished resolution (`meta`: its checkpoint attributes;
    `durable`: when it was on disk, if it was written; `details`: what the kind adds)."""
    if sys.stderr.isatty() and logger.isEnabledFor(20):
        sys.stderr.write("\r\033[K")  # clear a progress bar, then the log line
    on_disk = "" if durable is None else f"  durable {durable:.3f} s"
    logger.info("lrmpi: resolution %d/%d  computed %.3f s%s  %s", meta["index"], planned,
                meta["elapsed_s"], on_disk, details)


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
        """The log line of a finished matmul resolution."""
        how = f"pairs {meta['pairs']}" if meta.get("method", "planes") == "planes" else \
            f"{meta['method']} {meta['products']} int8 products"
        log_resolution(meta, self.planned, durable,
                       f"{how}  bound_abs {meta['bound_abs']:.3e}  "
                       f"bound_rel {meta['bound_rel']:.3e}")


class Figures:
    """Per resolution: bytes the root sent and received, when its first task went out and
    its last result came in, and its tasks' kernel seconds (the pipeline's efficiency:
    kernel time / (workers x that span))."""

    def __init__(self, nres, workers):
        self.traffic = [[0, 0] for _ in range(nres)]
        self.timing = [[None, None, 0.0] for _ in range(nres)]
        self.workers = workers

    def count(self, res, sent=0, received=0):
        self.traffic[res][0] += sent
        self.traffic[res][1] += received

    def dispatched(self, res, started):
        if self.timing[res][0] is None:
            self.timing[res][0] = started

    def result(self, res, now, kernel_s):
        self.timing[res][1] = now
        self.timing[res][2] += kernel_s

    def of(self, r):
        """Resolution r's attributes (beside elapsed_s) for its checkpoint."""
        first, last, kernel = self.timing[r]
        return {"root_bytes_sent": self.traffic[r][0], "root_bytes_recv": self.traffic[r][1],
                "kernel_s": kernel, "span_s": last - first if None not in (first, last) else 0.0,
                "workers": self.workers}
