"""Sleeping between polls: a rank that waits must not burn a core (on a node where
ranks outnumber cores, a spinning root steals a worker's core)."""
import time


class Backoff:
    """Sleep between polls: first `first` s, doubling up to `cap` s; reset on activity."""

    def __init__(self, first=50e-6, cap=2e-3):
        self.first, self.cap, self.t = first, cap, first

    def sleep(self):
        time.sleep(self.t)
        self.t = min(2 * self.t, self.cap)

    def reset(self):
        self.t = self.first

    def step(self, progressed):
        """reset() after progress, else sleep(): the end of one polling round."""
        self.reset() if progressed else self.sleep()
