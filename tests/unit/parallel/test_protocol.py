"""Round trips of the wire format's headers, and docs/design.md's table of messages."""
import pathlib
import re

import numpy as np
import pytest

from lrmpi.errors import ProtocolError
from lrmpi.parallel import protocol
from lrmpi.parallel.messages import Work
from lrmpi.parallel.protocol import ResultKind


def test_work_round_trip():
    keys = [(0, 3, 1), (1, 0, 2)]
    assert protocol.decode_work(protocol.encode_work(7, 2, 5, keys)) == \
        Work(7, 2, 5, keys)
    assert protocol.decode_work(protocol.encode_work(0, 0, 0, [])) == Work(0, 0, 0, [])


def test_work_rejects_other_versions_and_too_many_keys():
    h = protocol.encode_work(1, 1, 1, [])
    h[protocol.W_VERSION] = 99
    with pytest.raises(ProtocolError, match="mixed lrmpi versions"):
        protocol.decode_work(h)
    with pytest.raises(ProtocolError):
        protocol.encode_work(1, 1, 1, [(0, 0, 0)] * (protocol.MAX_KEYS + 1))


@pytest.mark.parametrize("dtype", [np.int64, np.int32])
def test_sums_round_trip(rng, dtype):
    top = np.iinfo(dtype).max
    shape = (3, 5)  # 15 int32 do not fill whole int64 words
    sums = [(3, rng.integers(-top, top, shape, dtype=dtype)),
            (4, rng.integers(-9, 9, shape, dtype=dtype))]
    buf = protocol.pack_sums(np.empty(protocol.result_size(2, shape, dtype), np.int64), 11,
                             sums, 0.25)
    assert buf.size == protocol.result_size(2, shape, dtype)
    assert protocol.result_nbytes(buf) == buf.nbytes
    task, got, seconds = protocol.decode_result(buf, ResultKind.SUMS, shape, dtype)
    assert task == 11 and [lv for lv, _ in got] == [3, 4] and seconds == 0.25
    for (_, a), (_, b) in zip(sums, got):
        np.testing.assert_array_equal(a, b)


def test_tile_and_written_round_trips_and_kinds_are_checked(rng):
    shape = (4, 6)
    C = rng.standard_normal(shape)
    buf = np.empty(protocol.result_size(1, shape, np.float64), np.int64)
    msg = protocol.pack_tile(buf, 5, C, 0.5)
    task, got, seconds = protocol.decode_result(msg, ResultKind.TILE, shape, np.float64)
    assert task == 5 and seconds == 0.5
    np.testing.assert_array_equal(got, C)
    with pytest.raises(ProtocolError, match="expected SUMS"):
        protocol.decode_result(msg, ResultKind.SUMS, shape)
    head = protocol.pack_written(buf, 6, 3.5, 0.125)
    assert head.size == protocol.RESULT_HDR and protocol.result_nbytes(buf) == head.nbytes
    assert protocol.decode_result(buf, ResultKind.WRITTEN, shape) == (6, 3.5, 0.125)
    with pytest.raises(ProtocolError):
        protocol.decode_result(buf, ResultKind.TILE, shape, np.float64)


def test_tags_are_distinct():
    assert len({int(t) for t in protocol.Tag}) == len(protocol.Tag)


def design_table():
    """{message: tag} of docs/design.md's table of messages ("Wire format")."""
    text = (pathlib.Path(__file__).parents[3] / "docs" / "design.md").read_text()
    section = text.split("## Wire format", 1)[1].split("\n## ", 1)[0]
    return {m.group(1): int(m.group(2))
            for m in re.finditer(r"^\| ([A-Z]+) \| (\d+) \|", section, re.M)}


def test_design_md_lists_every_message_with_its_tag():
    assert design_table() == {t.name: int(t) for t in protocol.Tag}


def test_only_protocol_names_a_tag():
    """No other module of lrmpi sends or receives by tag itself."""
    root = pathlib.Path(protocol.__file__).parents[1]
    for path in root.rglob("*.py"):
        if path.name == "protocol.py":
            continue
        text = path.read_text()
        assert not re.search(r"\bTag\b|\btag=", text), f"{path} names a message tag"
