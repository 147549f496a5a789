"""The workers' stream layer without Kafka: the real stage partitions, intake,
router and changelog format, with topics and changelogs held in lists.

A scheduler picks which stage partition reads next and how many records;
between batches it can crash a partition at any of the points a real worker
can die (before its outputs are sent; after they are sent but before its
checkpoint; with its state changes written but not their checkpoint; after
the checkpoint but before the input offsets are committed; with the new
owner's consumer positioned past the checkpoint), or let a zombie
(an owner that has not noticed it was replaced) finish its batch after the new
owner's fence; and recover the partition from its changelog with the store's
own rules (:func:`pipeline.stream.store.read_changelog`). It can also re-read
input records, as a new owner of an input partition does after a rebalance.
Whatever it does, the audit must equal the offline audit
(tests/test_stream_stages.py).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from pipeline.core.audit import AuditParts, build_audit
from pipeline.kafka.topics import STAGES
from pipeline.core.validation import Validator
from pipeline.stream.codec import encode_json
from pipeline.stream.intake import Intake
from pipeline.stream.partitions import PARTITION_TYPES
from pipeline.stream.store import CHECKPOINT_PREFIX, FENCE_PREFIX, read_changelog
from pipeline.stream.transport import KafkaRouter


@dataclass
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


class Harness:
    """A cluster of stage partitions in one process (see the module doc)."""

    def __init__(self, settings, seed: int = 0) -> None:
        self.settings = settings
        self.config = settings.core()
        self.n = settings.partitions
        self.rng = random.Random(seed)
        self.router = KafkaRouter(self.n)
        self.intake = Intake(self.config.topics, Validator(self.config.vocabulary, self.config.limits), self.router)
        self.ops = {(s, p): [] for s in STAGES for p in range(self.n)}          # the op topics
        self.changelog = {(s, p): [] for s in STAGES for p in range(self.n)}    # (key, value, writer)
        self.tokens: dict = {}
        self.parts = {key: self._new(key) for key in self.ops}
        for key in self.ops:
            self._fence(key)
        self.position = {key: 0 for key in self.ops}  # next record a partition reads
        self.alerts: list = []
        self.deadletters: list = []
        self.errors: list = []
        self.max_time = None
        self.crash_rate = 0.0
        self.crashes = 0

    def _new(self, key):
        stage, p = key
        return PARTITION_TYPES[stage](p, self.config, self.router)

    def _fence(self, key) -> bytes:
        """A new owner's epoch begins: its fence, with its token."""
        token = b"t%d" % self.rng.randrange(1 << 40)
        self.tokens[key] = token
        self.changelog[key].append((FENCE_PREFIX + token, token, token))
        return token

    # ------------------------------------------------------------------ inputs
    def feed(self, topic: str, partition: int, records: list[Record]) -> None:
        """An input batch through the intake; its stage messages are published at once."""
        self.intake.handle(topic, records, lambda *a: self.errors.append(a))
        self._publish()

    def _publish(self) -> None:
        for out in self.router.drain(self.max_time):
            self.ops[(out.stage, out.partition)].append(out.value)
        self.alerts.extend(self.router.alerts)
        self.router.alerts = []
        self.deadletters.extend(self.router.deadletters)
        self.router.deadletters = []

    # ------------------------------------------------------------------ one batch
    def step(self, crash: str | None = None) -> bool:
        """One batch of a random partition with unread records; False when none has any.

        ``crash``: None (a normal batch), or where the partition's owner dies:
        ``before_outputs``, ``before_checkpoint``, ``mid_checkpoint`` (its
        changes written, not their checkpoint), ``after_checkpoint``; or
        ``zombie``: it is replaced first and finishes its batch afterwards;
        ``garbled``: its checkpoint record is garbage and it dies (``garbled_on``:
        it goes on), as if the checkpoint had never been written.
        """
        ready = [k for k in self.ops if self.position[k] < len(self.ops[k])]
        if not ready:
            return False
        key = self.rng.choice(ready)
        part = self.parts[key]
        token = self.tokens[key]
        stage, p = key
        topic = self.settings.app_id + f"-{stage}-ops"
        end = min(len(self.ops[key]), self.position[key] + self.rng.randint(1, 6))
        for offset in range(self.position[key], end):
            if not part.process(Record(topic, p, offset, None, self.ops[key][offset]),
                                lambda *a: self.errors.append(a)):
                end = part.next_offset  # a gap: the runner seeks back to the partition's next offset
                break
        if crash == "before_outputs":
            self._recover(key)
            return True
        if crash == "zombie":
            self._recover(key)  # the new owner fences the partition while the old one still works
        changes = part.collect()
        t = part.max_time()
        if t is not None and (self.max_time is None or t > self.max_time):
            self.max_time = t
        self._publish()
        if crash == "before_checkpoint":
            self._recover(key)
            return True
        self.changelog[key].extend((k, v, token) for k, v in changes)
        if crash == "mid_checkpoint":
            self._recover(key)
            return True
        checkpoint = encode_json({"meta": part.meta(), "next": part.next_offset})
        if crash in ("garbled", "garbled_on"):  # bytes no worker writes, where its checkpoint goes
            checkpoint = self.rng.choice((b"", b"\x00", checkpoint[:-1], b'{"meta": {}, "next": -1}', b"[]"))
        self.changelog[key].append((CHECKPOINT_PREFIX + token, checkpoint, token))
        part.dirty = False
        if crash == "zombie":
            return True  # its writes came after the new owner's fence: they must not count
        self.position[key] = end
        if crash in ("after_checkpoint", "garbled"):  # the committed offset lags: the checkpoint's position wins
            self._recover(key)
        elif crash == "ahead":  # the consumer's position runs ahead of the checkpoint (a handover race)
            self._recover(key)
            ahead = self.position[key] + self.rng.randint(1, 4)
            if ahead < len(self.ops[key]):  # a record past the gap is there to be fetched
                self.position[key] = ahead
        return True

    def broadcast(self) -> None:
        """The watermark source to every stage partition (a tick)."""
        if self.max_time is not None:
            for out in self.router.broadcast(self.max_time, STAGES):
                self.ops[(out.stage, out.partition)].append(out.value)

    def _recover(self, key) -> None:
        """The partition's owner died (or is presumed dead): a new one recovers it."""
        rec = read_changelog(self.changelog[key])
        self._fence(key)
        part = self._new(key)
        part.load(rec)
        self.parts[key] = part
        self.position[key] = rec.next_offset or 0

    def crash(self) -> str | None:
        """Where the next batch's worker dies, by :attr:`crash_rate` (None: it does not)."""
        if self.rng.random() < self.crash_rate:
            self.crashes += 1
            return self.rng.choice(("before_outputs", "before_checkpoint", "mid_checkpoint", "after_checkpoint",
                                    "zombie", "ahead", "garbled", "garbled_on"))
        return None

    def run(self) -> None:
        """Batches until every partition has read everything and the watermark reached them all."""

        def drain():
            while self.step(self.crash()):
                pass

        while True:
            drain()
            before = self.max_time
            self.broadcast()
            drain()
            if self.max_time == before:
                return

    def audit(self) -> dict:
        total = AuditParts.total(part.stage.parts() for part in self.parts.values())
        return build_audit(total, self.config.params.allowed_lateness)
