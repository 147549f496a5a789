"""stream/fetch.py: a fetched partition taken as a list gives what aiokafka's
own record path gives, record for record and position for position.

Both paths get the same fetch (record batches built with aiokafka's own
builder: plain and compressed, compacted, transactional, aborted, control)
and the same fetch offset, and are drained with the same ``max_records``
sequence through ``FetchResult.getall``, as ``getmany`` does. The one
deliberate difference, a corrupt batch, has its own test.
"""

from __future__ import annotations

import gc
import struct
import weakref

import pytest
from aiokafka import errors as Errors
from aiokafka.consumer.fetcher import READ_COMMITTED, READ_UNCOMMITTED, FetchResult, PartitionRecords
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.record.util import calc_crc32c
from aiokafka.structs import TopicPartition
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.stream import fetch
from pipeline.stream.fetch import UnpackedRecords
from pipeline.stream.fetched import Fetched

TP = TopicPartition("cc.incidents", 3)
ABORT, COMMIT = 0, 1


def batch(base: int, records, *, compression: int = 0, producer_id: int = -1, transactional: bool = False,
          control: int | None = None, tail: int = 0, corrupt: bool = False) -> bytes:
    """One v2 record batch at ``base``. ``records``: (offset delta, key, value, headers).
    ``control``: a control batch holding one marker (ABORT or COMMIT); ``tail``: the
    batch's last offset delta raised past its last record (compaction removed them)."""
    builder = DefaultRecordBatchBuilder(magic=2, compression_type=compression, is_transactional=int(transactional),
                                        producer_id=producer_id, producer_epoch=0 if producer_id >= 0 else -1,
                                        base_sequence=0 if producer_id >= 0 else -1, batch_size=1 << 20)
    if control is not None:
        records = [(0, struct.pack(">hh", 0, control), struct.pack(">hi", 0, 0), [])]
    for delta, key, value, headers in records:
        builder.append(delta, timestamp=1_700_000_000_000 + delta, key=key, value=value, headers=headers)
    data = bytearray(builder.build())
    struct.pack_into(">q", data, 0, base)
    if control is not None:
        struct.pack_into(">h", data, 21, struct.unpack_from(">h", data, 21)[0] | 0x20)
    if tail:
        struct.pack_into(">i", data, 23, struct.unpack_from(">i", data, 23)[0] + tail)
    struct.pack_into(">I", data, 17, calc_crc32c(bytes(data[21:])))
    if corrupt:
        data[-1] ^= 0xFF
    return bytes(data)


class _State:
    def __init__(self, position: int) -> None:
        self.position, self.paused = position, False

    def consumed_to(self, position: int) -> None:
        self.position = position


class _Assignment:
    active = True

    def __init__(self, position: int) -> None:
        self.state = _State(position)

    def state_value(self, tp):
        return self.state


def drain(cls, data: bytes, fetch_offset: int, takes: list[int | None], *, aborted=(), isolation=READ_COMMITTED):
    """Every non-empty ``getall`` answer (records as plain tuples), and the final position."""
    assignment = _Assignment(fetch_offset)
    records = cls(TP, MemoryRecords(data), list(aborted), fetch_offset, None, None, True, isolation)
    result = FetchResult(TP, assignment=assignment, partition_records=records, backoff=0)
    answers, i = [], 0
    while result.has_more():
        got = result.getall(takes[i % len(takes)] if takes else None)
        i += 1
        if got:
            answers.append(([(r.topic, r.partition, r.offset, r.timestamp, r.timestamp_type, r.key, r.value,
                              r.serialized_key_size, r.serialized_value_size, tuple(r.headers)) for r in got],
                            assignment.state.position))
        assert i < 10_000
    if answers:  # after the last answer aiokafka may need one more, empty, to reach the end: compared below
        answers[-1] = (answers[-1][0], None)
    return answers, assignment.state.position


@pytest.fixture(autouse=True, scope="module")
def _installed():
    assert fetch.install()  # getall is shared: aiokafka's own path still runs for its own class
    yield


_record = st.tuples(st.one_of(st.none(), st.binary(max_size=12)), st.one_of(st.none(), st.binary(max_size=40)),
                    st.lists(st.tuples(st.sampled_from(["w", "x"]), st.one_of(st.none(), st.binary(max_size=4))),
                             max_size=2))


@st.composite
def fetches(draw):
    """A fetch: batches in offset order (some compacted, compressed, transactional,
    aborted, control), a fetch offset inside it, aborted transactions, getall sizes."""
    base, parts, aborted, producers = draw(st.integers(0, 50)), [], [], {}
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["plain", "plain", "gzip", "txn", "control"]))
        if kind == "control":
            pid = draw(st.sampled_from(sorted(producers) or [7]))
            parts.append(batch(base, [], producer_id=pid, transactional=True,
                               control=draw(st.sampled_from([ABORT, COMMIT]))))
            base += 1
            continue
        n = draw(st.integers(1, 8))
        deltas = sorted(draw(st.sets(st.integers(0, 3 * n), min_size=n, max_size=n)))  # gaps: compaction
        recs = [(d, *draw(_record)) for d in deltas]
        tail = draw(st.integers(0, 2))
        if kind == "txn":
            pid = draw(st.sampled_from([7, 8]))
            if pid not in producers and draw(st.booleans()):
                aborted.append((pid, base))
            producers[pid] = base
            parts.append(batch(base, recs, producer_id=pid, transactional=True, tail=tail))
        else:
            parts.append(batch(base, recs, compression=1 if kind == "gzip" else 0, tail=tail))
        base += deltas[-1] + tail + 1
    first = struct.unpack_from(">q", parts[0], 0)[0]
    fetch_offset = draw(st.integers(first, base))
    takes = draw(st.lists(st.one_of(st.none(), st.integers(1, 12)), max_size=4))
    return b"".join(parts), fetch_offset, aborted, takes


@settings(max_examples=300, deadline=None)
@given(fetches(), st.sampled_from([READ_COMMITTED, READ_UNCOMMITTED]))
def test_a_fetch_taken_as_a_list_is_aiokafkas_own(case, isolation):
    data, fetch_offset, aborted, takes = case
    ours = drain(UnpackedRecords, data, fetch_offset, takes, aborted=aborted, isolation=isolation)
    theirs = drain(PartitionRecords, data, fetch_offset, takes, aborted=aborted, isolation=isolation)
    # aiokafka may answer once more with nothing when a take ends exactly at the end: only non-empty answers
    # count, each with the position after it (but the last's), and the position at the end
    assert ours == theirs


def test_records_have_the_consumer_record_attributes():
    data = batch(40, [(0, b"k", b"v", [("w", b"t")]), (2, None, b"x", [])])
    ((answer, _),), position = drain(UnpackedRecords, data, 40, [None])
    assert position == 43
    assert answer[0] == ("cc.incidents", 3, 40, 1_700_000_000_000, 0, b"k", b"v", 1, 1, (("w", b"t"),))
    assert answer[1][2] == 42 and answer[1][5] is None and answer[1][7] == -1
    records = UnpackedRecords(TP, MemoryRecords(data), [], 40, None, None, True, READ_COMMITTED)
    first = next(records)  # getone's path: the same list
    assert isinstance(first, Fetched) and first.offset == 40 and records.next_fetch_offset == 41
    assert [r.offset for r in records.take(None)] == [42] and records.next_fetch_offset == 43


def test_a_corrupt_batch_raises_once_after_the_records_before_it_and_is_fetched_again():
    good = batch(10, [(0, None, b"a", []), (1, None, b"b", [])])
    bad = batch(12, [(0, None, b"c", [])], corrupt=True)
    assignment = _Assignment(10)
    records = UnpackedRecords(TP, MemoryRecords(good + bad), [], 10, None, None, True, READ_COMMITTED)
    result = FetchResult(TP, assignment=assignment, partition_records=records, backoff=0)
    assert [r.value for r in result.getall(None)] == [b"a", b"b"]
    assert assignment.state.position == 12 and result.has_more()
    with pytest.raises(Errors.CorruptRecordException):
        result.getall(None)
    assert result.getall(None) == [] and not result.has_more()
    assert assignment.state.position == 12  # the next fetch starts at the corrupt batch


def test_a_deserializing_consumer_keeps_aiokafkas_own_path():
    data = batch(0, [(0, b"k", b"v", [])])
    records = UnpackedRecords(TP, MemoryRecords(data), [], 0, None, bytes.upper, True, READ_COMMITTED)
    result = FetchResult(TP, assignment=_Assignment(0), partition_records=records, backoff=0)
    (record,) = result.getall(None)
    assert not isinstance(record, Fetched) and record.value == b"V"


def test_a_take_unpacks_only_the_record_batches_it_needs():
    """A worker holds a fetch for each of its partitions: unpacking each whole
    (tens of thousands of records) doubled its memory while loading 200,000 incidents."""
    data = b"".join(batch(100 * b, [(i, None, b"v", []) for i in range(100)]) for b in range(10))
    records = UnpackedRecords(TP, MemoryRecords(data), [], 0, None, None, True, READ_COMMITTED)
    got = records.take(150)
    assert [r.offset for r in got] == list(range(150)) and records.next_fetch_offset == 150
    assert len(records._list) - records._taken <= 100  # two batches unpacked, not ten
    got = records.take(None)
    assert [r.offset for r in got] == list(range(150, 1000)) and records.exhausted
    assert records.next_fetch_offset == 1000 and records._list == []


def test_a_used_fetch_is_freed_without_the_cycle_collector():
    """The worker freezes what is alive after each batch (gc.freeze): an object
    in a reference cycle then stays until the next full collection, 10 minutes
    later, and a fetch holds megabytes."""
    data = batch(0, [(0, None, b"v", [])])
    gc.disable()
    try:
        records = UnpackedRecords(TP, MemoryRecords(data), [], 0, None, None, True, READ_COMMITTED)
        records.take(None)
        ref = weakref.ref(records)
        del records
        assert ref() is None
    finally:
        gc.enable()
