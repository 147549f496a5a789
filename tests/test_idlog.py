"""The event-id changelog records (pipeline/stream/idlog.py): one record per
bucket and batch, every record deleted with its bucket, both formats read."""

from __future__ import annotations

import msgspec

from pipeline.core.config import Params
from pipeline.core.eventids import EventIds
from pipeline.core.times import HOUR, MINUTE
from pipeline.core.vocabulary import CRIMES, INCIDENTS
from pipeline.stream.idlog import CHUNK_BYTES, IdLog

# id_retention = 1 h + 2 * 1 h = 3 h; lateness 10 min: an id of 6 h expires with the bucket ending at 10 h
PARAMS = Params(recording_deadline=HOUR, allowed_lateness=10 * MINUTE, at_risk_window=30 * MINUTE,
                state_retention=HOUR)


def apply(values: dict, changes: list) -> None:
    """What compaction leaves of a changelog: the last value of each key."""
    for key, value in changes:
        if value is None:
            values.pop(key, None)
        else:
            values[key] = value


def test_a_batch_writes_one_record_per_bucket_and_an_expired_bucket_deletes_them_all():
    ids, log, values = EventIds(PARAMS), IdLog(), {}
    for i in range(500):
        ids.claim(INCIDENTS, f"cc-{i}", 6 * HOUR + i)
    ids.claim(CRIMES, "rms-1", 6 * HOUR)
    changes = log.changes(*ids.drain())
    assert len(changes) == 2 and all(v is not None for _, v in changes)  # 501 ids, 2 records
    apply(values, changes)
    for i in range(500, 600):  # the next batch: the same bucket gains a record
        ids.claim(INCIDENTS, f"cc-{i}", 6 * HOUR + i)
    apply(values, log.changes(*ids.drain()))
    assert len(values) == 3
    ids.observe(11 * HOUR)  # the bucket (expiry 9-10 h) has expired on both feeds
    changes = log.changes(*ids.drain())
    assert sorted(k for k, v in changes if v is None) == sorted(values)  # every record, once
    apply(values, changes)
    assert values == {}


def test_a_new_owner_reads_the_ids_back_and_deletes_the_old_owners_records_too():
    first, log, values = EventIds(PARAMS), IdLog(), {}
    for i in range(10):
        first.claim(INCIDENTS, f"cc-{i}", 6 * HOUR)
    apply(values, log.changes(*first.drain()))
    second, log2 = EventIds(PARAMS), IdLog()
    got, unreadable = log2.read(dict(values), second.bucket_of)
    assert unreadable == 0
    assert second.load(got, first.meta()) == []
    assert second.held(INCIDENTS) == {f"cc-{i}" for i in range(10)}
    second.claim(INCIDENTS, "cc-10", 6 * HOUR)  # the new owner's own record of the same bucket
    apply(values, log2.changes(*second.drain()))
    assert len(values) == 2 and log.epoch != log2.epoch
    second.observe(11 * HOUR)
    apply(values, log2.changes(*second.drain()))
    assert values == {}


def test_records_of_earlier_releases_one_per_id_are_read_and_deleted_with_their_bucket():
    encode = msgspec.msgpack.encode
    values = {b"e:i:cc-1": encode(6 * HOUR), b"e:c:rms-1": encode(6 * HOUR), b"e:i:cc-late": encode(8 * HOUR)}
    ids, log = EventIds(PARAMS), IdLog()
    got, unreadable = log.read(dict(values), ids.bucket_of)
    assert unreadable == 0
    ids.load(got, {"max_time": 8 * HOUR})
    assert ids.held(INCIDENTS) == {"cc-1", "cc-late"} and ids.held(CRIMES) == {"rms-1"}
    ids.observe(11 * HOUR)  # 6 h's bucket expires, 8 h's does not
    changes = log.changes(*ids.drain())
    assert sorted(k for k, v in changes) == [b"e:c:rms-1", b"e:i:cc-1"] and all(v is None for _, v in changes)


def test_a_bucket_found_expired_at_recovery_is_deleted_at_the_next_write():
    first, log, values = EventIds(PARAMS), IdLog(), {}
    first.claim(INCIDENTS, "cc-1", 6 * HOUR)
    apply(values, log.changes(*first.drain()))
    later, log2 = EventIds(PARAMS), IdLog()
    got, _ = log2.read(dict(values), later.bucket_of)
    log2.expired(later.load(got, {"max_time": 11 * HOUR}))  # the checkpoint's watermark passed the bucket
    assert later.held(INCIDENTS) == set()
    apply(values, log2.changes(*later.drain()))
    assert values == {}


def test_long_ids_are_split_so_that_no_record_passes_the_chunk_size():
    ids, log = EventIds(PARAMS), IdLog()
    for i in range(3000):
        ids.claim(INCIDENTS, f"{i:04d}" + "\u00e9" * 252, 6 * HOUR)  # 256 characters, 508 bytes
    changes = log.changes(*ids.drain())
    assert len(changes) > 1 and all(len(v) <= CHUNK_BYTES for _, v in changes)
    again, log2 = EventIds(PARAMS), IdLog()
    got, _ = log2.read(dict(changes), again.bucket_of)
    again.load(got, ids.meta())
    assert again.held(INCIDENTS) == ids.held(INCIDENTS)


def test_records_no_worker_wrote_are_counted_and_left_out():
    values = {b"b:i:12:abc:0": b"\xc1", b"b:x:12:abc:0": msgspec.msgpack.encode(["a"]), b"b:i:12:abc": b"",
              b"b:i:zz:abc:0": msgspec.msgpack.encode(["a"]), b"e:i:cc-1": b"not msgpack",
              b"b:i:12:abc:1": msgspec.msgpack.encode(["ok"])}
    got, unreadable = IdLog().read(values, EventIds(PARAMS).bucket_of)
    assert got == [(INCIDENTS, 12, ["ok"])] and unreadable == 5
