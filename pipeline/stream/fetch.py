"""A worker's consumers take a fetched partition as a list, not a record at a time.

Why: aiokafka's fetcher makes each fetched record into a ``ConsumerRecord``
in a generator, one ``next()`` at a time, and ``getmany`` gathers them with a
Python loop (``FetchResult.getall``): 1.2-1.5 us a record on the project's
machine, against 0.65-0.7 us to make the same records in one compiled loop
(:func:`pipeline.stream.fetched.unpack_batch`). A worker reads every input
message once; ``getmany`` was about a sixth of its batch loop's samples.

What :func:`install` changes, in aiokafka's fetcher module, for every consumer
of the process (the worker calls it once, at start):

- the class that holds a fetched partition's records (``PartitionRecords``)
  becomes :class:`UnpackedRecords`: it unpacks the fetch's record batches, as
  many as a ``getmany`` takes, into a list of
  :class:`~pipeline.stream.fetched.Fetched` records (the attributes of a
  ``ConsumerRecord``). Never the whole fetch at once: a worker holds a fetch
  for each of its partitions, and a take needs a few thousand records. (The
  first version unpacked whole fetches and kept aiokafka's unused generator,
  a reference cycle: the scale benchmark's worker then held 784 MiB with
  200,000 incidents open, against 386 MiB; now 398 MiB);
- ``FetchResult.getall`` takes a slice of that list.

The rules are aiokafka's own, kept step for step from its
``PartitionRecords._unpack_records`` (aiokafka 0.14): each batch's CRC is
checked; under ``read_committed`` the batches of aborted transactions are
skipped; control batches are skipped; records before the position are
skipped (a compressed batch is fetched whole); the position moves to the
offset after the last record returned, or, once the fetch is used up, to the
offset after its last batch (a compacted or control batch at the end is not
fetched again). A batch whose CRC does not match ends the fetch there: the
records before it are returned, the next ``getmany`` raises
``CorruptRecordException``, and the one after fetches again from that batch.
(aiokafka raises from the ``getmany`` that reaches the batch, dropping the
records that call had gathered, and fetches them again with the corrupt
batch: it never returns them.) ``tests/test_fetch.py`` checks all of that against
aiokafka's own class, record for record and position for position. A
consumer with a key or value deserializer gets aiokafka's own path; records
read one at a time (``getone``) come from the same list.
"""

from __future__ import annotations

import logging

from aiokafka import errors as Errors
from aiokafka.consumer import fetcher as _fetcher
from aiokafka.consumer.fetcher import READ_COMMITTED, FetchResult, PartitionRecords

from .fetched import Fetched, unpack_batch

__all__ = ["UnpackedRecords", "install", "installed"]

logger = logging.getLogger(__name__)

_aiokafka_getall = FetchResult.getall


class UnpackedRecords(PartitionRecords):
    """One fetched partition's records, unpacked a record batch at a time as takes need them."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        #: no deserializer: the records are taken from the list
        self.fast = self._key_deserializer is None and self._value_deserializer is None
        if self.fast:
            # aiokafka's generator, never run here, holds this object in a cycle: with the
            # worker's gc.freeze() after each batch, the fetch buffers (megabytes each) it
            # kept alive waited for the full collection every 10 minutes (the scale
            # benchmark's worker: 544 MiB with 200,000 incidents open, against 398).
            self._records_iterator = None
        self._list: list[Fetched] = []  # unpacked, not taken yet (from _taken on)
        self._taken = 0
        self._position = self.next_fetch_offset  # where unpacking has got to
        self._unpacked = False  # every record batch of the fetch unpacked
        self._error: Exception | None = None  # a corrupt batch, raised once the records before it are taken

    @property
    def exhausted(self) -> bool:
        """Every record taken, and no error left to raise: the fetch is used up."""
        return self._unpacked and self._taken >= len(self._list) and self._error is None

    def _unpack(self, wanted: int | None) -> None:
        """aiokafka's ``_unpack_records``, a record batch at a time (see the module
        doc), until ``wanted`` records wait (all, if None): a fetch can hold
        tens of thousands of records, a take needs a few thousand, and records
        made long before they are taken only hold memory."""
        items = self._list
        if self._taken:
            del items[:self._taken]
            self._taken = 0
        tp = self._tp
        topic, partition, records = tp.topic, tp.partition, self._records
        while not self._unpacked and (wanted is None or len(items) < wanted):
            if not records.has_next():
                self._unpacked = True
                self._records = None  # the fetch's bytes: no longer needed
                break
            batch = records.next_batch()
            if self._check_crcs and not batch.validate_crc():
                self._error = Errors.CorruptRecordException(f"Invalid CRC - {tp}")
                self._unpacked = True
                self._records = None
                break
            if self._isolation_level == READ_COMMITTED and batch.producer_id is not None:
                self._consume_aborted_up_to(batch.base_offset)
                if batch.is_control_batch and self._contains_abort_marker(batch):
                    self._aborted_producers.discard(batch.producer_id)
                if batch.is_transactional and batch.producer_id in self._aborted_producers:
                    self._position = batch.next_offset
                    continue
            if batch.is_control_batch:
                self._position = batch.next_offset
                continue
            unpack_batch(batch, topic, partition, self._position, items)
            self._position = batch.next_offset

    def take(self, max_records: int | None) -> list[Fetched]:
        """The next records, at most ``max_records``; moves :attr:`next_fetch_offset` past them."""
        if max_records is not None and max_records <= 0:
            return []
        self._unpack(max_records)
        items = self._list
        if not items and self._error is not None:
            error, self._error = self._error, None
            self.next_fetch_offset = self._position
            raise error
        if max_records is not None and max_records < len(items):
            got = items[:max_records]
            self._taken = max_records
            self.next_fetch_offset = got[-1].offset + 1
            return got
        self._list = []
        # the fetch used up: past its last batch (a compacted or control batch at the end is not fetched again)
        self.next_fetch_offset = self._position if self._unpacked else items[-1].offset + 1
        return items

    def __next__(self):
        if not self.fast:
            return super().__next__()
        got = self.take(1)
        if not got:
            raise StopIteration
        return got[0]


def _getall(self: FetchResult, max_records: int | None = None) -> list:
    """``FetchResult.getall`` for :class:`UnpackedRecords`: a slice, not a loop."""
    records = self._partition_records
    if type(records) is not UnpackedRecords or not records.fast:
        return _aiokafka_getall(self, max_records)
    if not self.check_assignment(self._topic_partition) or not self.has_more():
        return []
    got = records.take(max_records)
    self._update_position()
    if records.exhausted:
        self._partition_records = None
    return got


def installed() -> bool:
    return _fetcher.PartitionRecords is UnpackedRecords


def install() -> bool:
    """Use :class:`UnpackedRecords` for every consumer of this process (idempotent).
    Returns False, and leaves aiokafka as it is, if its fetcher is not the one
    this was written for."""
    if installed():
        return True
    needed = (hasattr(PartitionRecords, "_unpack_records") and hasattr(PartitionRecords, "_consume_aborted_up_to")
              and hasattr(FetchResult, "_update_position") and hasattr(FetchResult, "check_assignment"))
    if not needed:
        logger.warning("aiokafka's fetcher is not the one expected: its own record path is kept (slower)")
        return False
    _fetcher.PartitionRecords = UnpackedRecords
    FetchResult.getall = _getall
    return True
