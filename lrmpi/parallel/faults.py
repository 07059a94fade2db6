"""Fault injection for lrmpi's own tests: off unless the LRMPI_TEST_* settings
(lrmpi.config) name a rank. A failing, hanging or slow worker is made to order."""
import time

from lrmpi import config

_count = 0


def on_task(rank, should_stop=None):
    """Called by a rank before each task: sleep, hang or raise as configured. True if
    `should_stop()` said so during the sleep of a slow rank: a long task, like a real
    one between its chunks, then stops instead of holding up the job's stop."""
    global _count
    _count += 1
    c = config.get()
    if c.test_slow_rank == rank and c.test_slow_s > 0:
        end = time.monotonic() + c.test_slow_s
        while (left := end - time.monotonic()) > 0:
            time.sleep(min(left, 0.05))
            if should_stop is not None and should_stop():
                return True
    if c.test_hang_rank == rank and _count >= c.test_fail_after:
        time.sleep(3600)
    if c.test_fail_rank == rank and _count >= c.test_fail_after:
        raise RuntimeError(f"injected failure on rank {rank} (LRMPI_TEST_FAIL_RANK)")


def after_task(rank, seconds):
    """Called by a rank after computing a task that took `seconds`."""
    c = config.get()
    if c.test_slow_factor > 1 and c.test_slow_rank == rank:
        # busy, not asleep: a slow node still occupies its core (on a shared
        # machine a sleeping straggler would hand its core to the others)
        end = time.perf_counter() + (c.test_slow_factor - 1) * seconds
        while time.perf_counter() < end:
            pass
