"""MemoryEngine with a memory bound: LRU eviction of the "data" table.

The bound holds after every fold, least recently used entries go first, reads refresh
recency and scans do not, hints and meta are never evicted, every eviction is counted and
reported, and what a listener derives from the data (anti-entropy's Merkle trees) stays
true when evictions are reported to it as deletes.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from antientropy.merkle import MASK, RangeTree, key_hash
from storage.engine import MAX_KEY_SIZE, Batch
from storage.keys import data_key
from storage.limits import MAX_RECORD_BYTES
from storage.memory import ENTRY_OVERHEAD, MIN_MAX_MEMORY, MemoryEngine
from storage.record import Record, encode_record
from storage.store import KeyStore
from storage.versions import EMPTY_CONTEXT, Versions, update

VALUE = b"v" * 44  # with a 4-byte key: one entry is 48 + ENTRY_OVERHEAD bytes
ENTRY = 4 + len(VALUE) + ENTRY_OVERHEAD


def k(i: int) -> bytes:
    return b"k%03d" % i


def put_all(e: MemoryEngine, keys: list[bytes], value: bytes = VALUE) -> None:
    for key in keys:
        e.put("data", key, value)
    e.commit(e.seal())


def fold(e: MemoryEngine) -> None:
    """Any read folds committed batches in (and evicts); count is not a use."""
    e.count("data")


def data_keys(e: MemoryEngine) -> list[bytes]:
    return [key for key, _ in e.scan("data", b"", None)]


def accounted(e: MemoryEngine) -> int:
    return sum(len(key) + len(v) + ENTRY_OVERHEAD for key, v in e.scan("data", b"", None))


def test_bound_is_kept_after_every_commit() -> None:
    e = MemoryEngine(max_memory=10 * ENTRY)
    for i in range(50):
        put_all(e, [k(i)])
        fold(e)
        assert e.memory_used <= 10 * ENTRY
        assert e.memory_used == accounted(e)
    assert e.count("data") == 10
    assert data_keys(e) == [k(i) for i in range(40, 50)]
    assert e.evictions == 40


def test_one_batch_larger_than_the_bound_keeps_its_newest() -> None:
    e = MemoryEngine(max_memory=5 * ENTRY)
    put_all(e, [k(i) for i in range(12)])  # one batch, staged in this order
    fold(e)
    assert data_keys(e) == [k(i) for i in range(7, 12)]
    assert e.memory_used == 5 * ENTRY
    assert e.evictions == 7


def test_least_recently_used_go_first_and_reads_refresh() -> None:
    e = MemoryEngine(max_memory=4 * ENTRY)
    seen: list[bytes] = []
    e.on_evict = lambda key, _: seen.append(key)
    put_all(e, [k(0), k(1), k(2), k(3)])
    fold(e)
    assert e.get("data", k(0)) == VALUE  # k0 is now the most recent; k1 the least
    put_all(e, [k(4)])
    fold(e)
    assert seen == [k(1)]
    assert data_keys(e) == [k(0), k(2), k(3), k(4)]
    assert e.get("data", k(1)) is None  # a miss touches nothing
    e.get("data", k(2))  # order now: k3, k0, k4, k2
    put_all(e, [k(5), k(6)])
    fold(e)
    assert seen == [k(1), k(3), k(0)]
    assert data_keys(e) == [k(2), k(4), k(5), k(6)]
    assert e.evictions == 3


def test_a_write_refreshes_recency() -> None:
    e = MemoryEngine(max_memory=3 * ENTRY)
    put_all(e, [k(0), k(1), k(2)])
    put_all(e, [k(0)], b"w" * 44)  # same size: rewritten, now the most recent
    put_all(e, [k(3)])
    fold(e)
    assert set(data_keys(e)) == {k(0), k(2), k(3)}
    assert e.get("data", k(0)) == b"w" * 44


def test_scans_and_counts_do_not_refresh() -> None:
    e = MemoryEngine(max_memory=4 * ENTRY)
    put_all(e, [k(0), k(1), k(2), k(3)])
    fold(e)
    # An anti-entropy build or a range transfer scans everything, oldest first.
    assert len(list(e.scan("data", b"", None))) == 4
    assert list(e.scan("data", k(0), k(1))) == [(k(0), VALUE)]
    assert e.count("data") == 4
    put_all(e, [k(4), k(5)])
    fold(e)
    assert data_keys(e) == [k(2), k(3), k(4), k(5)]  # the scans saved nothing


def test_hints_and_meta_are_never_evicted_nor_counted() -> None:
    e = MemoryEngine(max_memory=2 * ENTRY)
    for i in range(20):
        e.put("hints", b"h%03d" % i, b"x" * 1000)
        e.put("meta", b"m%03d" % i, b"y" * 1000)
    e.commit(e.seal())
    fold(e)
    assert e.memory_used == 0 and e.evictions == 0
    put_all(e, [k(i) for i in range(10)])
    fold(e)
    assert e.count("hints") == 20 and e.count("meta") == 20
    assert e.count("data") == 2 and e.evictions == 8
    assert all(e.get("hints", b"h%03d" % i) == b"x" * 1000 for i in range(20))


def test_evictions_are_counted_and_reported_with_the_value_reads_found() -> None:
    e = MemoryEngine(max_memory=2 * ENTRY)
    seen: list[tuple[bytes, bytes]] = []
    e.on_evict = lambda key, value: seen.append((key, value))
    put_all(e, [k(0)], b"a" * 44)
    put_all(e, [k(1)], b"b" * 44)
    put_all(e, [k(2)], b"c" * 44)
    assert seen == []  # nothing folds in before the owning thread's next engine call
    fold(e)
    assert seen == [(k(0), b"a" * 44)]
    assert e.evictions == 1


def test_callback_may_read_a_consistent_engine() -> None:
    e = MemoryEngine(max_memory=2 * ENTRY)
    views: list[tuple[bytes | None, int]] = []
    e.on_evict = lambda key, _: views.append((e.get("data", key), e.count("data")))
    put_all(e, [k(0), k(1), k(2), k(3)])
    fold(e)
    assert views == [(None, 2), (None, 2)]


def test_a_key_with_a_newer_write_in_flight_is_not_evicted() -> None:
    e = MemoryEngine(max_memory=3 * ENTRY)
    seen: list[bytes] = []
    e.on_evict = lambda key, _: seen.append(key)
    put_all(e, [k(0), k(1), k(2)])
    fold(e)
    e.put("data", k(0), b"n" * 44)
    pending = e.seal()  # k0's newer value is sealed, its commit not yet returned
    e.put("data", k(3), VALUE)
    e.put("data", k(4), VALUE)
    later = e.seal()
    e.commit(pending)
    e.commit(later)
    fold(e)
    # k0 was rewritten by the first batch: k1 and k2 are the least recent.
    assert seen == [k(1), k(2)]
    assert data_keys(e) == [k(0), k(3), k(4)]

    # k0 is now the least recent, but a staged delete hides its durable value: the
    # next one goes instead, and k0's delete is not reported as an eviction.
    e.put("data", k(5), VALUE)
    room = e.seal()
    e.delete("data", k(0))
    e.commit(room)
    fold(e)
    assert seen == [k(1), k(2), k(3)]
    assert e.get("data", k(0)) is None
    assert e.memory_used == accounted(e) + ENTRY == 3 * ENTRY  # k0 still counted
    e.commit(e.seal())
    fold(e)
    assert seen == [k(1), k(2), k(3)] and e.evictions == 3
    assert data_keys(e) == [k(4), k(5)] and e.memory_used == 2 * ENTRY


def test_bound_may_be_exceeded_only_by_shadowed_entries() -> None:
    e = MemoryEngine(max_memory=2 * ENTRY)
    put_all(e, [k(0), k(1)])
    fold(e)
    e.put("data", k(2), VALUE)
    batch = e.seal()
    for key in (k(0), k(1), k(2)):
        e.put("data", key, b"s" * 44)  # staged: every durable entry has a newer write
    e.commit(batch)
    fold(e)
    assert e.evictions == 0 and e.memory_used == 3 * ENTRY
    e.commit(e.seal())
    fold(e)  # the newer writes fold in: counted again, then the least recent goes
    assert e.evictions == 1 and e.memory_used == 2 * ENTRY
    assert data_keys(e) == [k(1), k(2)]


def test_entry_larger_than_the_bound_is_dropped_at_its_fold_alone() -> None:
    e = MemoryEngine(max_memory=3 * ENTRY)
    seen: list[tuple[bytes, bytes]] = []
    e.on_evict = lambda key, value: seen.append((key, value))
    put_all(e, [k(0), k(1), k(2)])
    fold(e)
    huge = b"h" * (3 * ENTRY)
    e.put("data", k(1), huge)  # replaces k1's value with one that cannot fit alone
    batch = e.seal()
    assert e.get("data", k(1)) == huge  # readable from the overlay until its fold
    e.commit(batch)
    fold(e)
    assert seen == [(k(1), huge)]
    assert e.get("data", k(1)) is None  # the older value does not come back
    assert data_keys(e) == [k(0), k(2)]  # nothing else displaced
    assert e.evictions == 1 and e.memory_used == 2 * ENTRY


def test_oversized_entry_replaced_in_the_same_fold_is_not_reported() -> None:
    e = MemoryEngine(max_memory=3 * ENTRY)
    seen: list[bytes] = []
    e.on_evict = lambda key, _: seen.append(key)
    e.put("data", k(0), b"h" * (4 * ENTRY))
    first = e.seal()
    e.delete("data", k(0))
    second = e.seal()
    e.commit(first)
    e.commit(second)
    fold(e)
    assert seen == [] and e.evictions == 0 and data_keys(e) == []


def test_crash_copy_keeps_the_bound_and_the_order() -> None:
    e = MemoryEngine(max_memory=3 * ENTRY)
    put_all(e, [k(0), k(1), k(2)])
    fold(e)
    e.get("data", k(0))
    put_all(e, [k(3)])  # committed, not yet folded into e
    copy = e.crash(lose_disk=False)
    assert copy.max_memory == 3 * ENTRY
    assert data_keys(copy) == [k(0), k(2), k(3)]
    assert copy.memory_used == accounted(copy) == 3 * ENTRY
    assert MemoryEngine(max_memory=5).crash(lose_disk=True).max_memory == 5


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "10"])
def test_bad_bounds_are_refused(bad: object) -> None:
    with pytest.raises(ValueError):
        MemoryEngine(max_memory=bad)  # type: ignore[arg-type]


def test_min_max_memory_holds_the_largest_record() -> None:
    assert MIN_MAX_MEMORY >= MAX_RECORD_BYTES + MAX_KEY_SIZE + 64 + ENTRY_OVERHEAD


def test_unbounded_engine_never_evicts() -> None:
    e = MemoryEngine()
    seen: list[bytes] = []
    e.on_evict = lambda key, _: seen.append(key)
    put_all(e, [k(i) for i in range(500)], b"x" * 10_000)
    fold(e)
    assert e.count("data") == 500 and e.evictions == 0 and e.memory_used == 0
    assert e.max_memory is None and seen == []


# -- against a model: what the reports leave is what the engine holds --------------------

KEY = st.sampled_from([b"a", b"b", b"c", b"d", b"e", b"f", b"g", b"h"])
OP = st.one_of(
    st.tuples(st.just("put"), KEY, st.integers(0, 400)),
    st.tuples(st.just("delete"), KEY),
    st.tuples(st.just("get"), KEY),
    st.tuples(st.just("scan")),
    st.tuples(st.just("seal")),
    st.tuples(st.just("commit")),
    st.tuples(st.just("abandon")),
    st.tuples(st.just("hint"), KEY),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(OP, max_size=80), bound=st.integers(300, 2000))
def test_reports_keep_a_derived_view_true(ops: list[tuple[Any, ...]], bound: int) -> None:
    """A view kept like KeyStore's listener keeps it (writes when staged, evictions as
    deletes, abandons by reading back) always equals what reads find."""
    e = MemoryEngine(max_memory=bound)
    view: dict[bytes, bytes] = {}
    evicted_count = 0

    def on_evict(key: bytes, value: bytes) -> None:
        nonlocal evicted_count
        assert view.pop(key) == value  # the value the view (and reads) held
        evicted_count += 1

    e.on_evict = on_evict
    batches: list[Batch] = []
    hints: set[bytes] = set()
    for op in ops:
        name = op[0]
        if name == "put":
            e.put("data", op[1], b"x" * op[2])
            view[op[1]] = b"x" * op[2]
        elif name == "delete":
            e.delete("data", op[1])
            view.pop(op[1], None)
        elif name == "get":
            assert e.get("data", op[1]) == view.get(op[1])
        elif name == "scan":
            assert dict(e.scan("data", b"", None)) == view
        elif name == "seal":
            batches.append(e.seal())
        elif name == "commit" and batches:
            e.commit(batches.pop(0))
        elif name == "abandon" and batches:
            undone = e.abandon(batches.pop(0))
            for (table, key), _ in undone:
                if table != "data":
                    continue
                now = e.get("data", key)
                if now is None:
                    view.pop(key, None)
                else:
                    view[key] = now
        elif name == "hint":
            e.put("hints", op[1], b"h" * 500)
            hints.add(op[1])
        if name in ("get", "scan", "seal"):  # each folded what was committed
            shadowed = {key for (t, key) in e._staged if t == "data"}
            for b in e._sealed:
                shadowed.update(key for (t, key), _ in b.items() if t == "data")
            durable = e._tables["data"]
            assert e.memory_used == sum(
                len(key) + len(v) + ENTRY_OVERHEAD for key, v in durable.items())
            assert e.memory_used <= bound or all(key in shadowed for key in durable)
    batches.append(e.seal())  # nothing left in the overlay to shadow an entry
    while batches:
        e.commit(batches.pop(0))
    assert dict(e.scan("data", b"", None)) == view
    assert e.memory_used <= bound
    assert e.evictions == evicted_count
    if not any(op[0] == "abandon" for op in ops):
        assert {key for key, _ in e.scan("hints", b"", None)} == hints


# -- the wiring KeyStore needs, with anti-entropy's Merkle tree -----------------------


def _tree_from_scan(store: KeyStore) -> int:
    tree = RangeTree(0, 0)
    for token, key, record in store.scan_range(0, 0, None, 1 << 30):
        tree.apply(token, key_hash(key, record.versions))
    return tree.root


def _run_store(store: KeyStore, rng: random.Random) -> RangeTree:
    tree = RangeTree(0, 0)

    def listener(token: int, key: bytes, old: Versions | None, new: Versions | None) -> None:
        tree.apply(token, (key_hash(key, new) - key_hash(key, old)) & MASK)

    store.listener = listener
    engine = store.engine
    keys = [b"key-%d" % i for i in range(40)]
    for step in range(600):
        key = rng.choice(keys)
        token = int.from_bytes(key.ljust(8, b"\0")[:8], "big")
        current = store.get_record(token, key)  # a write reads, then writes the same key
        state, _ = update(None if current is None else current.versions, EMPTY_CONTEXT,
                          ("n1", 1, 1), b"v" * rng.randrange(0, 300), "t", step)
        store.put_record(token, key, Record(state))
        if step % 5 == 0:
            engine.commit(engine.seal())
    engine.commit(engine.seal())
    engine.count("data")
    return tree


def test_merkle_tree_stays_true_through_evictions() -> None:
    engine = MemoryEngine(max_memory=6000)
    store = KeyStore(engine)
    tree = _run_store(store, random.Random(3))
    assert engine.evictions > 50
    assert tree.root == _tree_from_scan(store)


def test_without_the_wiring_the_tree_would_drift() -> None:
    """The control: a store that is not told of evictions keeps hashes of keys it lost."""
    engine = MemoryEngine(max_memory=6000)
    store = KeyStore(engine)
    engine.on_evict = None  # undo the wiring KeyStore does
    tree = _run_store(store, random.Random(3))
    assert engine.evictions > 50
    assert tree.root != _tree_from_scan(store)


def test_keystore_last_record_is_forgotten_on_eviction() -> None:
    engine = MemoryEngine(max_memory=2000)
    store = KeyStore(engine)
    told: list[tuple[bytes, bool, bool]] = []
    store.listener = lambda token, key, old, new: told.append(
        (key, old is not None, new is not None))
    state, _ = update(None, EMPTY_CONTEXT, ("n1", 1, 1), b"v", "t", 0)
    store.put_record(7, b"k000", Record(state))  # the store now remembers k000's record
    engine.commit(engine.seal())
    big, _ = update(None, EMPTY_CONTEXT, ("n1", 1, 1), b"z" * 600, "t", 0)
    for i in range(1, 4):
        engine.put("data", data_key(100 + i, b"x%03d" % i), encode_record(Record(big)))
    engine.commit(engine.seal())
    engine.count("data")
    assert (b"k000", True, False) in told  # evicted: reported as a delete
    told.clear()
    store.put_record(7, b"k000", Record(state))  # the old state is None, not remembered
    assert told == [(b"k000", False, True)]
