"""The ring: tokens, owners, preference lists, ownership and ranges."""

from __future__ import annotations

import random
import time
from functools import cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ring.allocation import allocate_tokens
from ring.ring import Ring
from ring.token import (
    MAX_TOKEN,
    TOKEN_SPACE,
    TokenRange,
    key_token,
    token_bytes,
    token_from_bytes,
)

# -- reference model --------------------------------------------------------------


def reference_walk(members: dict[str, list[int]], token: int) -> list[str]:
    """Every node in clockwise order from token's owner, the slow obvious way."""
    vnodes = sorted((t, node) for node, tokens in members.items() for t in set(tokens))
    if not vnodes:
        return []
    start = next((i for i, (t, _) in enumerate(vnodes) if t >= token), 0)
    order: list[str] = []
    for step in range(len(vnodes)):
        node = vnodes[(start + step) % len(vnodes)][1]
        if node not in order:
            order.append(node)
    return order


@cache
def allocated_ring(size: int, vnodes: int = 32) -> Ring:
    members: dict[str, tuple[int, ...]] = {}
    for i in range(size):
        members[f"node{i}"] = allocate_tokens(members, f"node{i}", vnodes)
    return Ring(members)


def random_ring(rng: random.Random, size: int, vnodes: int) -> Ring:
    return Ring({f"r{i}": [rng.getrandbits(64) for _ in range(vnodes)] for i in range(size)})


def probes(ring: Ring, rng: random.Random, count: int = 300) -> list[int]:
    """Random tokens plus every vnode token and its neighbours (the boundaries)."""
    edges = [
        t + d
        for node in ring.nodes
        for t in ring.tokens_of(node)
        for d in (-1, 0, 1)
        if 0 <= t + d <= MAX_TOKEN
    ]
    return [0, MAX_TOKEN, *edges, *(rng.getrandbits(64) for _ in range(count))]


# -- tokens -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "token"),
    [  # pinned: the hash decides where data lives, so it must never change
        (b"", 0),
        (b"a", 9607679276477937801),
        (b"user:12345678", 9636456934223406319),
    ],
)
def test_key_token_is_pinned(key: bytes, token: int) -> None:
    assert key_token(key) == token


@given(st.binary(max_size=64))
def test_key_token_is_an_unsigned_64_bit_int(key: bytes) -> None:
    assert 0 <= key_token(key) <= MAX_TOKEN


@given(st.integers(0, MAX_TOKEN), st.integers(0, MAX_TOKEN))
def test_token_bytes_round_trip_and_keep_order(a: int, b: int) -> None:
    assert token_from_bytes(token_bytes(a)) == a
    assert len(token_bytes(a)) == 8
    assert (token_bytes(a) < token_bytes(b)) == (a < b)


def test_token_from_bytes_wants_8_bytes() -> None:
    with pytest.raises(ValueError):
        token_from_bytes(b"\x00" * 7)


@pytest.mark.parametrize(
    ("rng", "inside", "outside", "size", "pieces"),
    [
        ((10, 20), [11, 20], [10, 21, 0], 10, [(11, 20)]),
        ((20, 10), [21, MAX_TOKEN, 0, 10], [11, 20], TOKEN_SPACE - 10, [(21, MAX_TOKEN), (0, 10)]),
        ((MAX_TOKEN, 5), [0, 5], [6, MAX_TOKEN], 6, [(0, 5)]),
        ((7, 7), [0, 7, 8, MAX_TOKEN], [], TOKEN_SPACE, [(8, MAX_TOKEN), (0, 7)]),
        ((MAX_TOKEN, MAX_TOKEN), [0, MAX_TOKEN], [], TOKEN_SPACE, [(0, MAX_TOKEN)]),
    ],
    ids=["plain", "wraps", "from-max", "whole", "whole-at-max"],
)
def test_token_range(
    rng: tuple[int, int],
    inside: list[int],
    outside: list[int],
    size: int,
    pieces: list[tuple[int, int]],
) -> None:
    r = TokenRange(*rng)
    assert all(r.contains(t) for t in inside)
    assert not any(r.contains(t) for t in outside)
    assert r.size() == size
    assert r.pieces() == pieces
    assert sum(last - first + 1 for first, last in pieces) == size


# -- construction -----------------------------------------------------------------


def test_construction_normalises_members() -> None:
    ring = Ring({"b": [30, 10, 10], "a": [20], "idle": []})
    assert ring.nodes == ("a", "b")
    assert len(ring) == 2 and "idle" not in ring and "a" in ring
    assert ring.tokens_of("b") == (10, 30)
    assert ring.tokens_of("idle") == ()
    assert ring.vnode_count == 3
    assert ring == Ring({"a": (20,), "b": (10, 30)})
    assert hash(ring) == hash(Ring({"a": (20,), "b": (30, 10)}))
    assert ring != Ring({"a": (20,), "b": (10, 31)})
    assert ring.token_map() == {"a": (20,), "b": (10, 30)}
    assert ring.with_node("c", [40]).nodes == ("a", "b", "c")
    assert ring.without_node("a") == Ring({"b": [10, 30]})


@pytest.mark.parametrize("bad", [-1, TOKEN_SPACE, True, 1.5])
def test_bad_tokens_are_refused(bad: object) -> None:
    with pytest.raises(ValueError):
        Ring({"a": [1, bad]})  # type: ignore[list-item]


def test_empty_ring() -> None:
    ring = Ring({})
    assert len(ring) == 0 and ring.nodes == ()
    assert ring.preference_list(5, 3) == [] and ring.extended_list(5) == []
    assert ring.ownership() == {} and ring.replica_ownership(3) == {}
    assert ring.ranges_of("a", 3) == []
    with pytest.raises(LookupError):
        ring.owner(5)


# -- preference lists -------------------------------------------------------------

SMALL = {"a": [100, 400], "b": [200], "c": [300]}


@pytest.mark.parametrize(
    ("token", "n", "expected"),
    [
        (0, 3, ["a", "b", "c"]),
        (100, 3, ["a", "b", "c"]),  # a key on a vnode token belongs to that vnode
        (101, 3, ["b", "c", "a"]),
        (250, 2, ["c", "a"]),
        (300, 1, ["c"]),
        (350, 3, ["a", "b", "c"]),  # vnode 400 is a's, then wrap to 100 (a again), b, c
        (401, 3, ["a", "b", "c"]),  # past the last token: wrap to the first
        (MAX_TOKEN, 3, ["a", "b", "c"]),
        (150, 5, ["b", "c", "a"]),  # fewer nodes than n: all of them
        (150, 0, []),
    ],
)
def test_preference_list_table(token: int, n: int, expected: list[str]) -> None:
    ring = Ring(SMALL)
    assert ring.preference_list(token, n) == expected
    assert ring.preference_list(token, n) == reference_walk(SMALL, token)[:n]


@pytest.mark.parametrize(
    ("members", "token", "owner"),
    [
        ({"a": [MAX_TOKEN], "b": [5]}, MAX_TOKEN, "a"),  # the very last token
        ({"a": [MAX_TOKEN], "b": [5]}, 6, "a"),
        ({"a": [MAX_TOKEN], "b": [5]}, 0, "b"),
        ({"a": [0], "b": [5]}, MAX_TOKEN, "a"),  # wraps to token 0
        ({"a": [0], "b": [5]}, 0, "a"),
        ({"b": [7], "a": [7]}, 7, "a"),  # shared token: the smaller id owns it
    ],
)
def test_owner_edges(members: dict[str, list[int]], token: int, owner: str) -> None:
    ring = Ring(members)
    assert ring.owner(token) == owner
    assert ring.preference_list(token, 3) == reference_walk(members, token)


def test_shared_token_gives_the_shadowed_vnode_nothing() -> None:
    ring = Ring({"b": [7, 100], "a": [7]})
    assert ring.ownership()["a"] == pytest.approx((TOKEN_SPACE - 93) / TOKEN_SPACE)
    assert ring.preference_list(7, 2) == ["a", "b"]


def test_one_node() -> None:
    ring = Ring({"solo": [42]})
    for token in (0, 41, 42, 43, MAX_TOKEN):
        assert ring.preference_list(token, 3) == ["solo"]
        assert ring.extended_list(token) == ["solo"]
    assert ring.ownership() == {"solo": 1.0}
    assert ring.replica_ownership(3) == {"solo": 1.0}
    assert ring.ranges_of("solo", 1) == [TokenRange(42, 42)]  # the whole ring


def test_two_nodes_with_n_3() -> None:
    ring = allocated_ring(2)
    rng = random.Random(1)
    for token in probes(ring, rng, 50):
        assert sorted(ring.preference_list(token, 3)) == ["node0", "node1"]
    assert ring.replica_ownership(3) == {"node0": 1.0, "node1": 1.0}
    (whole,) = ring.ranges_of("node0", 3)
    assert whole.start == whole.end and whole.size() == TOKEN_SPACE
    assert sum(ring.ownership().values()) == pytest.approx(1.0)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 7), st.integers(1, 6), st.integers(0, 2**32))
def test_lists_match_the_reference_walk(size: int, vnodes: int, seed: int) -> None:
    rng = random.Random(seed)
    members = {f"r{i}": [rng.getrandbits(64) for _ in range(vnodes)] for i in range(size)}
    ring = Ring(members)
    for token in probes(ring, rng, 20):
        walk = reference_walk(members, token)
        extended = ring.extended_list(token)
        assert extended == walk and sorted(extended) == list(ring.nodes)
        for n in (3, 1, 5, 2):  # mixed order exercises the successor cache
            prefs = ring.preference_list(token, n)
            assert prefs == extended[:n]
            assert len(set(prefs)) == len(prefs) == min(n, size)
            assert prefs[0] == ring.owner(token)


def test_key_preference_list_hashes_the_key() -> None:
    ring = allocated_ring(6)
    for key in (b"", b"k", b"\xff" * 100):
        assert ring.key_preference_list(key, 3) == ring.preference_list(key_token(key), 3)


def test_successors_are_lazy_and_complete() -> None:
    ring = allocated_ring(9)
    walker = ring.successors(12345)
    assert [next(walker) for _ in range(3)] == ring.preference_list(12345, 3)
    assert [*ring.preference_list(12345, 3), *walker] == ring.extended_list(12345)


# -- ownership and ranges ---------------------------------------------------------


@pytest.mark.parametrize("size", [1, 2, 3, 4, 7])
def test_ownership_sums(size: int) -> None:
    ring = allocated_ring(size)
    assert sum(ring.ownership().values()) == pytest.approx(1.0)
    for n in (1, 2, 3, 5):
        shares = ring.replica_ownership(n)
        assert set(shares) == set(ring.nodes)
        assert sum(shares.values()) == pytest.approx(min(n, size))


@pytest.mark.parametrize(("size", "vnodes"), [(1, 3), (2, 4), (5, 16), (8, 32)])
@pytest.mark.parametrize("n", [1, 3])
def test_ranges_cover_exactly_the_keys_a_node_replicates(size: int, vnodes: int, n: int) -> None:
    rng = random.Random(size * 100 + n)
    ring = random_ring(rng, size, vnodes)
    ranges = {node: ring.ranges_of(node, n) for node in ring.nodes}
    tokens = probes(ring, rng, 200) + [key_token(rng.randbytes(8)) for _ in range(500)]
    for token in tokens:
        replicas = set(ring.preference_list(token, n))
        for node, node_ranges in ranges.items():
            assert any(r.contains(token) for r in node_ranges) == (node in replicas)
    for node, node_ranges in ranges.items():
        # Merged and disjoint: sizes add up to the node's replica share exactly.
        covered = sum(r.size() for r in node_ranges)
        assert covered / TOKEN_SPACE == pytest.approx(ring.replica_ownership(n)[node])
        ends = [r.end for r in node_ranges if not r.wraps]
        assert ends == sorted(ends)
        assert all(not r.wraps for r in node_ranges[:-1])


def test_ranges_of_unknown_node_or_zero_n() -> None:
    ring = allocated_ring(3)
    assert ring.ranges_of("stranger", 3) == []
    assert ring.ranges_of("node0", 0) == []


# -- performance ------------------------------------------------------------------


def test_big_ring_builds_and_answers_fast() -> None:
    rng = random.Random(5)
    members = {f"m{i:03}": [rng.getrandbits(64) for _ in range(256)] for i in range(200)}
    started = time.perf_counter()
    ring = Ring(members)
    built = time.perf_counter() - started
    tokens = [rng.getrandbits(64) for _ in range(20_000)]
    started = time.perf_counter()
    for token in tokens:
        ring.preference_list(token, 3)
    per_lookup = (time.perf_counter() - started) / len(tokens)
    # ~0.1 s and ~2 us on a laptop; the bounds only catch accidental quadratics.
    assert built < 2.0
    assert per_lookup < 50e-6
