"""The root applies results in resolution order whatever order they arrive in."""
import numpy as np

from lrmpi import LayeredMatmul
from lrmpi.parallel.root import Root
from lrmpi.parallel.scheduler import Task


def test_results_in_reverse_order_give_the_same_resolutions(rng):
    A, B = rng.standard_normal((150, 40)), rng.standard_normal((40, 30))
    lm = LayeredMatmul(A, B, planes=3, order="pairwise")
    got = []
    root = Root(lm, None, on_resolution=lambda meta, C: got.append((meta, C.copy())))
    assert len(root.tiles) > 1
    tasks = [Task(i, r, t, 0, [], 0.0) for i, (r, t) in enumerate(
        (r, t) for r in range(len(lm.schedule)) for t in root.tiles)]
    for task in reversed(tasks):  # the last resolution first: all of it waits in buffers
        root.scheduler.outstanding[0].append(task)
        root.on_result(task, root.compute_local(task, never))
    # a duplicate (backup) result after the fact is dropped
    dup = Task(len(tasks), 0, root.tiles[0], 0, [], 0.0)
    root.scheduler.outstanding[0].append(dup)
    root.on_result(dup, root.compute_local(dup, never))
    root.collector.drain()  # results are applied on the collector's thread
    ref = list(LayeredMatmul(A, B, planes=3, order="pairwise"))
    assert root.cur == len(ref) and [m["index"] for m, _ in got] == [r.index for r in ref]
    for (meta, C), r in zip(got, ref):
        np.testing.assert_array_equal(C, r.C)
        assert meta["bound_abs"] == r.bound_abs


def never():
    return False
