"""Dotted version vectors: supersede exactly what the context covers, merge converges."""

from __future__ import annotations

import contextlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage.versions import (
    EMPTY_CONTEXT,
    Context,
    ContextError,
    Versions,
    decode_context,
    encode_context,
    from_wire,
    lww_resolve,
    merge,
    merge_all,
    to_wire,
    update,
)

A = ("a", 1, 1)
B = ("b", 1, 1)
C = ("c", 7, 3)


def values(state: Versions) -> list[bytes | None]:
    return sorted((s.value for s in state.siblings), key=lambda v: v or b"")


def put(state, ctx, actor, value, ts=0):
    return update(state, ctx, actor, value, "text/plain", ts)


def test_blind_writes_become_siblings():
    s1, _ = put(None, EMPTY_CONTEXT, A, b"x")
    s2, _ = put(s1, EMPTY_CONTEXT, A, b"y")
    assert values(s2) == [b"x", b"y"]


def test_context_write_resolves_all_siblings_it_saw():
    s1, _ = put(None, EMPTY_CONTEXT, A, b"x")
    s2, _ = put(s1, EMPTY_CONTEXT, A, b"y")
    s3, _ = put(s2, s2.context, A, b"z")
    assert values(s3) == [b"z"]


def test_put_context_covers_only_what_the_writer_saw():
    # Two blind writers on one coordinator: each one's returned context must not
    # cover the other's write, or the next write would silently drop it.
    s1, ctx_x = put(None, EMPTY_CONTEXT, A, b"x")
    s2, ctx_y = put(s1, EMPTY_CONTEXT, A, b"y")
    s3, _ = put(s2, ctx_y, A, b"y2")
    assert values(s3) == [b"x", b"y2"]
    s4, _ = put(s3, ctx_x, A, b"x2")
    assert values(s4) == [b"x2", b"y2"]


def test_gap_in_context_is_not_compacted_over():
    s1, ctx1 = put(None, EMPTY_CONTEXT, A, b"1")
    s2, _ = put(s1, EMPTY_CONTEXT, A, b"2")  # another client, unseen
    s3, ctx3 = put(s2, ctx1, A, b"3")
    assert not ctx3.covers((A, 2))
    assert ctx3.covers((A, 1)) and ctx3.covers((A, 3))
    assert ctx3.cloud  # (A, 3) sits beyond the gap at (A, 2)


def test_long_run_of_context_writes_never_grows_siblings_or_context():
    state, ctx = None, EMPTY_CONTEXT
    actors = [A, B, C]
    for i in range(500):
        state, ctx = put(state, ctx, actors[i % 3], str(i).encode())
        assert len(state.siblings) == 1
    assert len(ctx.vector) <= 3 and not ctx.cloud
    assert len(encode_context(ctx)) < 120


def test_interleaved_read_modify_write_cycles_do_not_explode():
    # riak_test#383: two clients alternating read-then-write on two replicas.
    r1 = r2 = None
    for i in range(50):
        ctx1 = merge(r1, r2).context
        r1, _ = put(r1, ctx1, A, f"c1-{i}".encode())
        r2 = merge(r2, r1)
        ctx2 = merge(r1, r2).context
        r2, _ = put(r2, ctx2, B, f"c2-{i}".encode())
        r1 = merge(r1, r2)
    assert len(merge(r1, r2).siblings) == 1


def test_tombstone_is_a_version_and_concurrent_write_survives():
    s1, _ = put(None, EMPTY_CONTEXT, A, b"x")
    deleted, _ = update(s1, s1.context, A, None, "", 1)
    concurrent, _ = put(s1, EMPTY_CONTEXT, B, b"y")
    merged = merge(deleted, concurrent)
    assert [s.value for s in merged.live(10)] == [b"y"]
    assert any(s.is_tombstone for s in merged.siblings)


def test_expired_sibling_reads_as_absent():
    s1, _ = update(None, EMPTY_CONTEXT, A, b"x", "t", 1000, expires_at_ms=3000)
    assert s1.live(2999) and not s1.live(3000)


def test_merge_drops_superseded_and_keeps_unseen():
    s1, _ = put(None, EMPTY_CONTEXT, A, b"x")
    replica_b = merge(None, s1)
    s2, _ = put(s1, s1.context, A, b"x2")  # supersedes x on replica a
    s3, _ = put(replica_b, EMPTY_CONTEXT, B, b"y")  # concurrent on replica b
    assert values(merge(s2, s3)) == [b"x2", b"y"]
    assert values(merge(s3, s2)) == [b"x2", b"y"]


def test_lww_keeps_only_latest():
    s1, _ = put(None, EMPTY_CONTEXT, A, b"x", ts=1)
    s2, _ = put(s1, EMPTY_CONTEXT, B, b"y", ts=2)
    assert values(lww_resolve(s2)) == [b"y"]


# --- merge laws under random histories ------------------------------------------------

ops = st.lists(
    st.tuples(st.integers(0, 2), st.integers(0, 2), st.booleans(), st.integers(0, 2)),
    min_size=1, max_size=30,
)


def simulate(history):
    """Three replicas, each coordinating as its own actor, syncing at random."""
    actors = [A, B, C]
    replicas: list[Versions | None] = [None, None, None]
    for i, (who, other, use_ctx, sync_to) in enumerate(history):
        ctx = replicas[other].context if use_ctx and replicas[other] else EMPTY_CONTEXT
        replicas[who], _ = put(replicas[who], ctx, actors[who], str(i).encode(), ts=i)
        replicas[sync_to] = merge(replicas[sync_to], replicas[who])
    return replicas


@settings(max_examples=200, deadline=None)
@given(ops)
def test_merge_is_commutative_associative_idempotent(history):
    a, b, c = simulate(history)
    assert merge(a, b).same_as(merge(b, a))
    assert merge(merge(a, b), c).same_as(merge(a, merge(b, c)))
    m = merge(a, b)
    assert merge(m, m).same_as(m)
    assert merge(m, a).same_as(m)


@settings(max_examples=200, deadline=None)
@given(ops)
def test_every_write_survives_unless_a_context_covered_it(history):
    """No write is lost: each is present in the merge or covered by a later write's context."""
    replicas = simulate(history)
    final = merge_all(replicas)
    present = {s.value for s in final.siblings}
    # Replay to learn which writes some later write's context covered.
    actors = [A, B, C]
    state: list[Versions | None] = [None, None, None]
    superseded: set[bytes] = set()
    written: dict[bytes, tuple] = {}
    for i, (who, other, use_ctx, sync_to) in enumerate(history):
        ctx = state[other].context if use_ctx and state[other] else EMPTY_CONTEXT
        for value, dot in written.items():
            if ctx.covers(dot):
                superseded.add(value)
        state[who], new_ctx = put(state[who], ctx, actors[who], str(i).encode(), ts=i)
        written[str(i).encode()] = next(s.dot for s in state[who].siblings
                                        if s.value == str(i).encode())
        state[sync_to] = merge(state[sync_to], state[who])
    for value in written:
        assert value in present or value in superseded


# --- the context codec ----------------------------------------------------------------


def test_context_round_trip():
    ctx = Context({A: 3, B: 1}, frozenset({(C, 5)}))
    assert decode_context(encode_context(ctx)) == ctx
    assert decode_context("") == EMPTY_CONTEXT


@pytest.mark.parametrize("garbage", [
    "!!!", "AAAA", "not base64 at all", encode_context(Context({A: 3}))[:-3],
    "gqFhAQ", "k6F4AQI", "kwGRlKFhAQEA",  # msgpack of wrong shapes / zero counter
])
def test_garbage_context_is_a_context_error(garbage):
    with pytest.raises(ContextError):
        decode_context(garbage)


def test_random_bytes_never_crash_the_decoder():
    import base64

    rng = random.Random(7)
    for _ in range(2000):
        raw = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 40)))
        text = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        with contextlib.suppress(ContextError):
            decode_context(text)


def test_wire_round_trip_and_validation():
    s1, _ = put(None, EMPTY_CONTEXT, A, b"x")
    s2, _ = put(s1, EMPTY_CONTEXT, B, None)
    assert from_wire(to_wire(s2)).same_as(s2)
    bad = to_wire(s2)
    bad[0] = []  # siblings no longer covered by the context
    with pytest.raises(ValueError):
        from_wire(bad)


def test_a_context_whose_counter_would_overflow_the_next_dot_is_refused() -> None:
    # A forged context naming the coordinator's actor at 2**64 - 1 made its next dot
    # 2**64, which msgpack cannot encode: the write failed when the state was saved.
    from storage.versions import MAX_DOT_COUNTER, ContextError, decode_context, encode_context

    actor = ("n1", 1, 0)
    ok = Context({actor: MAX_DOT_COUNTER}, frozenset())
    assert decode_context(encode_context(ok)) == ok
    for counter in (MAX_DOT_COUNTER + 1, 2**64 - 1):
        forged = encode_context(Context({actor: counter}, frozenset()))
        with pytest.raises(ContextError):
            decode_context(forged)
