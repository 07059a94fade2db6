"""Stage timers: per thread, read as what a thread spent since its last take()."""
import threading

from lrmpi import stages


def test_take_reads_this_threads_time_since_its_last_take():
    out = []

    def task():
        stages.add("products", 2.0)
        first = stages.take()
        stages.add("bound", 0.5)
        out.append((first, stages.take(), stages.take()))

    for _ in range(3):  # threads one after another: an id may come back, counters do not
        t = threading.Thread(target=task)
        t.start()
        t.join()
    for first, second, third in out:
        assert first["products"] == 2.0 and first["bound"] == 0.0
        assert second["bound"] == 0.5 and second["products"] == 0.0
        assert all(v == 0.0 for v in third.values())
    total = stages.total([o[0] for o in out] + [None])
    assert total["products"] == 6.0 and set(total) == set(stages.STAGES)
