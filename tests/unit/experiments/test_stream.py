"""Success rates of the deadline experiment (lrmpi.experiments.stream), on hand-made delays."""
from lrmpi.experiments.stream import success


def test_success_counts_jobs_whose_result_came_in_time():
    delays = [[0.1, 0.3], [0.2], [], [0.05, 0.15]]  # job 3 was dropped (late in the queue)
    assert success(delays, 0.2, 1) == 0.75
    assert success(delays, 0.2, 2) == 0.25
    assert success(delays, 0.3, 2) == 0.5
    assert success(delays, 0.01, 1) == 0.0
