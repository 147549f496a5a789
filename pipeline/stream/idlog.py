"""The changelog records of an event-stage partition's event ids: a record per
expiry bucket and batch, not one per id.

The event stage keeps every id it has seen for the id retention
(:class:`~pipeline.core.eventids.EventIds`), and forgets them a bucket (an hour
of expiry) at a time. The changelog follows that: each transaction writes, for
each bucket that gained ids, one record holding those ids (msgpack list of
strings; split when it would pass :data:`CHUNK_BYTES`), and when a bucket
expires, one tombstone for each of its records. One id per record cost a
Kafka record, a key and a tombstone per input message: about 8% of a worker's
work on the benchmark capture.

Keys are ``b:{side letter}:{bucket}:{epoch}:{n}``: ``epoch`` is random per
owner (per :class:`IdLog`) and ``n`` counts that owner's records of the bucket
from 0. Keys are never reused, so compaction never puts a record in place of
another owner's (a zombie's late write cannot replace the new owner's), and the
tombstones of a bucket are known from the counts alone, without keeping keys.

Recovery also reads the format of earlier releases, one record per id
(``e:{side letter}:{event id}`` -> its ``occurred_at``), and deletes those
records with their bucket. A recovered bucket that has expired already is
deleted at the next write.
"""

from __future__ import annotations

import os
from typing import Callable, Union

import msgspec

from ..core.vocabulary import SIDES

__all__ = ["IdLog", "Change", "CHUNK_BYTES", "BUCKET_PREFIX", "LEGACY_PREFIX"]

#: A record's ids take at most this many bytes (well under the producer's 1 MB).
CHUNK_BYTES = 256 * 1024
BUCKET_PREFIX = b"b:"
#: The per-id keys of earlier releases, per side.
LEGACY_PREFIX = {side: b"e:" + side[0].encode() + b":" for side in SIDES}
_SIDE_OF = {side[0].encode(): side for side in SIDES}
_LETTER = {side: side[0].encode() for side in SIDES}

_encode = msgspec.msgpack.Encoder().encode
_decode_ids = msgspec.msgpack.Decoder(list[str]).decode
_decode_at = msgspec.msgpack.Decoder(int).decode

#: A changelog record: key, value (None deletes).
Change = tuple[bytes, Union[bytes, None]]
Bucket = tuple[str, int]  # (side, bucket)


class IdLog:
    """Which id records exist per bucket; the records of a batch's new ids and of
    expired buckets (see the module doc)."""

    def __init__(self) -> None:
        self.epoch = os.urandom(8).hex().encode()
        self._written: dict[Bucket, dict[bytes, int]] = {}  # -> records written per epoch (n = 0..count-1)
        self._legacy: dict[Bucket, list[bytes]] = {}         # -> per-id keys of earlier releases
        self._expired: list[Bucket] = []                     # recovered buckets already expired

    def changes(self, added: dict[Bucket, list[str]], removed: list[Bucket]) -> list[Change]:
        """The records for ids added per bucket, then the tombstones of the buckets
        forgotten (and of recovered buckets found expired), in that order."""
        out: list[Change] = []
        for (side, bucket), ids in added.items():
            for chunk in _chunks(ids):
                out.append((self._next_key(side, bucket), _encode(chunk)))
        if self._expired:
            removed = self._expired + removed
            self._expired = []
        for target in removed:
            written = self._written.pop(target, None)
            if written is not None:
                for epoch, count in written.items():
                    out.extend((_key(target, epoch, n), None) for n in range(count))
            legacy = self._legacy.pop(target, None)
            if legacy is not None:
                out.extend((key, None) for key in legacy)
        return out

    def _next_key(self, side: str, bucket: int) -> bytes:
        counts = self._written.get((side, bucket))
        if counts is None:
            counts = self._written[(side, bucket)] = {}
        n = counts.get(self.epoch, 0)
        counts[self.epoch] = n + 1
        return _key((side, bucket), self.epoch, n)

    def read(self, values: dict[bytes, bytes], bucket_of: Callable[[int], int]) -> tuple[list[tuple[str, int, list[str]]], int]:
        """The ids of recovered records, ``(side, bucket, ids)``, both formats
        (``bucket_of``: an event time's bucket, for the per-id records), and how
        many records did not read as id records (left out, as no worker wrote
        them). Remembers every record, to delete it with its bucket."""
        out: list[tuple[str, int, list[str]]] = []
        unreadable = 0
        legacy_ids: dict[Bucket, list[str]] = {}
        for key, value in values.items():
            if key.startswith(BUCKET_PREFIX):
                parts = key.split(b":")
                side = _SIDE_OF.get(parts[1]) if len(parts) == 5 else None
                try:
                    if side is None:
                        raise ValueError("not an id record's key")
                    bucket, n = int(parts[2]), int(parts[4])
                    ids = _decode_ids(value)
                except (ValueError, msgspec.DecodeError):
                    unreadable += 1
                    continue
                counts = self._written.setdefault((side, bucket), {})
                counts[parts[3]] = max(counts.get(parts[3], 0), n + 1)
                out.append((side, bucket, ids))
                continue
            for side, prefix in LEGACY_PREFIX.items():
                if key.startswith(prefix):
                    try:
                        event_id = key[len(prefix):].decode("utf-8")
                        bucket = bucket_of(_decode_at(value))
                    except (UnicodeDecodeError, msgspec.DecodeError):
                        unreadable += 1
                        break
                    self._legacy.setdefault((side, bucket), []).append(key)
                    legacy_ids.setdefault((side, bucket), []).append(event_id)
                    break
        out.extend((side, bucket, ids) for (side, bucket), ids in legacy_ids.items())
        return out, unreadable

    def expired(self, buckets: list[Bucket]) -> None:
        """Recovered buckets the event stage dropped as expired: deleted at the next write."""
        self._expired.extend(b for b in buckets if b in self._written or b in self._legacy)


def _key(target: Bucket, epoch: bytes, n: int) -> bytes:
    """The key of an owner's ``n``-th record of a bucket (:meth:`IdLog.read` parses it back)."""
    return b"%s%s:%d:%s:%d" % (BUCKET_PREFIX, _LETTER[target[0]], target[1], epoch, n)


def _chunks(ids: list[str]) -> list[list[str]]:
    """``ids`` in lists of at most :data:`CHUNK_BYTES` once encoded (an id of n
    characters takes at most 4n + 5 bytes)."""
    if sum(map(len, ids)) * 4 + 5 * len(ids) <= CHUNK_BYTES:
        return [ids]
    out: list[list[str]] = []
    chunk: list[str] = []
    size = 0
    for event_id in ids:
        n = 4 * len(event_id) + 5
        if chunk and size + n > CHUNK_BYTES:
            out.append(chunk)
            chunk, size = [], 0
        chunk.append(event_id)
        size += n
    out.append(chunk)
    return out
