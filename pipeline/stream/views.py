"""The cluster view: what every worker needs of every partition, on one compacted topic.

Any worker answers ``/audit``, ``/incidents`` and the board for the whole
cluster. Each owner of a stage partition publishes, keyed so that compaction
keeps only the latest of each:

- ``p:{stage}:{partition}``: that partition's :class:`~pipeline.core.audit.AuditParts`
  (bounded: counts by vocabulary labels, never by id);
- ``o:{incident_id}``: a :class:`~pipeline.core.incidents.BoardEntry` while the
  incident is overdue, at risk, pending or downgraded; a tombstone when not;
- ``w:{stage}:{partition}``: which worker owns it, and its URL (to forward
  ``/incidents/{id}``);
- ``f:{topic}:{partition}``: when a message was last read from an input partition.

Every record is small; nothing grows with the number of incidents in one
record. Every worker reads the whole topic from the start with no group and
no stored offsets, so there is nothing whose recovery can fail: a worker that
starts rebuilds the view from whatever the topic holds, and later records
correct earlier ones. An owner that takes a partition over republishes its
entries, so a view never rests on a previous owner's last words.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import zlib
from collections import Counter
from typing import Callable, Optional

import msgspec
from aiokafka import AIOKafkaConsumer, TopicPartition

from ..core.audit import AuditParts
from ..core.incident import BoardEntry
from ..core.incidents import IncidentLedger
from ..kafka.client import reveal
from .board import BoardIndex
from .codec import encode_json
from .outbox import Outbox

__all__ = ["ViewPublisher", "ClusterView"]

logger = logging.getLogger(__name__)

_FENCE = b"\x00fence:"


def _partition(key: bytes, partitions: int) -> int:
    return zlib.crc32(key) % partitions


def board_value(e: BoardEntry) -> bytes:
    return encode_json(list(e))


class _Owner(msgspec.Struct):
    """An owner record: which worker owns a stage partition, where its HTTP answers."""

    url: str
    worker: str = ""
    since: float = 0.0


class _Feed(msgspec.Struct):
    """A feed record: when an input partition last delivered (wall clock, seconds)."""

    at: float


# The records as the publisher writes them, typed: a record no worker wrote
# (a deadline that is text, say) is refused whole, never half-applied: in the
# board's sorted lists one value of another type would make every later
# entry fail to compare.
_decode_board = msgspec.json.Decoder(tuple[str, str, Optional[str], Optional[str], Optional[str], tuple[str, ...],
                                           int, int, Optional[str]]).decode
_encode = msgspec.json.Encoder().encode  # owner and feed records: one type each way
_decode_owner = msgspec.json.Decoder(_Owner).decode
_decode_feed = msgspec.json.Decoder(_Feed).decode

#: At most this many distinct values are shared between board entries (the
#: vocabularies have some tens; a cap keeps a bad record stream from growing it).
_SHARED_MAX = 10_000


class ViewPublisher:
    """The owner's side: what changed in the partitions it owns, as view records.

    Responsibilities: remember what it published per owned incident partition
    (so only changes go out); publish parts, owners and feed activity.
    """

    def __init__(self, topic: str, partitions: int, outbox: Outbox) -> None:
        self.topic = topic
        self.partitions = partitions
        self.outbox = outbox
        # incident id -> the hash of the entry last published for it, per owned
        # partition: a hash, not the entry, as this is kept for every open
        # incident (two different entries alike in 64 bits: odds of 2**-64).
        self.published: dict[int, dict[str, int]] = {}
        self._parts_sent: dict[tuple[str, int], tuple[int, bytes]] = {}  # -> (version, value)
        self._records: list[tuple[bytes, bytes | None]] = []

    def board(self, partition: int, ledger: IncidentLedger, incident_ids) -> None:
        """Publish what changed in these incidents' board entries."""
        shown = self.published.setdefault(partition, {})
        for incident_id in incident_ids:
            entry = ledger.board_entry(incident_id)
            fingerprint = None if entry is None else hash(entry)
            if fingerprint != shown.get(incident_id):
                key = b"o:" + incident_id.encode("utf-8")
                if entry is None:
                    del shown[incident_id]
                    self._records.append((key, None))
                else:
                    shown[incident_id] = fingerprint
                    self._records.append((key, board_value(entry)))

    def take_over(self, partition: int, ledger: IncidentLedger) -> None:
        """A newly owned incident partition: publish every entry it holds."""
        self.published[partition] = {}
        self.board(partition, ledger, list(ledger.incidents))

    def give_up(self, stage: str, partition: int) -> None:
        if stage == "incident":
            self.published.pop(partition, None)
        self._parts_sent.pop((stage, partition), None)

    def parts(self, stage: str, partition: int, version: int, build: Callable[[], AuditParts]) -> None:
        """A partition's audit parts, published when they changed.

        ``version`` is the partition's next input offset: parts change only
        by applied records, so at an unchanged version nothing is built (a
        month of counts takes milliseconds to encode); otherwise ``build()``
        is encoded and sent if it differs from what was sent last."""
        key = (stage, partition)
        sent = self._parts_sent.get(key)
        if sent is not None and sent[0] == version:
            return
        value = build().encode()
        if sent is None or sent[1] != value:
            self._records.append((f"p:{stage}:{partition}".encode(), value))
        self._parts_sent[key] = (version, value)

    def owner(self, stage: str, partition: int, url: str, worker: str) -> None:
        self._records.append((f"w:{stage}:{partition}".encode(),
                              _encode(_Owner(url, worker, time.time()))))

    def feed(self, topic: str, partition: int, at: float) -> None:
        self._records.append((f"f:{topic}:{partition}".encode(), _encode(_Feed(at))))

    async def send(self) -> int:
        """Queue the gathered records (acknowledged with the next flush)."""
        records, self._records = self._records, []
        by_partition: dict[int, list] = {}
        for key, value in records:
            by_partition.setdefault(_partition(key, self.partitions), []).append((key, value))
        for p, recs in by_partition.items():
            await self.outbox.send_records(self.topic, p, recs)
        return len(records)


class ClusterView:
    """The reader's side: every worker's copy of the cluster view.

    Responsibilities: read the views topic from the start and keep the latest
    parts per partition (decoded when asked for), partition owners, feed activity and the board index;
    say when it has read everything that was there when it started (:attr:`loaded`).
    """

    def __init__(self, topic: str, partitions: int, client_options: dict, client_id: str, outbox: Outbox) -> None:
        self.topic = topic
        self.partitions = partitions
        self.client_options = client_options
        self.client_id = client_id
        self.outbox = outbox
        self._parts: dict[tuple[str, int], AuditParts] = {}  # decoded, when asked for
        self._parts_raw: dict[tuple[str, int], bytes] = {}    # records not decoded yet
        self.owners: dict[tuple[str, int], _Owner] = {}
        self.feeds: dict[tuple[str, int], float] = {}
        self.board = BoardIndex()
        self._shared: dict = {}  # value -> the one copy the board entries share
        self.loaded = asyncio.Event()
        self.records = 0
        self.errors: Counter = Counter()

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """One view record; a malformed one is counted and skipped."""
        if key is None:
            return
        try:
            kind, _, rest = key.partition(b":")
            if kind == b"o":
                incident_id = rest.decode("utf-8")
                if value is None:
                    self.board.remove(incident_id)
                else:
                    self.board.put(self._board_entry(incident_id, value))
            elif kind == b"p":
                stage, p = rest.decode().rsplit(":", 1)
                key = (stage, int(p))
                if value is None:
                    self._parts.pop(key, None)
                    self._parts_raw.pop(key, None)
                else:
                    self._parts_raw[key] = value
            elif kind == b"w":
                stage, p = rest.decode().rsplit(":", 1)
                if value:
                    self.owners[(stage, int(p))] = _decode_owner(value)
                else:
                    self.owners.pop((stage, int(p)), None)
            elif kind == b"f":
                topic, p = rest.decode().rsplit(":", 1)
                if value is not None:
                    self.feeds[(topic, int(p))] = _decode_feed(value).at
        except (ValueError, TypeError, KeyError) as exc:
            self.errors[type(exc).__name__] += 1

    async def run(self) -> None:
        """Read the topic forever (a task of the worker)."""
        fences: dict[int, int] = {}
        fence_key = _FENCE + os.urandom(8).hex().encode()
        futures = [(p, await self.outbox.send(self.topic, None, key=fence_key, partition=p))
                   for p in range(self.partitions)]
        await self.outbox.flush()
        for p, fut in futures:
            fences[p] = fut.result().offset
        consumer = AIOKafkaConsumer(**reveal(self.client_options), client_id=f"{self.client_id}-views", group_id=None,
                                    enable_auto_commit=False, auto_offset_reset="earliest", fetch_max_wait_ms=100,
                                    max_partition_fetch_bytes=8 * 1024 * 1024)
        await consumer.start()
        try:
            tps = [TopicPartition(self.topic, p) for p in range(self.partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            waiting = set(fences)
            t0 = time.monotonic()
            while True:
                batches = await consumer.getmany(timeout_ms=500, max_records=20_000)
                for tp, records in batches.items():
                    for r in records:
                        if r.key is not None and r.key.startswith(_FENCE):
                            if r.offset >= fences.get(tp.partition, 1 << 62):
                                waiting.discard(tp.partition)
                            continue
                        self.apply(r.key, r.value)
                    self.records += len(records)
                for p in list(waiting):
                    if await consumer.position(TopicPartition(self.topic, p)) > fences[p]:
                        waiting.discard(p)
                if not waiting and not self.loaded.is_set():
                    self.loaded.set()
                    logger.info("views: %d records read in %.1f s", self.records, time.monotonic() - t0)
        finally:
            await consumer.stop()

    def _board_entry(self, incident_id: str, value: bytes) -> BoardEntry:
        """A board record's entry, its few distinct values (status, category,
        district, channel, flags, reason) shared between entries: the index
        holds one entry per open incident of the whole cluster, and a decoded
        copy of each would cost more than the entry itself."""
        _id, status, category, district, channel, flags, since, deadline, reason = _decode_board(value)
        share = self._share
        return BoardEntry(incident_id, share(status), share(category), share(district), share(channel),
                          share(flags), since, deadline, share(reason))

    def _share(self, value):
        shared = self._shared.get(value)
        if shared is None:
            if len(self._shared) >= _SHARED_MAX:
                return value
            shared = self._shared[value] = value
        return shared

    def parts(self, stage: str, partition: int) -> AuditParts | None:
        """The latest parts a partition's owner published (None: none yet).

        Decoded only when asked for, and then once per record: a partition's
        parts are republished every tick, every worker reads every one, and
        a worker asks only for partitions it does not own (a month of counts
        takes milliseconds to decode). A malformed record is counted and
        skipped; the last good parts stay."""
        key = (stage, partition)
        raw = self._parts_raw.pop(key, None)
        if raw is not None:
            try:
                self._parts[key] = AuditParts.decode(raw)
            except (ValueError, TypeError, KeyError) as exc:
                self.errors[type(exc).__name__] += 1
        return self._parts.get(key)

    def owner_url(self, stage: str, partition: int) -> str | None:
        owner = self.owners.get((stage, partition))
        return None if owner is None else owner.url
