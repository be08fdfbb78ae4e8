"""Counters, sets and bucket properties on versions: converge, count once, add wins."""

from __future__ import annotations

import base64

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage.crdt import (
    COUNTER_CONTENT_TYPE,
    IDEMPOTENCY_WINDOW_MS,
    MAX_BUCKETS,
    MAX_EDIT_ELEMENTS,
    MAX_ELEMENT_BYTES,
    MAX_ELEMENT_DOTS,
    MAX_IDEMPOTENCY_KEY,
    MAX_INCREMENT,
    MAX_PROPS_BYTES,
    MAX_SET_CONTEXT_CHARS,
    MAX_SET_ELEMENTS,
    MAX_UNSEEN_DOTS,
    PROPS_CONTENT_TYPE,
    SET_CONTENT_TYPE,
    SET_CONTEXT_VERSION,
    CounterAdd,
    Operation,
    OverLimit,
    PropsPut,
    SetEdit,
    counter_value,
    decode_set_context,
    observed,
    operation_from_doc,
    operation_to_doc,
    props_table,
    set_context,
    set_elements,
)
from storage.versions import (
    EMPTY,
    EMPTY_CONTEXT,
    Actor,
    Context,
    ContextError,
    Dot,
    Sibling,
    Versions,
    decode_context,
    encode_context,
    from_wire,
    merge,
    merge_all,
    to_wire,
)

N1: Actor = ("n1", 1, 0)
N2: Actor = ("n2", 1, 0)
N3: Actor = ("n3", 1, 0)
ACTORS = (N1, N2, N3)
T0 = 1_700_000_000_000
LATER = T0 + IDEMPOTENCY_WINDOW_MS + 1


def ok(result: tuple[Versions, Context] | OverLimit) -> Versions:
    assert not isinstance(result, OverLimit), result
    state, client_ctx = result
    assert_valid(state)
    assert client_ctx == EMPTY_CONTEXT
    return state


def assert_valid(state: Versions) -> None:
    """The invariants of storage.versions: covered, unique dots, accepted by from_wire."""
    assert all(state.context.covers(s.dot) for s in state.siblings)
    assert len(state.dots()) == len(state.siblings)
    back = from_wire(msgpack.unpackb(msgpack.packb(to_wire(state), use_bin_type=True),
                                     raw=False))
    assert back.same_as(state)


def add(state: Versions | None, actor: Actor, amount: int, key: str | None = None,
        now: int = T0) -> Versions:
    return ok(CounterAdd(amount, key).apply(state, actor, now))


def edit(state: Versions | None, actor: Actor, adds: tuple[bytes, ...] = (),
         removes: tuple[tuple[bytes, frozenset[Dot]], ...] = (), now: int = T0) -> Versions:
    return ok(SetEdit(adds, removes).apply(state, actor, now))


def remove_seen(state: Versions | None, actor: Actor, element: bytes, read: Versions,
                now: int = T0) -> Versions:
    """Remove `element` with the context a client got by reading `read`."""
    dots = observed(decode_set_context(set_context(read.siblings)), element)
    assert dots, "the read observed nothing to remove"
    return edit(state, actor, removes=((element, dots),), now=now)


def sibling(value: bytes | None, ctype: str = COUNTER_CONTENT_TYPE, actor: Actor = N1,
            counter: int = 1, ts: int = T0) -> Sibling:
    return Sibling(actor, counter, value, ctype, ts)


def counter_states(state: Versions) -> list[object]:
    return [msgpack.unpackb(s.value) for s in state.siblings if s.value is not None]


# --- counters: table tests ------------------------------------------------------------


def test_increments_and_decrements_sum_in_one_entry_per_actor():
    state = None
    for amount in (5, -2, 10, -1):
        state = add(state, N1, amount)
    assert counter_value(state.siblings) == 12
    assert counter_states(state) == [[0, 15, 3]]
    assert state.context == Context({N1: 4})


def test_first_increment_on_a_fallback_with_no_state():
    state = add(None, ("f", 9, 4), -7)
    assert counter_value(state.siblings) == -7
    assert [s.dot for s in state.siblings] == [(("f", 9, 4), 1)]


def test_concurrent_coordinators_both_count_after_merge():
    base = add(None, N1, 1)
    a = add(base, N1, 10)
    b = add(merge(None, base), N2, 100)
    assert counter_value(merge(a, b).siblings) == 111
    assert counter_value(merge(b, a).siblings) == 111


def test_an_actor_never_supersedes_another_actors_entry():
    # If N2 folded N1's entry while N1 concurrently grew it, merge would keep both.
    shared = merge(add(None, N1, 5), None)
    at_n2 = add(shared, N2, 1)
    at_n1 = add(shared, N1, 7)
    assert {s.actor for s in at_n2.siblings} == {N1, N2}
    assert counter_value(merge(at_n1, at_n2).siblings) == 13


def test_dots_are_fresh_after_the_greatest_known_counter():
    base = Versions(Context({N1: 4}, frozenset({(N1, 9)})), ())
    state = add(base, N1, 1)
    assert [s.counter for s in state.siblings] == [10]


def test_retry_at_the_same_coordinator_is_applied_once():
    s1 = add(None, N1, 5, "req-1")
    result = CounterAdd(5, "req-1").apply(s1, N1, T0 + 10)
    assert not isinstance(result, OverLimit)
    assert result[0] is s1  # no new dot
    assert counter_value(s1.siblings) == 5


def test_retry_through_another_coordinator_is_counted_once():
    s1 = add(None, N1, 5, "req-1")
    s2 = add(None, N2, 5, "req-1")  # N2 had not seen N1's entry yet
    assert counter_value(merge(s1, s2).siblings) == 5
    s3 = add(merge(s1, s2), N3, 5, "req-1")  # held now: nothing applied
    assert s3.same_as(merge(s1, s2))


def test_duplicate_tokens_with_different_amounts_pick_the_least_dot():
    s1 = add(None, N1, 5, "t")
    s2 = add(None, N2, 9, "t")
    merged = merge(s2, s1)
    assert counter_value(merged.siblings) == 5  # (N1, 1) < (N2, 1)
    assert counter_value(reversed(merged.siblings)) == 5


def test_tokens_within_the_window_are_kept():
    state = add(None, N1, 5, "t", now=T0)
    state = add(state, N1, 1, now=T0 + IDEMPOTENCY_WINDOW_MS - 1)
    assert [1, "t", 5, T0] in counter_states(state)
    assert counter_value(state.siblings) == 6


def test_old_tokens_fold_into_the_issuing_nodes_actor_entry():
    state = add(None, N1, 5, "t1", now=T0)
    state = add(state, N1, -3, "t2", now=T0)
    state = add(state, N1, 10, now=LATER)
    assert counter_states(state) == [[0, 15, 3]]
    assert counter_value(state.siblings) == 12
    # A node's next life (a new generation) is the same node: it folds them too.
    again = add(add(None, N1, 5, "t1", now=T0), ("n1", 2, 1), 1, now=LATER)
    assert counter_states(again) == [[0, 6, 0]]


def test_keyed_write_that_folds_writes_two_consecutive_dots():
    state = add(None, N1, 5, "old", now=T0)
    state = add(state, N1, 2, "new", now=LATER)
    assert sorted(counter_states(state), key=str) == [[0, 5, 0], [1, "new", 2, LATER]]
    assert sorted(s.counter for s in state.siblings) == [2, 3]
    assert counter_value(state.siblings) == 7


def test_only_the_issuing_node_folds_a_token():
    state = add(None, N1, 5, "t", now=T0)
    at_n2 = add(merge(None, state), N2, 1, now=LATER)
    assert [1, "t", 5, T0] in counter_states(at_n2)
    assert counter_value(at_n2.siblings) == 6


def test_concurrent_writes_after_the_window_fold_a_token_once():
    # The same retry landed on two coordinators; both copies are old and seen by all.
    shared = merge(add(None, N1, 5, "t", now=T0), add(None, N2, 5, "t", now=T0 + 1))
    replicas = [add(merge(None, shared), actor, 1, now=LATER + 1) for actor in ACTORS]
    final = merge_all(replicas)
    assert counter_value(final.siblings) == 5 + 3
    tokens = [d for d in counter_states(final) if d[0] == 1]
    assert tokens == []  # N1 issued the least dot and folded both copies


def test_known_limit_a_duplicate_unseen_for_the_whole_window_counts_twice():
    # Documented in the module: anti-entropy makes this need 25 hours of partition.
    n1 = add(add(None, N1, 5, "t", now=T0), N1, 1, now=LATER)  # folded
    n2 = add(None, N2, 5, "t", now=T0)  # the unseen duplicate
    assert counter_value(merge(n1, n2).siblings) == 11


def test_cumulative_past_uint64_is_over_limit():
    near = Versions(Context({N1: 1}), (sibling(msgpack.packb([0, 2**64 - 2, 0])),))
    assert CounterAdd(5).apply(near, N1, T0) == OverLimit("counter", 2**64 + 3, 2**64 - 1)
    assert CounterAdd(-5).apply(near, N1, T0) != OverLimit("counter", 2**64 + 3, 2**64 - 1)


def test_exhausted_dot_counter_is_over_limit_not_a_crash():
    full = Versions(Context({N1: 2**64 - 1}), ())
    result = CounterAdd(1).apply(full, N1, T0)
    assert result == OverLimit("dot counter", 2**64, 2**64 - 1)


@pytest.mark.parametrize("amount", [0, MAX_INCREMENT, -MAX_INCREMENT, True, 1.0, "1"])
def test_bad_increments_are_refused(amount):
    with pytest.raises(ValueError):
        CounterAdd(amount)


@pytest.mark.parametrize("key", ["", "x" * (MAX_IDEMPOTENCY_KEY + 1), "a\nb", "é", 5])
def test_bad_idempotency_keys_are_refused(key):
    with pytest.raises(ValueError):
        CounterAdd(1, key)


def test_counter_value_skips_what_is_not_a_counter_entry():
    good = sibling(msgpack.packb([0, 7, 2]), counter=1)
    siblings = [
        good,
        sibling(b"\xc1garbage", counter=2),
        sibling(msgpack.packb([0, -1, 0]), counter=3),
        sibling(msgpack.packb([1, "", 5, 0]), counter=4),
        sibling(msgpack.packb([1, "t", 0, 0]), counter=5),
        sibling(msgpack.packb([0, 1, 1]), ctype="text/plain", counter=6),
        sibling(None, counter=7),
        sibling(msgpack.packb([2, 1, 1]), counter=8),
        sibling(msgpack.packb({"a": 1}), counter=9),
    ]
    assert counter_value(siblings) == 5
    state = Versions(Context({N1: 9}), tuple(siblings))
    # Garbage is never superseded, and never breaks a write.
    after = add(state, N1, 1)
    assert counter_value(after.siblings) == 6
    assert len(after.siblings) == len(siblings)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=8))
def test_counter_value_never_crashes_on_garbage(values):
    siblings = [sibling(v, counter=i + 1) for i, v in enumerate(values)]
    assert isinstance(counter_value(siblings), int)
    assert isinstance(props_table(siblings), dict)
    state = Versions(Context({N1: len(values)}), tuple(siblings))
    assert isinstance(CounterAdd(1).apply(state, N1, T0), tuple)


# --- counters: convergence under random delivery ------------------------------------

TOKENS = ("a", "b", "c", "d")
counter_ops = st.lists(st.one_of(
    st.tuples(st.just("add"), st.integers(0, 2),
              st.integers(-50, 50).filter(bool), st.none() | st.sampled_from(TOKENS)),
    st.tuples(st.just("sync"), st.integers(0, 2), st.integers(0, 2)),
    st.tuples(st.just("jump")),
), max_size=40)
token_amounts = st.lists(st.integers(-9, 9).filter(bool), min_size=4, max_size=4)


def run_counter_history(history, amounts, jumps: bool):
    """Apply each op at one replica with its own actor; exchange states at random.

    A "jump" (when `jumps`) first syncs every replica (as anti-entropy would within a
    minute) and then moves the clock past the idempotency window, so the next writes
    fold the older tokens. Tokens are fresh after a jump: a retry is within 24 hours.
    """
    replicas: list[Versions | None] = [None, None, None]
    expected = 0
    applied_tokens: set[str] = set()
    now, epoch = T0, 0
    for op in history:
        if op[0] == "add":
            _, r, amount, token = op
            key = None
            if token is not None:
                key = f"{token}@{epoch}"
                amount = amounts[TOKENS.index(token)]
                if key not in applied_tokens:
                    applied_tokens.add(key)
                    expected += amount
            else:
                expected += amount
            replicas[r] = add(replicas[r], ACTORS[r], amount, key, now=now)
            now += 7
        elif op[0] == "sync":
            _, src, dst = op
            replicas[dst] = merge(replicas[dst], replicas[src])
        elif jumps:
            everything = merge_all(replicas)
            replicas = [merge(r, everything) for r in replicas]
            now += IDEMPOTENCY_WINDOW_MS + 3600 * 1000
            epoch += 1
    return replicas, expected


@settings(max_examples=200, deadline=None)
@given(counter_ops, token_amounts)
def test_counter_replicas_converge_to_the_sum_whatever_the_delivery(history, amounts):
    replicas, expected = run_counter_history(history, amounts, jumps=False)
    everything = merge_all(replicas)
    finals = [merge(r, everything) for r in replicas]
    for state in finals:
        assert_valid(state)
        assert state.same_as(finals[0])
        assert counter_value(state.siblings) == expected
    # Merge in any order gives the same state.
    assert merge_all(reversed(replicas)).same_as(everything)


@settings(max_examples=200, deadline=None)
@given(counter_ops, token_amounts)
def test_counter_folding_old_tokens_keeps_the_sum(history, amounts):
    replicas, expected = run_counter_history(history, amounts, jumps=True)
    everything = merge_all(replicas)
    finals = [merge(r, everything) for r in replicas]
    for state in finals:
        assert_valid(state)
        assert state.same_as(finals[0])
        assert counter_value(state.siblings) == expected


# --- sets: table tests --------------------------------------------------------------


def test_add_and_read_elements_sorted_and_distinct():
    s = edit(None, N1, adds=(b"pear", b"apple", b"pear"))
    assert set_elements(s.siblings) == [b"apple", b"pear"]
    ctx = decode_set_context(set_context(s.siblings))
    assert observed(ctx, b"apple") == {next(x.dot for x in s.siblings if x.value == b"apple")}
    assert observed(ctx, b"kiwi") == frozenset()


def test_re_adding_supersedes_the_coordinators_own_copy():
    s = edit(None, N1, adds=(b"x",))
    s = edit(s, N1, adds=(b"x",))
    assert [(x.value, x.counter) for x in s.siblings] == [(b"x", 2)]


def test_remove_that_observed_every_add_is_absent_everywhere():
    r1 = edit(None, N1, adds=(b"x", b"y"))
    r2 = edit(merge(None, r1), N2, adds=(b"x",))  # a second copy of x, from N2
    r3 = merge(merge(None, r1), r2)
    read = merge(r1, r2)
    r3 = remove_seen(r3, N3, b"x", read)
    assert set_elements(r3.siblings) == [b"y"]
    for replica in (r1, r2):
        assert set_elements(merge(replica, r3).siblings) == [b"y"]
        assert set_elements(merge(r3, replica).siblings) == [b"y"]


def test_add_concurrent_with_a_remove_survives():
    shared = edit(None, N1, adds=(b"x",))
    removed = remove_seen(merge(None, shared), N2, b"x", shared)
    readded = edit(shared, N1, adds=(b"x",))  # concurrent with the remove
    assert set_elements(removed.siblings) == []
    assert set_elements(merge(removed, readded).siblings) == [b"x"]
    assert set_elements(merge(readded, removed).siblings) == [b"x"]


def test_remove_of_an_add_the_coordinator_has_not_received_drops_it_on_arrival():
    at_n1 = edit(None, N1, adds=(b"x",))
    # A client read x at N1, and its remove is coordinated by N2, which lacks x.
    at_n2 = remove_seen(None, N2, b"x", at_n1)
    assert at_n2.context.covers((N1, 1)) and not at_n2.siblings
    assert set_elements(merge(at_n2, at_n1).siblings) == []
    assert set_elements(merge(at_n1, at_n2).siblings) == []


def test_add_and_remove_of_one_element_in_one_edit_leaves_it_present():
    s = edit(None, N1, adds=(b"x",))
    dots = observed(decode_set_context(set_context(s.siblings)), b"x")
    s = edit(s, N1, adds=(b"x",), removes=((b"x", dots),))
    assert set_elements(s.siblings) == [b"x"]


def test_remove_drops_only_dots_holding_that_element():
    s = edit(None, N1, adds=(b"x", b"y"))
    y_dot = next(x.dot for x in s.siblings if x.value == b"y")
    s = edit(s, N1, removes=((b"x", frozenset({y_dot})),))  # a mismatched context
    assert set_elements(s.siblings) == [b"x", b"y"]


def test_forged_remove_dots_cannot_exhaust_a_counter():
    s = edit(None, N1, adds=(b"x",))
    own_future = (N1, 50)  # never issued by N1 (rule 5): ignored
    far = (N2, MAX_UNSEEN_DOTS + 1)  # beyond any honest unseen write: ignored
    near = (N2, 3)  # an N2 write not here yet: joined
    s = edit(s, N1, removes=((b"x", frozenset({own_future, far, near})),))
    assert s.context.max_counter(N1) == 1
    assert s.context.max_counter(N2) == 3
    assert set_elements(s.siblings) == [b"x"]


def test_set_past_its_element_bound_refuses_to_grow_but_shrinks():
    many = tuple(Sibling(N2, i + 1, b"e%d" % i, SET_CONTENT_TYPE, T0)
                 for i in range(MAX_SET_ELEMENTS))
    full = Versions(Context({N2: MAX_SET_ELEMENTS}), many)
    assert SetEdit((b"one more",)).apply(full, N1, T0) == OverLimit(
        "set elements", MAX_SET_ELEMENTS + 1, MAX_SET_ELEMENTS)
    assert isinstance(SetEdit((b"e5",)).apply(full, N1, T0), tuple)
    over = Versions(Context({N2: MAX_SET_ELEMENTS, N3: 1}),
                    (*many, Sibling(N3, 1, b"extra", SET_CONTENT_TYPE, T0)))
    shrunk = remove_seen(over, N1, b"e0", over)
    assert len(set_elements(shrunk.siblings)) == MAX_SET_ELEMENTS


@pytest.mark.parametrize("adds, removes", [
    ((b"",), ()),
    ((b"x" * (MAX_ELEMENT_BYTES + 1),), ()),
    ((b"\xff\xfe",), ()),
    (("text",), ()),
    ((b"x",) * (MAX_EDIT_ELEMENTS + 1), ()),
    ((), ((b"x", frozenset()),)),
    ((), ((b"x", frozenset({(N1, 0)})),)),
    ((), ((b"x", frozenset({(("", 1, 1), 1)})),)),
    ((), ((b"x", frozenset({((N1[0], -1, 0), 1)})),)),
    ((), ((b"x", frozenset((N1, i + 1) for i in range(MAX_ELEMENT_DOTS + 1))),)),
    ((), ((b"x", {(N1, 1)}),)),
    ((), ((b"x",),)),
    ([b"x"], ()),
])
def test_bad_set_edits_are_refused(adds, removes):
    with pytest.raises(ValueError):
        SetEdit(adds, removes)


def test_element_bounds_are_inclusive():
    SetEdit((b"x", b"y" * MAX_ELEMENT_BYTES, "é".encode()))


# --- sets: add-wins semantics under random delivery ----------------------------------

ELEMENTS = (b"a", b"b", b"c")
set_ops = st.lists(st.one_of(
    st.tuples(st.just("add"), st.integers(0, 2), st.sampled_from(ELEMENTS)),
    st.tuples(st.just("remove"), st.integers(0, 2), st.integers(0, 2),
              st.sampled_from(ELEMENTS)),
    st.tuples(st.just("both"), st.integers(0, 2), st.integers(0, 2),
              st.sampled_from(ELEMENTS)),
    st.tuples(st.just("sync"), st.integers(0, 2), st.integers(0, 2)),
), max_size=40)


@settings(max_examples=200, deadline=None)
@given(set_ops)
def test_set_is_add_wins_whatever_the_delivery(history):
    """An add survives unless a remove observed it or a later add at a replica holding it
    replaced it; replicas that exchange everything hold exactly those adds."""
    replicas: list[Versions | None] = [None, None, None]
    added: dict[Dot, bytes] = {}
    killed: set[Dot] = set()
    for op in history:
        if op[0] == "sync":
            replicas[op[2]] = merge(replicas[op[2]], replicas[op[1]])
            continue
        r, element = op[1], op[-1]
        base = replicas[r] or EMPTY
        removes: tuple[tuple[bytes, frozenset[Dot]], ...] = ()
        if op[0] in ("remove", "both"):
            read = replicas[op[2]] or EMPTY
            dots = observed(decode_set_context(set_context(read.siblings)), element)
            if not dots:
                continue  # the HTTP layer answers 400: nothing observed
            removes = ((element, dots),)
            killed |= dots
        adds = (element,) if op[0] in ("add", "both") else ()
        if adds:
            killed |= {s.dot for s in base.siblings if s.value == element}
        new = edit(base, ACTORS[r], adds, removes)
        added.update({s.dot: element for s in new.siblings if s.dot not in base.dots()})
        replicas[r] = new
    everything = merge_all(replicas)
    finals = [merge(r, everything) for r in replicas]
    survivors = set(added) - killed
    for state in finals:
        assert_valid(state)
        assert state.same_as(finals[0])
        assert state.dots() == survivors
        assert set_elements(state.siblings) == sorted({added[d] for d in survivors})


# --- the set context ------------------------------------------------------------------


def test_set_context_round_trip_and_empty():
    s = edit(None, N1, adds=(b"x",))
    s = merge(s, edit(None, ("other-node", 5, 2), adds=(b"x", b"z")))
    ctx = decode_set_context(set_context(s.siblings))
    assert observed(ctx, b"x") == {(N1, 1), (("other-node", 5, 2), 1)}
    assert observed(ctx, b"z") == {(("other-node", 5, 2), 2)}
    assert decode_set_context("") == {}
    assert decode_set_context(set_context(())) == {}


def test_set_context_caps_dots_per_element_and_stays_decodable():
    actors = [(f"n{i}", 1, 0) for i in range(MAX_ELEMENT_DOTS + 5)]
    siblings = tuple(Sibling(a, 1, b"x", SET_CONTENT_TYPE, T0) for a in actors)
    ctx = decode_set_context(set_context(siblings))
    assert observed(ctx, b"x") == {(a, 1) for a in sorted(actors)[:MAX_ELEMENT_DOTS]}


def test_value_and_set_contexts_are_not_interchangeable():
    s = edit(None, N1, adds=(b"x",))
    with pytest.raises(ContextError):
        decode_set_context(encode_context(s.context))
    with pytest.raises(ContextError):
        decode_context(set_context(s.siblings))


def _b64(doc: object) -> str:
    return base64.urlsafe_b64encode(msgpack.packb(doc, use_bin_type=True)).decode().rstrip("=")


@pytest.mark.parametrize("garbage", [
    "!!!", "A", "AAAA", "not base64 at all", "é",
    _b64([SET_CONTEXT_VERSION]),
    _b64([SET_CONTEXT_VERSION, [], [[b"12345678", []]]]),
    _b64([SET_CONTEXT_VERSION, [["n", 1, 0]], [[b"1234567", [[0, 1]]]]]),
    _b64([SET_CONTEXT_VERSION, [["n", 1, 0]], [[b"12345678", [[1, 1]]]]]),
    _b64([SET_CONTEXT_VERSION, [["n", 1, 0]], [[b"12345678", [[0, 0]]]]]),
    _b64([SET_CONTEXT_VERSION, [["n", 1, 0]], [[b"12345678", [[True, 1]]]]]),
    _b64([SET_CONTEXT_VERSION, [["n", -1, 0]], []]),
    _b64([SET_CONTEXT_VERSION, [["", 1, 0]], []]),
    _b64([SET_CONTEXT_VERSION, [["n", 1, 0]],
          [[b"12345678", [[0, 1]]], [b"12345678", [[0, 2]]]]]),
    _b64([SET_CONTEXT_VERSION, [["n", 1, 0]],
          [[b"12345678", [[0, i + 1] for i in range(MAX_ELEMENT_DOTS + 1)]]]]),
    _b64([1, [], []]),
    "A" * (MAX_SET_CONTEXT_CHARS + 4),
])
def test_garbage_set_context_is_a_context_error(garbage):
    with pytest.raises(ContextError):
        decode_set_context(garbage)


def test_non_string_set_context_is_a_context_error():
    with pytest.raises(ContextError):
        decode_set_context(b"abc")  # type: ignore[arg-type]


msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.binary(max_size=10)
    | st.text(max_size=10) | st.floats(allow_nan=False),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(st.one_of(
    st.text(max_size=60),
    st.binary(max_size=60).map(lambda b: base64.urlsafe_b64encode(b).decode()),
    st.tuples(msgpack_values, msgpack_values).map(
        lambda t: _b64([SET_CONTEXT_VERSION, t[0], t[1]])),
    st.lists(st.tuples(st.binary(min_size=7, max_size=9), msgpack_values), max_size=3).map(
        lambda es: _b64([SET_CONTEXT_VERSION, [["n", 1, 0]], [list(e) for e in es]])),
))
def test_decode_set_context_raises_only_context_error(text):
    try:
        result = decode_set_context(text)
    except ContextError:
        return
    assert isinstance(result, dict)


# --- bucket properties --------------------------------------------------------------


def put_props(state: Versions | None, actor: Actor, bucket: str, props: bytes,
              now: int = T0) -> Versions:
    return ok(PropsPut(bucket, props).apply(state, actor, now))


def test_props_put_supersedes_its_bucket_only():
    s = put_props(None, N1, "a", b"1")
    s = put_props(s, N1, "b", b"2")
    s = put_props(s, N1, "a", b"3", now=T0 + 1)
    assert props_table(s.siblings) == {"a": b"3", "b": b"2"}
    assert len(s.siblings) == 2


def test_concurrent_props_resolve_to_the_latest_on_every_replica():
    shared = put_props(None, N1, "a", b"old")
    x = put_props(shared, N1, "a", b"x", now=T0 + 5)
    y = put_props(merge(None, shared), N2, "a", b"y", now=T0 + 9)
    z = put_props(merge(None, shared), N3, "a", b"z", now=T0 + 9)  # tie: the greater actor
    for order in ((x, y, z), (z, y, x), (y, x, z)):
        assert props_table(merge_all(order).siblings) == {"a": b"z"}
    assert props_table(merge(x, y).siblings) == {"a": b"y"}


def test_props_table_skips_garbage():
    siblings = [
        sibling(msgpack.packb(["a", b"1"]), PROPS_CONTENT_TYPE, counter=1),
        sibling(b"\xc1", PROPS_CONTENT_TYPE, counter=2),
        sibling(msgpack.packb(["bad bucket!", b"1"]), PROPS_CONTENT_TYPE, counter=3),
        sibling(msgpack.packb(["b", "not bytes"]), PROPS_CONTENT_TYPE, counter=4),
        sibling(msgpack.packb(["c", b"1"]), "text/plain", counter=5),
        sibling(None, PROPS_CONTENT_TYPE, counter=6),
    ]
    assert props_table(siblings) == {"a": b"1"}


def test_props_bucket_bound():
    siblings = tuple(sibling(msgpack.packb([f"b{i}", b""], use_bin_type=True),
                             PROPS_CONTENT_TYPE, counter=i + 1) for i in range(MAX_BUCKETS))
    full = Versions(Context({N1: MAX_BUCKETS}), siblings)
    assert PropsPut("new", b"").apply(full, N1, T0) == OverLimit(
        "buckets", MAX_BUCKETS + 1, MAX_BUCKETS)
    assert props_table(put_props(full, N1, "b7", b"x").siblings)["b7"] == b"x"


@pytest.mark.parametrize("bucket, props", [
    ("", b""), ("bad bucket", b""), ("x" * 65, b""), (b"a", b""),
    ("a", b"x" * (MAX_PROPS_BYTES + 1)), ("a", "text"),
])
def test_bad_props_are_refused(bucket, props):
    with pytest.raises(ValueError):
        PropsPut(bucket, props)


# --- operations on the wire ---------------------------------------------------------

actors_st = st.tuples(st.text(min_size=1, max_size=64), st.integers(0, 2**64 - 1),
                      st.integers(0, 2**64 - 1))
dots_st = st.tuples(actors_st, st.integers(1, 2**64 - 1))
elements_st = st.text(min_size=1, max_size=40).map(str.encode).filter(
    lambda b: len(b) <= MAX_ELEMENT_BYTES)
operations = st.one_of(
    st.builds(CounterAdd, st.integers(-(MAX_INCREMENT - 1), MAX_INCREMENT - 1).filter(bool),
              st.none() | st.text(st.characters(min_codepoint=32, max_codepoint=126),
                                  min_size=1, max_size=MAX_IDEMPOTENCY_KEY)),
    st.builds(SetEdit,
              st.lists(elements_st, max_size=5).map(tuple),
              st.lists(st.tuples(elements_st, st.frozensets(dots_st, min_size=1, max_size=4)),
                       max_size=5).map(tuple)),
    st.builds(PropsPut, st.from_regex(r"[A-Za-z0-9_.-]{1,64}", fullmatch=True),
              st.binary(max_size=MAX_PROPS_BYTES)),
)


@settings(max_examples=200, deadline=None)
@given(operations)
def test_operation_doc_round_trip_through_msgpack(op: Operation):
    wire = msgpack.packb(operation_to_doc(op), use_bin_type=True)
    assert operation_from_doc(msgpack.unpackb(wire, raw=False)) == op


@pytest.mark.parametrize("doc", [
    None, "x", [], [1, 5], [9, 1, None], [True, 5, None],
    [1, True, None], [1, 0, None], [1, MAX_INCREMENT, None], [1, 5, b"key"], [1, 5, ""],
    [2, [b""], []], [2, ["x"], []], [2, None, []], [2, [], [[b"a", []]]],
    [2, [], [[b"a", [["n", 1, 0, 0]]]]], [2, [], [[b"a", [["n", 1, 0]]]]],
    [2, [], [["a", [["n", 1, 0, 1]]]]], [2, [], [[b"a", [["n", 1, 0, 1]], 3]]],
    [2, [], [[b"a", [[None, 1, 0, 1]]]]], [2, [], [[b"a", [["n", 1, 0, 2**64]]]]],
    [2, [], [[b"a", [["n", 1, 0, i + 1] for i in range(MAX_ELEMENT_DOTS + 1)]]]],
    [2, [b"x"] * (MAX_EDIT_ELEMENTS + 1), []],
    [3, "bad bucket!", b""], [3, "b", b"x" * (MAX_PROPS_BYTES + 1)], [3, "b", "text"],
    [3, b"b", b""],
])
def test_malformed_operation_docs_are_value_errors(doc):
    with pytest.raises(ValueError):
        operation_from_doc(doc)


@settings(max_examples=200, deadline=None)
@given(st.one_of(
    msgpack_values,
    st.tuples(st.integers(0, 4), msgpack_values, msgpack_values).map(list),
    st.tuples(st.just(2), st.lists(msgpack_values, max_size=3),
              st.lists(st.tuples(msgpack_values, st.lists(msgpack_values, max_size=3))
                       .map(list), max_size=3)).map(list),
))
def test_garbage_operation_docs_raise_only_value_error(doc):
    try:
        op = operation_from_doc(doc)
    except ValueError:
        return
    assert operation_from_doc(operation_to_doc(op)) == op


@settings(max_examples=100, deadline=None)
@given(operations, st.integers(0, 2))
def test_every_operation_leaves_a_valid_state(op: Operation, who: int):
    base = merge(add(None, N2, 3), edit(None, N3, adds=(b"q",)))
    for state in (None, base):
        result = op.apply(state, ACTORS[who], T0)
        if isinstance(result, OverLimit):
            continue
        assert_valid(result[0])
