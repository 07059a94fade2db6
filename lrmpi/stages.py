"""Where a process's time goes, per stage of layered inference: thread CPU time
(not wall clock: on a shared machine a descheduled thread must not look slow),
accumulated per thread, read as the difference of two snapshots around a task.

Stages: quantize (activations into digit planes, also the next planes a fused
layer cuts), products (the int8 pair products), decode (the one rounding, bias,
activation and the stores of a fused layer), ops (the other graph nodes, float64),
bound (the bound tracker), comm (a worker's wall time in sending its results).
The resolutions of `lrmpi infer` record the sums over every task (cpu_<stage>_s).
"""
import threading
import time
from contextlib import contextmanager

STAGES = ("quantize", "products", "decode", "ops", "bound", "comm")
_local = threading.local()


def _acc():
    acc = getattr(_local, "acc", None)
    if acc is None:
        acc = _local.acc = dict.fromkeys(STAGES, 0.0)
    return acc


def add(stage, seconds):
    _acc()[stage] += seconds


@contextmanager
def timed(stage):
    t = time.thread_time()
    try:
        yield
    finally:
        _acc()[stage] += time.thread_time() - t


def snapshot():
    return dict(_acc())


def since(snap):
    """{stage: seconds} of this thread since `snap`."""
    return {k: v - snap.get(k, 0.0) for k, v in _acc().items()}


def take():
    """{stage: seconds} of this thread since its last take() (or since it began):
    the mark is kept with the thread's own counters, so a new thread that gets a
    dead one's id starts from zero."""
    acc = _acc()
    last = getattr(_local, "last", None) or dict.fromkeys(STAGES, 0.0)
    _local.last = dict(acc)
    return {k: v - last.get(k, 0.0) for k, v in acc.items()}


def total(parts):
    """The sum of several {stage: seconds}."""
    out = dict.fromkeys(STAGES, 0.0)
    for p in parts:
        for k, v in (p or {}).items():
            out[k] = out.get(k, 0.0) + v
    return out
