"""The ledgers' deadline index (:mod:`pipeline.core.timers`): the coarse way
(hour buckets, for the deferred ledger) gives exactly the entries the exact
heap gives, at every watermark asked for, whatever the order of adds."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.timers import Timers
from pipeline.core.times import HOUR

# instants over a few hours, bunched near bucket edges as well as spread out
_edges = [b * HOUR + d for b in (1, 2, 3) for d in (-2, -1, 0, 1, 2)]
_instants = st.one_of(st.integers(0, 5 * HOUR), st.sampled_from(_edges))
_keys = st.integers(0, 20).map(lambda n: f"incident-{n}")  # keys are ids (str), as in the ledgers
_steps = st.lists(st.one_of(st.tuples(st.just("add"), _instants, _keys),
                            st.tuples(st.just("due"), _instants, st.just(0)),
                            st.tuples(st.just("reset"), st.just(0), st.just(0))), max_size=80)


@settings(max_examples=300, deadline=None)
@given(_steps)
def test_coarse_and_exact_timers_give_the_same_entries_at_every_watermark(steps):
    exact, coarse = Timers(), Timers(coarse=True)
    held: Counter = Counter()  # the model: every entry added and not yet due
    w = 0
    for op, value, key in steps:
        if op == "add":
            exact.add(value, key)
            coarse.add(value, key)
            held[(value, key)] += 1
        elif op == "due":
            w = max(w, value)  # watermarks never move backwards
            want = Counter({e: n for e, n in held.items() if e[0] <= w})
            assert Counter(exact.due(w)) == want
            assert Counter(coarse.due(w)) == want
            held -= want
        else:  # a compaction keeps what it is given
            keep = sorted(held.elements())
            exact.reset(keep)
            coarse.reset(keep)
        assert len(exact) == len(coarse) == sum(held.values())
