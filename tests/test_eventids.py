"""Event ids (:mod:`pipeline.core.eventids`) against the rule its docstring
states, written out plainly here: an id is remembered until the watermark
passes the end of the hour in which ``occurred_at + id_retention`` falls; a
first copy older than the retention is *stale*. Whatever order the claims
and watermark moves come in, each claim's answer and the counts agree."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.config import Params
from pipeline.core.eventids import DUPLICATE, FIRST, STALE, EventIds, event_id_of, id_key
from pipeline.core.times import HOUR, MINUTE
from pipeline.core.vocabulary import CRIMES, INCIDENTS

# id_retention = 1 h + 2 * 1 h = 3 h; lateness 10 min: expiry in play within a few hours
PARAMS = Params(recording_deadline=HOUR, allowed_lateness=10 * MINUTE, at_risk_window=30 * MINUTE,
                state_retention=HOUR)


class Model:
    """The rule, with no buckets and no heap."""

    def __init__(self, params: Params) -> None:
        self.retention, self.lateness = params.id_retention, params.allowed_lateness
        self.seen: dict = {}
        self.max_time = None

    def _forget(self) -> None:
        w = self.max_time - self.lateness
        for key, at in list(self.seen.items()):
            if ((at + self.retention) // HOUR + 1) * HOUR <= w:
                del self.seen[key]

    def observe(self, t: int) -> None:
        if self.max_time is None or t > self.max_time:
            self.max_time = t
            self._forget()

    def claim(self, side: str, event_id: str, at: int) -> int:
        if (side, event_id) in self.seen:
            return DUPLICATE
        self.observe(at)
        if at + self.retention <= self.max_time - self.lateness:
            return STALE
        self.seen[(side, event_id)] = at
        return FIRST


_steps = st.lists(st.one_of(
    st.tuples(st.just("claim"), st.sampled_from([INCIDENTS, CRIMES]), st.sampled_from("abcdefgh"),
              st.integers(0, 10 * HOUR)),
    st.tuples(st.just("observe"), st.just(""), st.just(""),
              st.one_of(st.integers(0, 10 * HOUR),
                        st.sampled_from([b * HOUR + 10 * MINUTE + d for b in range(2, 10) for d in (-1, 0, 1)])))),
    max_size=60)


@settings(max_examples=400, deadline=None)
@given(_steps)
def test_claims_follow_the_retention_rule_whatever_the_order(steps):
    ids, model = EventIds(PARAMS, track=False), Model(PARAMS)
    want = {side: {"valid": 0, "duplicate": 0} for side in (INCIDENTS, CRIMES)}
    for op, side, event_id, t in steps:
        if op == "observe":
            ids.observe(t)
            model.observe(t)
            continue
        got, expected = ids.claim(side, event_id, t), model.claim(side, event_id, t)
        assert got == expected, (side, event_id, t)
        want[side]["duplicate" if expected == DUPLICATE else "valid"] += 1
    for side in (INCIDENTS, CRIMES):
        assert {k: ids.counts[side][k] for k in ("valid", "duplicate")} == want[side]
        assert {i for (s, i) in model.seen if s == side} == ids.held(side)


@settings(max_examples=500)
@given(st.text(max_size=300), st.text(max_size=300))
def test_id_keys_are_one_to_one(a, b):
    """Ids are held as ints: any text, NULs and lone surrogates included, has
    its own key and comes back from it."""
    assert event_id_of(id_key(a)) == a
    assert (id_key(a) == id_key(b)) == (a == b)


def test_id_keys_keep_the_length():
    assert len({id_key(i) for i in ("", "a", "a\0", "\0a", "\0", "\0\0", "\ud800", "\x01")}) == 8


def test_a_restored_partition_drops_the_ids_expired_by_its_watermark():
    """Ids persisted before they expired are not held again when the meta's
    watermark has passed their bucket (a checkpoint restored later)."""
    ids = EventIds(PARAMS)  # id retention 3 h: "old" (at 6 h) expires with the bucket ending at 10 h
    assert ids.claim(INCIDENTS, "old", 6 * HOUR) == FIRST
    assert ids.claim(INCIDENTS, "kept", 10 * HOUR) == FIRST
    added, _ = ids.drain()
    assert added == {(INCIDENTS, ids.bucket_of(6 * HOUR)): ["old"], (INCIDENTS, ids.bucket_of(10 * HOUR)): ["kept"]}
    persisted = [(side, bucket, event_ids) for (side, bucket), event_ids in added.items()]
    assert ids.held(INCIDENTS) == {"old", "kept"}  # W = 9:50, before the end of old's bucket
    same = EventIds(PARAMS)
    same.load(persisted, ids.meta())
    assert same.held(INCIDENTS) == {"old", "kept"}
    later = EventIds(PARAMS)
    later.load(persisted, {**ids.meta(), "max_time": 10 * HOUR + 20 * MINUTE})  # W = 10:10
    assert later.held(INCIDENTS) == {"kept"}


def test_drain_gives_ids_by_bucket_then_the_buckets_forgotten():
    """What persistence writes: each bucket's new ids together, and a bucket
    forgotten as a whole (one delete per bucket, not one per id), also when
    its ids were added since the last drain."""
    ids = EventIds(PARAMS)  # id retention 3 h, lateness 10 min
    ids.claim(INCIDENTS, "a", 6 * HOUR)
    ids.claim(INCIDENTS, "b", 6 * HOUR + MINUTE)
    ids.claim(CRIMES, "c", 6 * HOUR)
    bucket = ids.bucket_of(6 * HOUR)
    assert ids.drain() == ({(INCIDENTS, bucket): ["a", "b"], (CRIMES, bucket): ["c"]}, [])
    ids.claim(INCIDENTS, "d", 6 * HOUR + 2 * MINUTE)
    ids.observe(11 * HOUR)  # W = 10:50: the bucket ending at 10 h has expired, on both feeds
    added, removed = ids.drain()
    assert added == {(INCIDENTS, bucket): ["d"]}
    assert sorted(removed) == sorted([(INCIDENTS, bucket), (CRIMES, bucket)])
    assert ids.held(INCIDENTS) == set() and ids.drain() == ({}, [])
