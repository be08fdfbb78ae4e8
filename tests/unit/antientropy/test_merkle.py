"""The Merkle tree of a token range, and the anti-entropy messages' strict codecs."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from antientropy.merkle import (
    FANOUT,
    LEAF_LEVEL,
    LEAVES,
    RangeTree,
    diff_keys,
    key_hash,
)
from antientropy.messages import AeKeys, AeNodes, AePush, AePushReply
from antientropy.ranges import replica_ranges, scan_ordered
from ring.ring import Ring
from ring.token import key_token
from ringkv.core import wire
from storage.keys import MAX_KEY_LEN
from storage.memory import MemoryEngine
from storage.record import Record
from storage.store import KeyStore
from storage.versions import Context, Sibling, Versions, update

A = ("n1", 1, 1)
B = ("n2", 1, 1)
MASK = (1 << 64) - 1


def state(value: bytes, actor=A) -> Versions:
    return update(None, Context(), actor, value, "text/plain", 1000)[0]


def build(tree: RangeTree, data: dict[bytes, Versions]) -> dict[int, dict[bytes, int]]:
    """Fill a tree; return the (key -> hash) content of every leaf."""
    leaves: dict[int, dict[bytes, int]] = {}
    for key, versions in data.items():
        token = key_token(key)
        if tree.contains(token):
            h = key_hash(key, versions)
            tree.apply(token, h)
            leaves.setdefault(tree.leaf_of(token), {})[key] = h
    tree.ready = True
    return leaves


def descend(a: RangeTree, b: RangeTree) -> list[int]:
    """The leaves a Merkle descent visits: only below nodes whose hashes differ."""
    frontier = [(0, 0)]
    for level in range(LEAF_LEVEL):
        nxt = []
        for lvl, index in frontier:
            if a.node_hash(lvl, index) != b.node_hash(lvl, index):
                nxt.extend((level + 1, i) for i, _ in a.children(lvl, index))
        frontier = nxt
    return [i for lvl, i in frontier if a.node_hash(lvl, i) != b.node_hash(lvl, i)]


def differing_keys(a: RangeTree, la, b: RangeTree, lb) -> set[bytes]:
    found: set[bytes] = set()
    for leaf in descend(a, b):
        send, want = diff_keys(la.get(leaf, {}), lb.get(leaf, {}))
        found |= set(send) | set(want)
    return found


keys = st.binary(min_size=1, max_size=12)
values = st.binary(min_size=0, max_size=6)


@settings(max_examples=150, deadline=None)
@given(
    common=st.dictionaries(keys, values, max_size=120),
    only_a=st.dictionaries(keys, values, max_size=10),
    changed=st.sets(keys, max_size=10),
    bounds=st.tuples(st.integers(0, MASK), st.integers(0, MASK)),
)
def test_diff_of_two_trees_finds_exactly_the_differing_keys(common, only_a, changed,
                                                              bounds) -> None:
    da = {k: state(v) for k, v in common.items()}
    db = dict(da)
    for k, v in only_a.items():
        da[k] = state(v + b"!")
        db.pop(k, None)
    for k in changed:
        db[k] = state(b"other", B)
    ta, tb = RangeTree(*bounds), RangeTree(*bounds)
    la, lb = build(ta, da), build(tb, db)
    expected = {k for k in set(da) | set(db)
                if ta.contains(key_token(k))
                and (k not in da or k not in db or key_hash(k, da[k]) != key_hash(k, db[k]))}
    assert differing_keys(ta, la, tb, lb) == expected
    assert (ta.root == tb.root) == (not expected)


def test_updates_are_incremental_and_order_free() -> None:
    data = {f"k{i}".encode(): state(b"v%d" % i) for i in range(300)}
    whole = RangeTree(5, 5)
    build(whole, data)
    # Same content reached through overwrites and removals: same hashes.
    other = RangeTree(5, 5)
    for key in reversed(list(data)):
        token = key_token(key)
        junk = key_hash(key, state(b"junk"))
        other.apply(token, junk)
        other.apply(token, (key_hash(key, data[key]) - junk) & MASK)
    assert other.root == whole.root and list(other.leaves) == list(whole.leaves)
    key = b"k7"
    other.apply(key_token(key), (-key_hash(key, data[key])) & MASK)
    assert other.root != whole.root
    assert sum(1 for x, y in zip(other.leaves, whole.leaves, strict=True) if x != y) == 1


def test_key_hash_ignores_sibling_order_and_local_details() -> None:
    s1 = Sibling(A, 1, b"x", "t", 5)
    s2 = Sibling(B, 1, b"y", "t", 6)
    ctx = Context({A: 1, B: 1})
    assert key_hash(b"k", Versions(ctx, (s1, s2))) == key_hash(b"k", Versions(ctx, (s2, s1)))
    assert key_hash(b"k", Versions(ctx, (s1, s2))) != key_hash(b"j", Versions(ctx, (s1, s2)))
    tomb = Sibling(A, 1, None, "t", 5)
    assert key_hash(b"k", Versions(ctx, (tomb, s2))) != key_hash(b"k", Versions(ctx, (s1, s2)))
    assert key_hash(b"k", None) == 0


@given(st.tuples(st.integers(0, MASK), st.integers(0, MASK)), st.integers(0, MASK))
def test_leaf_bounds_hold_exactly_their_tokens(bounds, token) -> None:
    tree = RangeTree(*bounds)
    if not tree.contains(token):
        return
    leaf = tree.leaf_of(token)
    lo, hi = tree.leaf_bounds(leaf)  # type: ignore[misc]
    assert (token - lo - 1) % (1 << 64) < (hi - lo) % (1 << 64) or lo == hi
    assert 0 <= leaf < LEAVES


def test_scan_ordered_resumes_in_tree_order_across_the_wrap() -> None:
    store = KeyStore(MemoryEngine())
    data = {f"s{i}".encode(): state(b"v") for i in range(400)}
    for key, versions in data.items():
        store.put_record(key_token(key), key, Record(versions))
    store.engine.commit(store.engine.seal())
    tree = RangeTree(1 << 63, 1 << 62)  # wraps past the top of the ring
    seen: list[tuple[int, bytes]] = []
    after = None
    while True:
        page = list(scan_ordered(store, tree, tree.start, tree.end, after, 37))
        if not page:
            break
        seen.extend((tree.offset(t), k) for t, k, _ in page)
        after = seen[-1]
    assert seen == sorted(seen)
    assert {k for _, k in seen} == {k for k in data if tree.contains(key_token(k))}


def test_replica_ranges_have_one_replica_set_each() -> None:
    ring = Ring({"a": [10, 500], "b": [100, 900], "c": [300], "d": [700]})
    ranges = replica_ranges(ring, "a", 3)
    for (_start, end), peers in ranges.items():
        assert "a" not in peers and len(peers) == 2
        assert ring.preference_list(end, 3) == sorted(["a", *peers],
                                                      key=ring.preference_list(end, 3).index)
    assert replica_ranges(ring, "zz", 3) == {}
    assert replica_ranges(Ring({"a": [7]}), "a", 3) == {(7, 7): ()}


# --- messages ------------------------------------------------------------------------


def roundtrip(msg):
    return wire.decode(wire.encode(msg))


def test_messages_roundtrip() -> None:
    v = state(b"x")
    msgs = [
        AeNodes(7, 0, ((1, 2, ((0, 3),)),)),
        AeNodes(7, LEAF_LEVEL, ((1, 2, ((LEAVES - 1, MASK), (0, 0))), (5, 5, ()))),
        AeKeys(8, ((1, 2, 3, b"", True, ((b"k", 5), (b"j", 6))), (1, 2, 4, b"a", False, ()))),
        AePush(9, ((b"k", v),), (b"w",)),
        AePushReply(9, ((b"k", v),)),
        AePushReply(9, ()),
    ]
    for msg in msgs:
        back = roundtrip(msg)
        assert type(back) is type(msg)
        assert back.to_fields() == msg.to_fields()


@pytest.mark.parametrize("fields", [
    [30, 1, 0],
    [30, 1, 3, []],
    [30, 1, 1, [[1, 2, [FANOUT, 3]]]],
    [30, 1, 0, [[1, 2, [0]]]],
    [30, 1, 0, [[1, 2, 0, 3]]],
    [30, -1, 0, []],
    [30, 1, 0, [[1, 2, [0, -3]]]],
    [30, 1, True, []],
    [31, 1, [[1, 2, 3, b"", 1, []]]],
    [31, 1, [[1, 2, LEAVES, b"", False, []]]],
    [31, 1, [[1, 2, 3, b"", False, [[b"", 1]]]]],
    [31, 1, [[1, 2, 3, b"", False, [["k", 1]]]]],
    [31, 1, [[1, 2, 3, "a", False, []]]],
    [31, 1, [[1, 2, 3, False, []]]],
    [32, 1, [[b"k", [[], [], [["n", 1, 1, 1, b"v", "t", 1, None]]]]], []],
    [32, 1, [], [b"x" * (MAX_KEY_LEN + 1)]],
    [33, 1, [[b"k"]]],
    [33, 1, "no"],
])
def test_malformed_messages_are_refused(fields) -> None:
    import msgpack

    with pytest.raises(wire.WireError):
        wire.decode(msgpack.packb(fields, use_bin_type=True))
