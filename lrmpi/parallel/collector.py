"""The root's results applied off its message loop: exact accumulation, decoding,
streaming to the checkpoint and finishing resolutions run on a thread of their own
(the kernels and h5py release the GIL), so the loop that drives MPI (receives,
sends, broadcasts) never waits behind them, and the workers never wait for a
receive the root is too busy to complete (design.md, "Results on the root").

Items are applied one at a time, in the order they were put: the root puts every
result of resolution r before any of r + 1, so C_r never sees a later pair. MPI-free.
"""
import queue
import threading


class Collector:
    """Calls `apply(*item)` for each item put, in order: on a thread, or at once in
    the caller (`threaded=False`: results written by the ranks, whose apply sends
    SEAL messages and so belongs to the thread that drives MPI)."""

    def __init__(self, apply, threaded=True):
        self.apply, self.threaded = apply, threaded
        self.error, self._raised = None, False
        self._queue = queue.Queue()
        self._idle = threading.Condition()
        self.pending = 0     # items put, not applied yet
        self._thread = None
        if threaded:
            self._thread = threading.Thread(target=self._loop, name="lrmpi-collect",
                                            daemon=True)
            self._thread.start()

    def put(self, *item):
        if not self.threaded:
            self.apply(*item)
            return
        self.check()
        with self._idle:
            self.pending += 1
        self._queue.put(item)

    def _loop(self):
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                if self.error is None:  # after a failure, only count the rest down
                    self.apply(*item)
            except BaseException as exc:  # noqa: BLE001 - raised on the root's thread
                self.error = exc
            finally:
                with self._idle:
                    self.pending -= 1
                    self._idle.notify_all()

    def check(self):
        """Raise, on the caller's thread, what applying an item raised (once)."""
        if self.error is not None and not self._raised:
            self._raised = True
            raise self.error

    def drain(self):
        """Wait until every item put has been applied; raise what failed."""
        with self._idle:
            while self.pending:
                self._idle.wait(0.05)
        self.check()

    def close(self):
        """End the thread after the items already put (a daemon: not joined, since
        after a failure an item may wait for a disk that is gone)."""
        if self._thread is not None:
            self._queue.put(None)
