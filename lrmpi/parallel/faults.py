"""Fault injection for lrmpi's own tests: read from the environment, off by default.

LRMPI_TEST_FAIL_RANK=R   worker R raises on its LRMPI_TEST_FAIL_AFTER-th task (default 1)
LRMPI_TEST_SLOW_RANK=R   worker R sleeps LRMPI_TEST_SLOW_S seconds before each task
LRMPI_TEST_SLOW_FACTOR=F worker LRMPI_TEST_SLOW_RANK computes F times slower (spins F-1
                         times each task's compute time after it)
LRMPI_TEST_HANG_RANK=R   worker R hangs (sleeps for an hour) on its LRMPI_TEST_FAIL_AFTER-th task
"""
import os
import time

_count = 0


def on_task(rank):
    """Called by a worker before each task."""
    global _count
    _count += 1
    if os.environ.get("LRMPI_TEST_SLOW_RANK") == str(rank):
        time.sleep(float(os.environ.get("LRMPI_TEST_SLOW_S", "0.5")))
    if os.environ.get("LRMPI_TEST_HANG_RANK") == str(rank) and \
            _count >= int(os.environ.get("LRMPI_TEST_FAIL_AFTER", "1")):
        time.sleep(3600)
    if os.environ.get("LRMPI_TEST_FAIL_RANK") == str(rank) and \
            _count >= int(os.environ.get("LRMPI_TEST_FAIL_AFTER", "1")):
        raise RuntimeError(f"injected failure on rank {rank} (LRMPI_TEST_FAIL_RANK)")


def after_task(rank, seconds):
    """Called by a worker after computing a task that took `seconds`."""
    factor = float(os.environ.get("LRMPI_TEST_SLOW_FACTOR", "1"))
    if factor > 1 and os.environ.get("LRMPI_TEST_SLOW_RANK") == str(rank):
        # busy, not asleep: a slow node still occupies its core (on a shared
        # machine a sleeping straggler would hand its core to the others)
        end = time.perf_counter() + (factor - 1) * seconds
        while time.perf_counter() < end:
            pass
