"""Ring transitions: the ranges a node fetches on join, leave and removal (pure)."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from ring.allocation import allocate_tokens, initial_tokens
from ring.ring import Ring
from ring.token import MAX_TOKEN, TokenRange
from ring.transition import Gain, TokenSet, fingerprint, gains, write_extras

N = 3


def _cluster(count: int, vnodes: int = 16) -> dict[str, tuple[int, ...]]:
    tokens = {"n1": tuple(initial_tokens("n1", vnodes))}
    for i in range(2, count + 1):
        tokens[f"n{i}"] = tuple(allocate_tokens(tokens, f"n{i}", vnodes, replicas=N))
    return tokens


def _covers(gs: list[Gain], token: int) -> bool:
    return any(TokenRange(g.start, g.end).contains(token) for g in gs)


def test_a_joiner_fetches_exactly_the_ranges_it_will_replicate() -> None:
    before = _cluster(5)
    after = dict(before, n6=tuple(allocate_tokens(before, "n6", 16, replicas=N)))
    current, target = Ring(before), Ring(after)
    got = gains("n6", Ring(), target, current, N)
    rng = random.Random(1)
    for _ in range(2000):
        t = rng.getrandbits(64)
        assert _covers(got, t) == ("n6" in target.preference_list(t, N))
    for g in got:
        # Sources are the current replicas of the range, which hold its data.
        assert set(g.sources) == set(current.preference_list(g.end, N))
    for node in before:  # a join only takes ranges away from the others
        assert gains(node, current, target, current, N) == []


def test_removal_makes_the_inheritors_fetch_from_surviving_replicas() -> None:
    before = _cluster(6)
    held = Ring(before)
    after = Ring({k: v for k, v in before.items() if k != "n3"})
    rng = random.Random(2)
    for node in after.nodes:
        got = gains(node, held, after, after, N)
        for _ in range(500):
            t = rng.getrandbits(64)
            inherits = node in after.preference_list(t, N) and node not in \
                held.preference_list(t, N)
            assert _covers(got, t) == inherits
        for g in got:
            assert node not in g.sources
            assert g.sources[:2] == tuple(x for x in held.preference_list(g.end, N)
                                          if x != node)[:2]


def test_no_change_no_gains_and_adjacent_ranges_merge() -> None:
    ring = Ring(_cluster(4))
    assert gains("n2", ring, ring, ring, N) == []
    # A joiner that will replicate everything fetches one whole-ring range.
    [whole] = gains("n1", Ring(), Ring({"n1": (5, 9)}), Ring({"n2": (7,)}), N)
    assert whole.start == whole.end and whole.sources == ("n2",)


def test_a_brand_new_cluster_has_nothing_to_fetch() -> None:
    assert gains("n1", Ring(), Ring({"n1": (1, 2)}), Ring(), N) == []


def test_write_extras_are_pending_replicas_outside_the_current_list() -> None:
    before = _cluster(4)
    after = dict(before, n5=tuple(allocate_tokens(before, "n5", 16, replicas=N)))
    current, pending = Ring(before), Ring(after)
    rng = random.Random(3)
    seen_extra = False
    for _ in range(300):
        t = rng.getrandbits(64)
        extras = write_extras(current, pending, t, N)
        assert extras == (["n5"] if "n5" in pending.preference_list(t, N) else [])
        seen_extra |= bool(extras)
    assert seen_extra
    assert write_extras(current, current, 7, N) == []


def test_fingerprint_is_stable_and_order_free() -> None:
    a = {"x": (3, 1), "y": (2,)}
    b = {"y": (2,), "x": (1, 3)}
    assert fingerprint(a) == fingerprint(b)
    assert fingerprint(a) != fingerprint({"x": (1, 3)})
    assert 0 <= fingerprint(a) <= MAX_TOKEN


_edge = st.sampled_from([0, 1, 2, MAX_TOKEN - 1, MAX_TOKEN, 1 << 63])
_token = st.one_of(_edge, st.integers(0, MAX_TOKEN), st.integers(0, 40))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_token, _token), max_size=6), st.tuples(_token, _token),
       st.lists(_token, min_size=1, max_size=30))
def test_token_set_missing_is_exactly_the_complement(
        added: list[tuple[int, int]], query: tuple[int, int], probes: list[int]) -> None:
    ts = TokenSet()
    for s, e in added:
        ts.add(s, e)
    missing = ts.missing(*query)
    probes += [query[0], query[1], (query[0] + 1) % (MAX_TOKEN + 1)]
    for t in probes:
        in_set = any(TokenRange(s, e).contains(t) for s, e in added)
        in_query = TokenRange(*query).contains(t)
        in_missing = any(TokenRange(s, e).contains(t) for s, e in missing)
        assert in_missing == (in_query and not in_set), (t, added, query, missing)
    # Persisted form round-trips.
    assert TokenSet(ts.intervals()).intervals() == ts.intervals()
