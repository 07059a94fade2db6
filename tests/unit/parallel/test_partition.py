"""Partition arithmetic over many (n, size) pairs."""
import pytest

from lrmpi.parallel.partition import block_of, counts_displs, default_tiling


@pytest.mark.parametrize("n", [0, 1, 2, 3, 7, 64, 100, 4097])
@pytest.mark.parametrize("parts", [1, 2, 3, 4, 7, 16])
def test_counts_displs(n, parts):
    counts, displs = counts_displs(n, parts)
    assert sum(counts) == n and len(counts) == parts
    assert displs == sorted(displs) and displs[0] == 0
    assert max(counts) - min(counts) <= 1
    if n >= parts:
        assert min(counts) > 0
    for i in range(parts):
        assert block_of(i, n, parts) == (displs[i], displs[i] + counts[i])


@pytest.mark.parametrize("m, n", [(1, 1), (5, 3), (64, 64), (4096, 4096), (100, 20000),
                                  (20000, 100), (3, 9000)])
@pytest.mark.parametrize("workers", [0, 1, 2, 3, 8])
def test_tiles_cover_c_exactly_once(m, n, workers):
    tiling = default_tiling(m, n, workers)
    seen = [[0] * n for _ in range(m)] if m * n <= 10000 else None
    area = 0
    for t in tiling.tiles():
        assert t.r0 < t.r1 and t.c0 < t.c1
        area += (t.r1 - t.r0) * (t.c1 - t.c0)
        if seen is not None:
            for i in range(t.r0, t.r1):
                for j in range(t.c0, t.c1):
                    seen[i][j] += 1
    assert area == m * n
    if seen is not None:
        assert all(v == 1 for row in seen for v in row)


def test_counts_displs_rejects_zero_parts():
    with pytest.raises(ValueError):
        counts_displs(5, 0)
