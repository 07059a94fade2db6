"""Round trips of the wire format."""
import numpy as np
import pytest

from lrmpi.parallel import protocol


def test_work_round_trip():
    keys = [(0, 3, 1), (1, 0, 2)]
    assert protocol.decode_work(protocol.encode_work(7, 2, 5, keys)) == (7, 2, 5, keys)
    assert protocol.decode_work(protocol.encode_work(0, 0, 0, [])) == (0, 0, 0, [])


def test_work_rejects_other_versions_and_too_many_keys():
    h = protocol.encode_work(1, 1, 1, [])
    h[protocol.W_VERSION] = 99
    with pytest.raises(RuntimeError, match="mixed lrmpi versions"):
        protocol.decode_work(h)
    with pytest.raises(ValueError):
        protocol.encode_work(1, 1, 1, [(0, 0, 0)] * (protocol.MAX_KEYS + 1))


@pytest.mark.parametrize("dtype", [np.int64, np.int32])
def test_result_round_trip(rng, dtype):
    top = np.iinfo(dtype).max
    shape = (3, 5)  # 15 int32 do not fill whole int64 words
    sums = [(3, rng.integers(-top, top, shape, dtype=dtype)),
            (4, rng.integers(-9, 9, shape, dtype=dtype))]
    buf = protocol.encode_result(np.empty(protocol.result_size(2, shape, dtype), np.int64), 11,
                                 sums, 0.25)
    assert buf.size == protocol.result_size(2, shape, dtype)
    task, got, seconds = protocol.decode_result(buf, shape, dtype)
    assert task == 11 and [lv for lv, _ in got] == [3, 4] and seconds == 0.25
    for (_, a), (_, b) in zip(sums, got):
        np.testing.assert_array_equal(a, b)


def test_tags_are_distinct():
    assert len({int(t) for t in protocol.Tag}) == len(protocol.Tag)
