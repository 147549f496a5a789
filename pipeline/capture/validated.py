"""Capture files read, validated and claimed, in a second process when there is a second core.

The offline audit runs the monitor's three stages in two processes, split
where a worker's topology splits them: the *reader* reads each line,
validates it (the one validator) and runs the
:class:`~pipeline.core.stages.EventStage` (event ids, duplicates, the event
counts); the *parent* runs the incident and crime stages. The reader streams
what its event stage sends on, in file order, as msgpack batches of the
core's own stage messages, the ones a worker's event stage puts on its topic:

- an :class:`~pipeline.core.events.IncidentEvent` or
  :class:`~pipeline.core.events.CrimeEvent`: the first copy of its id;
- a :class:`~pipeline.core.events.Stale`: a first copy so old that its id may
  have been forgotten (the ledger that owns it decides);
- an :class:`Invalid`: the side and reason of a rejection (counted by the
  reader's event stage already; the parent keeps the reasons);
- a :class:`Skipped`: a line that carries no message;
- last, :class:`Claimed`: the event stage's final meta (counts, watermark
  source), which the parent loads into its own event stage, as a worker
  recovering a partition loads a checkpoint.

Duplicates never cross the pipe, and the halves cost about the same. The
parent takes frames off the pipe on a thread of its own, into a short queue,
so that neither process waits through the other's slow moments (a settle of
the ledgers, a stretch of hard-to-validate lines). With ``jobs=1`` the same
happens in one process.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import threading
from typing import Final, Iterator, cast

import msgspec

from ..core.config import CoreConfig
from ..core.events import CrimeEvent, IncidentEvent, Rejection, Stale
from ..core.stages import EventStage
from ..core.validation import Validator
from ..core.vocabulary import CRIMES, INCIDENTS
from .claims import Claim, Claimed, Failed, Invalid, Skipped, decode_claims
from .reading import CaptureError, max_line_bytes, read_payloads

__all__ = ["Invalid", "Skipped", "Claimed", "Claim", "claimed_batches"]

_BATCH: Final = 4096
_FIRST: Final = 256  # the first frame's messages (then twice as many a frame, up to _BATCH): the ledgers start sooner
_QUEUED: Final = 16  # frames received and not yet applied: ~10 MB at most


class _Forward:
    """The reader's event stage router: what it sends on joins the output."""

    def __init__(self, out: list) -> None:
        self.out = out

    def incident_event(self, ev: IncidentEvent, stale: bool) -> None:
        self.out.append(Stale(ev) if stale else ev)

    def crime_event(self, ev: CrimeEvent, stale: bool) -> None:
        self.out.append(Stale(ev) if stale else ev)

    def deadletter(self, key: bytes | None, record: bytes) -> None:
        """Never called: the reader rejects without a dead letter (it counts)."""


def _items(paths: list[str], config: CoreConfig, now: int) -> Iterator[list]:
    """The reader: lists of :data:`Claim` items, in file order, :class:`Claimed` last.

    Messages are validated a batch per feed at a time (:meth:`Validator.validate_many`)
    and claimed in file order; a skipped line first settles the batch before it."""
    validate_many = Validator(config.vocabulary, config.limits).validate_many
    side_of = {config.topics.incidents: INCIDENTS, config.topics.crimes: CRIMES}
    out: list = []
    stage = EventStage(config, _Forward(out), persist=False)
    arrive, reject = stage.arrive, stage.reject
    pending: dict[str, list[bytes]] = {INCIDENTS: [], CRIMES: []}
    order: list[str] = []  # the feed of each pending message, in file order

    def claim() -> None:
        results = {side: iter(validate_many(side, raws, now)) for side, raws in pending.items() if raws}
        for side in order:
            r = next(results[side])
            if isinstance(r, Rejection):
                reject(side)
                out.append(Invalid(side, r.reason))
            else:
                arrive(r)
        order.clear()
        for raws in pending.values():
            raws.clear()

    def skipped(path: str, line_no: int, why: str) -> None:
        claim()
        out.append(Skipped(path, line_no, why))

    limit = _FIRST
    for topic, payload in read_payloads(paths, config.topics.incidents, config.topics.crimes, skipped,
                                        max_line_bytes(config.limits.max_message_bytes)):
        side = side_of[topic]
        pending[side].append(payload)
        order.append(side)
        if len(order) >= limit:
            claim()
            yield out[:]
            out.clear()
            limit = min(2 * limit, _BATCH)
    claim()
    out.append(Claimed(stage.meta()))
    yield out


def _child(conn, paths: list[str], config: CoreConfig, now: int) -> None:  # pragma: no cover - in the child
    encode = msgspec.msgpack.Encoder().encode
    try:
        for batch in _items(paths, config, now):
            conn.send_bytes(encode(batch))
    except CaptureError as exc:
        conn.send_bytes(encode([Failed(str(exc))]))
    except BaseException as exc:  # noqa: BLE001 - reported by the parent, never lost
        conn.send_bytes(encode([Failed(f"unexpected failure reading the capture: {type(exc).__name__}: {exc}")]))
    conn.send_bytes(b"")
    conn.close()


def _widen(conn) -> None:
    """The largest pipe buffer an unprivileged process may ask for (Linux): a frame or two in flight."""
    try:
        import fcntl

        with open("/proc/sys/fs/pipe-max-size") as fh:
            size = int(fh.read())
        fcntl.fcntl(conn.fileno(), fcntl.F_SETPIPE_SZ, min(size, 1 << 20))
    except (ImportError, AttributeError, OSError, ValueError):
        pass


def _receive(conn, frames: "queue.Queue", stop: threading.Event) -> None:
    """The parent's receiving thread: frames off the pipe as soon as they come
    (``None`` when the reader died), so that neither process waits for the
    other's slow moments: the reader for the ledgers' settles, the ledgers for
    a slow stretch of validation. At most :data:`_QUEUED` frames wait."""
    try:
        while not stop.is_set():
            frame = conn.recv_bytes()
            frames.put(frame)
            if not frame:
                return
    except (EOFError, OSError):
        if not stop.is_set():
            frames.put(None)


def claimed_batches(paths: list[str], config: CoreConfig, now: int, jobs: int = 2) -> Iterator[list[Claim]]:
    """What the event stage sends on for the capture files, in file order, in
    batches of a few thousand (see the module doc)."""
    if jobs < 2 or "fork" not in multiprocessing.get_all_start_methods() or len(os.sched_getaffinity(0)) < 2:
        yield from _items(paths, config, now)
        return
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    _widen(parent)
    proc = ctx.Process(target=_child, args=(child, paths, config, now), daemon=True)
    proc.start()
    child.close()
    frames: queue.Queue = queue.Queue(maxsize=_QUEUED)
    stop = threading.Event()
    receiver = threading.Thread(target=_receive, args=(parent, frames, stop), name="capture-frames", daemon=True)
    receiver.start()
    decode = decode_claims
    try:
        while True:
            frame = frames.get()
            if frame is None:
                raise CaptureError("the capture reader stopped unexpectedly")
            if not frame:
                break
            batch = decode(frame)
            last = batch[-1] if batch else None
            if isinstance(last, Failed):  # a failure is a frame of its own
                raise CaptureError(last.message)
            yield cast("list[Claim]", batch)
    finally:
        stop.set()
        if receiver.is_alive():  # stopped early: the reader's output is not wanted any more
            proc.kill()
        while receiver.is_alive():  # it may wait to queue a frame nobody will read
            try:
                frames.get(timeout=0.05)
            except queue.Empty:
                pass
        parent.close()
        proc.join(timeout=5)
        if proc.is_alive():
            proc.kill()
