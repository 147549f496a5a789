"""The cluster view's records (pipeline/stream/views.py) without a broker: what an
owner publishes is what every reader's board index holds, changes only, and a
malformed record is counted, never raised."""

from __future__ import annotations

from pipeline.core.incident import BoardEntry
from pipeline.stream.views import ClusterView, ViewPublisher


class _Ledger:
    def __init__(self, entries: dict[str, BoardEntry]) -> None:
        self.entries = entries

    def board_entry(self, incident_id: str) -> BoardEntry | None:
        return self.entries.get(incident_id)


def _entry(i: int, status: str = "overdue") -> BoardEntry:
    return BoardEntry(f"KNT-{i:06d}", status, "rape", "Medway", "999", ("domestic_abuse",), 1_000 + i, 2_000 + i,
                      None)


def _read(view: ClusterView, publisher: ViewPublisher) -> int:
    records, publisher._records = publisher._records, []
    for key, value in records:
        view.apply(key, value)
    return len(records)


def test_readers_hold_what_the_owner_published_and_only_changes_travel():
    ledger = _Ledger({e.incident_id: e for e in (_entry(i) for i in range(50))})
    publisher, view = ViewPublisher("v", 6, None), ClusterView("v", 6, {}, "r", None)
    publisher.board(0, ledger, list(ledger.entries))
    assert _read(view, publisher) == 50
    assert view.board.entries == ledger.entries
    first, second = view.board.entries["KNT-000001"], view.board.entries["KNT-000002"]
    assert first.category is second.category and first.flags is second.flags  # shared, not copied per entry

    publisher.board(0, ledger, list(ledger.entries))
    assert _read(view, publisher) == 0  # nothing changed, nothing sent
    ledger.entries["KNT-000003"] = _entry(3, "pending")
    del ledger.entries["KNT-000004"]
    publisher.board(0, ledger, ["KNT-000003", "KNT-000004", "KNT-000005"])
    assert _read(view, publisher) == 2
    assert view.board.entries == ledger.entries


def test_a_malformed_board_record_is_counted_and_skipped():
    view = ClusterView("v", 6, {}, "r", None)
    for value in (b"[1, 2]", b'["x", "overdue", ["not", "hashable"], null, null, [], 1, 2, null]', b"{",
                  b'["x", "overdue", null, null, null, 5, 1, 2, null]'):
        view.apply(b"o:KNT-1", value)
    assert len(view.board) == 0 and sum(view.errors.values()) == 4


def test_parts_are_decoded_when_asked_for_and_a_malformed_record_keeps_the_last_good_one():
    from collections import Counter

    from pipeline.core.audit import AuditParts
    from pipeline.core.keys import Contribution

    view = ClusterView("v", 6, {}, "r", None)
    publisher = ViewPublisher("v", 6, None)
    one = AuditParts(incidents=Counter({Contribution("overdue", "rape", "Medway", "999", None): 3}), max_time=7)
    publisher.parts("incident", 2, 10, lambda: one)
    assert _read(view, publisher) == 1
    publisher.parts("incident", 2, 10, lambda: 1 / 0)  # same version: nothing built
    publisher.parts("incident", 2, 11, lambda: one)    # new version, same parts: nothing sent
    assert _read(view, publisher) == 0
    assert view.parts("incident", 3) is None
    got = view.parts("incident", 2)
    assert got == one and view.parts("incident", 2) is got  # decoded once
    view.apply(b"p:incident:2", b"{not json")
    assert view.parts("incident", 2) == one and sum(view.errors.values()) == 1
    good = one.encode()
    for bad in (good.replace(b"3]", b'"3"]'), good.replace(b"3]", b"-3]"), good.replace(b'"m":7', b'"m":"7"'),
                good.replace(b'"rape"', b"5"), good.replace(b'"i":', b'"x":')):
        assert bad != good
        view.apply(b"p:incident:2", bad)  # would break every /audit it is added to
        assert view.parts("incident", 2) == one
    assert sum(view.errors.values()) == 6
    view.apply(b"p:incident:2", None)
    assert view.parts("incident", 2) is None


def test_a_board_record_with_values_of_the_wrong_type_cannot_poison_the_index():
    """A record no worker wrote (a deadline that is text, flags that are not
    text) must be refused as a whole: once in the sorted lists, a value of
    another type would make every later entry fail to compare."""
    view = ClusterView("v", 6, {}, "r", None)
    for value in (b'["x", "overdue", null, null, null, [], "soon", "soon", null]',
                  b'["x", "overdue", null, null, null, [1, 2], 1, 2, null]',
                  b'["x", "overdue", 5, null, null, [], 1, 2, null]',
                  b'["x", "overdue", null, null, null, [], 1, 2.5, null]',
                  b'["x", "overdue", null, null, null, [], 1, 2, null, "extra"]'):
        view.apply(b"o:KNT-0", value)
    assert len(view.board) == 0 and sum(view.errors.values()) == 5
    publisher = ViewPublisher("v", 6, None)
    ledger = _Ledger({e.incident_id: e for e in (_entry(i) for i in range(5))})
    publisher.board(0, ledger, list(ledger.entries))
    assert _read(view, publisher) == 5
    assert view.board.entries == ledger.entries and view.board.count("overdue") == 5


def test_an_owner_or_feed_record_of_the_wrong_shape_is_counted_and_skipped():
    view = ClusterView("v", 6, {}, "r", None)
    view.apply(b"w:incident:1", b'{"url": "http://w1:6066", "worker": "w1", "since": 1.0}')
    for value in (b"[1]", b'{"url": 5}', b'"http://x"', b"{"):
        view.apply(b"w:incident:2", value)
        view.apply(b"f:cc.incidents:0", value)
    view.apply(b"f:cc.incidents:1", b'{"at": 17.5}')
    assert view.owner_url("incident", 1) == "http://w1:6066" and view.owner_url("incident", 2) is None
    assert view.feeds == {("cc.incidents", 1): 17.5} and sum(view.errors.values()) == 8
