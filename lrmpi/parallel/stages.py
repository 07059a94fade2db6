"""Where a rank's time goes: wall-clock and thread-CPU seconds per stage (read,
encode, send, kernel, decode, accumulate, bound, write, waiting...), the CPU of
its threads and its peak memory, for `lrmpi bench matmul` and the stats file
(config stats_file). MPI-free.

Thread CPU time is what counts on a shared node: a stage that lost its core to
another process shows wall > cpu, one that competed for the GIL too. Peak memory
is VmHWM as /proc reports it (memory-mapped file pages count).
"""
import os
import resource
import threading
import time
from contextlib import contextmanager


def _faults():
    """Page faults of the calling thread so far (fresh memory is slow to first touch on
    virtual machines: 1-3 s of CPU per GB)."""
    try:
        return resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    except (AttributeError, OSError):
        return 0


class Stages:
    """Per stage: [count, wall seconds, thread-CPU seconds, page faults]; thread-safe."""

    def __init__(self):
        self._lock = threading.Lock()
        self.t, self.marks = {}, {}
        self.started = time.perf_counter()

    def reset(self):
        """A new job on this rank: forget the earlier one's figures."""
        with self._lock:
            self.t, self.marks = {}, {"job start": time.time()}
            self.started = time.perf_counter()
        reset_peak_memory()

    def mark(self, name):
        """The first time (epoch seconds) `name` happened in this job (e.g. the first
        task sent): the bench measures them from the launch."""
        self.marks.setdefault(name, time.time())

    def add(self, name, wall, cpu=0.0, faults=0, count=1):
        with self._lock:
            s = self.t.setdefault(name, [0, 0.0, 0.0, 0])
            s[0] += count
            s[1] += wall
            s[2] += cpu
            s[3] += faults

    @contextmanager
    def timed(self, name):
        """Time the block as stage `name` (thread CPU and page faults of the calling
        thread); yields a Timing whose wall and cpu are set when the block ends."""
        t = Timing()
        w, c, f = time.perf_counter(), time.thread_time(), _faults()
        try:
            yield t
        finally:
            t.wall, t.cpu = time.perf_counter() - w, time.thread_time() - c
            self.add(name, t.wall, t.cpu, _faults() - f)

    def snapshot(self):
        with self._lock:
            return {k: list(v) for k, v in self.t.items()}

    def report(self):
        """What a rank reports at the end of its job: its stages, the CPU of its
        threads (by name), its process CPU, its lifetime in the job and memory."""
        return {"stages": self.snapshot(),
                "marks": {"process start": process_start(), **self.marks},
                "threads_cpu_s": threads_cpu(),
                "process_cpu_s": time.process_time(),
                "job_wall_s": time.perf_counter() - self.started, **memory()}


class Timing:
    wall = cpu = 0.0


STAGES = Stages()  # this process's (one job at a time per process)


def threads_cpu():
    """{thread name: its CPU seconds} of the live threads of this process."""
    out = {}
    for t in threading.enumerate():
        try:
            cpu = time.clock_gettime(time.pthread_getcpuclockid(t.ident))
        except (AttributeError, OSError, TypeError, OverflowError):
            continue
        out[t.name] = out.get(t.name, 0.0) + cpu
    return out


def process_start():
    """When this process started (epoch seconds, to 10 ms), or None."""
    try:
        import os
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rpartition(")")[2].split()[19])  # since boot
        since = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
        return time.time() - since
    except (OSError, ValueError, AttributeError):
        return None


def memory():
    """{"peak_rss_mb", "rss_mb"}: VmHWM and VmRSS of this process (MB), or {}."""
    out = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmHWM", "VmRSS"):
                    out["peak_rss_mb" if key == "VmHWM" else "rss_mb"] = \
                        int(value.split()[0]) / 1024
    except OSError:
        pass
    return out


def reset_peak_memory():
    """Start VmHWM again from the current RSS (Linux: clear_refs 5), so that a job's
    peak is its own when one process runs several."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def write_stats(path, workers, resolutions):
    """The stats file (config stats_file; nothing when it is ""): this rank's report
    as rank 0, the workers' ({rank: report}, from their BYE) and the figures of each
    resolution (progress.Figures.of), as JSON."""
    if not path:
        return
    import json

    from lrmpi.log import logger
    ranks = {"0": STAGES.report(), **{str(w): r for w, r in sorted(workers.items())}}
    # a new file under the name (a temporary one renamed): never written through a
    # link made since the job checked the name (checkpoint.output.check_side_file)
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, "x") as f:
            json.dump({"ranks": ranks, "resolutions": resolutions}, f, indent=1)
        os.replace(tmp, path)
    except OSError as exc:  # figures, not results: the job goes on
        try:
            os.unlink(tmp)
        except OSError:
            pass
        logger.warning("lrmpi: cannot write the stats file %s: %s", path, exc)
