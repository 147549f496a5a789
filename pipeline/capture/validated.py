"""Capture files read and validated, in a second process when there is a second core.

The offline audit has two halves of about equal cost: reading and validating
each line, and applying it to the stages. With ``jobs=2`` a forked child
reads and validates (:func:`pipeline.capture.read_payloads`, the one
validator) and streams the results, in file order, to the parent as msgpack
batches of the core's own event types; the parent only applies them. Each
message yields one :class:`Validated` item: an event, or the side and reason
of a rejection; a line that carries no message yields a :class:`Skipped`.
``jobs=1`` does the same in one process.
"""

from __future__ import annotations

import multiprocessing
import os
from typing import Iterator, Union

import msgspec

from ..core.config import CoreConfig
from ..core.events import CrimeEvent, IncidentEvent, Rejection
from ..core.validation import Validator
from ..core.vocabulary import CRIMES, INCIDENTS
from .reading import CaptureError, read_payloads

__all__ = ["Invalid", "Skipped", "Validated", "validated_messages"]

_BATCH = 4096


class Invalid(msgspec.Struct, array_like=True, frozen=True, gc=False, tag="v"):
    """A message its validation rejected."""

    side: str
    reason: str


class Skipped(msgspec.Struct, array_like=True, frozen=True, gc=False, tag="k"):
    """A capture line that carries no message."""

    source: str
    line_no: int
    reason: str


class _Failed(msgspec.Struct, array_like=True, frozen=True, tag="f"):
    """The child could not read a file (the parent raises it as a :class:`CaptureError`)."""

    message: str


Validated = Union[IncidentEvent, CrimeEvent, Invalid, Skipped]
_decoder = msgspec.msgpack.Decoder(list[Union[IncidentEvent, CrimeEvent, Invalid, Skipped, _Failed]])


def _items(paths: list[str], config: CoreConfig, now: int) -> Iterator:
    validator = Validator(config.vocabulary, config.limits)
    validate = validator.validate
    side_of = {config.topics.incidents: INCIDENTS, config.topics.crimes: CRIMES}
    skipped: list[Skipped] = []
    for topic, payload in read_payloads(paths, config.topics.incidents, config.topics.crimes,
                                        lambda p, ln, why: skipped.append(Skipped(p, ln, why))):
        if skipped:
            yield from skipped
            skipped.clear()
        side = side_of[topic]
        r = validate(side, payload, now)
        yield Invalid(side, r.reason) if type(r) is Rejection else r
    yield from skipped


def _child(conn, paths: list[str], config: CoreConfig, now: int) -> None:  # pragma: no cover - in the child
    encode = msgspec.msgpack.Encoder().encode
    batch: list = []
    try:
        for item in _items(paths, config, now):
            batch.append(item)
            if len(batch) >= _BATCH:
                conn.send_bytes(encode(batch))
                batch = []
    except CaptureError as exc:
        batch.append(_Failed(str(exc)))
    except BaseException as exc:  # noqa: BLE001 - reported by the parent, never lost
        batch.append(_Failed(f"unexpected failure reading the capture: {type(exc).__name__}: {exc}"))
    conn.send_bytes(encode(batch))
    conn.send_bytes(b"")
    conn.close()


def validated_messages(paths: list[str], config: CoreConfig, now: int, jobs: int = 2) -> Iterator[Validated]:
    """Every message of the capture files, validated, in file order (see the module doc)."""
    if jobs < 2 or "fork" not in multiprocessing.get_all_start_methods() or len(os.sched_getaffinity(0)) < 2:
        yield from _items(paths, config, now)
        return
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, paths, config, now), daemon=True)
    proc.start()
    child.close()
    decode = _decoder.decode
    try:
        while True:
            try:
                frame = parent.recv_bytes()
            except EOFError:
                raise CaptureError("the capture reader stopped unexpectedly") from None
            if not frame:
                break
            for item in decode(frame):
                if type(item) is _Failed:
                    raise CaptureError(item.message)
                yield item
    finally:
        parent.close()
        proc.join(timeout=5)
        if proc.is_alive():
            proc.kill()
