"""The data types in the simulation (sim/datatypes.py, sim/datatype_checkers.py).

Each checker is shown to fail: on hand-made histories, and in short scenarios against a
core broken on purpose (a counter that applies a retry again, an add-wins set whose
remove ignores its context, a listing that skips ranges, last-write-wins under racing
conditional creates). The same seeds pass with the real core.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from click.testing import CliRunner

import coordinator.listing
import coordinator.replica
from coordinator.requests import NotFound, ReadOk
from ring.token import MAX_TOKEN
from sim import Scenario, run_scenario
from sim.checkers import FinalRead
from sim.cli import parse_mix, sim_command
from sim.datatype_checkers import counters, listings, racing_creates, sets, subset_sum
from sim.datatypes import (
    LIST_BUCKET,
    DataHistory,
    Increment,
    KeyListing,
    ReplicaView,
    SetAdd,
    SetRemove,
    listing_position,
)
from sim.workload import History, Write
from sim.world import EPOCH
from storage.crdt import SET_CONTENT_TYPE, CounterAdd, SetEdit
from storage.namespace import KV, internal_key
from storage.versions import EMPTY, EMPTY_CONTEXT, Actor, Context, Dot, Sibling, Versions

SHORT = 60.0  # simulated seconds: 20 s of chaos
A: Actor = ("n1", 1, 1)
B: Actor = ("n2", 1, 1)


# --- counters -----------------------------------------------------------------------------


def _counter_final(key: bytes, value: int) -> dict[bytes, FinalRead]:
    formed = CounterAdd(value).apply(None, A, 0)
    assert not isinstance(formed, Exception) and isinstance(formed, tuple)
    return {key: FinalRead(key, ReadOk(formed[0].siblings, formed[0].context), EPOCH)}


def _counter_history(key: bytes) -> DataHistory:
    data = DataHistory(counters=[key])
    data.increments = [
        Increment(1, 1, key, 5, None, 0.0, False, ["n1"], "ok"),
        Increment(2, 1, key, 7, "inc-2", 0.0, False, ["n1", "n2"], "ok"),  # retried
        Increment(3, 1, key, 100, None, 0.0, False, ["n3"], "unknown"),
        Increment(4, 1, key, -3, "inc-4", 0.0, False, ["n1", "n2", "n3"], "failed"),
    ]
    return data


@pytest.mark.parametrize(("value", "ok"), [
    (12, True), (9, True), (112, True), (109, True),  # acked, plus any subset of 100, -3
    (19, False),  # the retried 7 counted twice
    (5, False),  # an acknowledged increment lost
    (113, False),  # above everything sent
    (50, False),  # inside the bounds, but no subset of the unacknowledged makes it
])
def test_counter_checker_accepts_exactly_acked_plus_a_subset(value: int, ok: bool) -> None:
    key = b"\x00c\x07defaultctr"
    failures = counters(_counter_history(key), _counter_final(key, value), None)
    assert (not failures) is ok, failures
    if not ok:
        assert failures[0].startswith("counters: ")


def test_subset_sum_takes_decrements() -> None:
    assert [s for s in range(-10, 10) if subset_sum([4, -3], s)] == [-3, 0, 1, 4]


# --- sets -------------------------------------------------------------------------------------


def _set_final(key: bytes, elements: dict[bytes, Dot]) -> dict[bytes, FinalRead]:
    siblings = tuple(Sibling(d[0], d[1], e, SET_CONTENT_TYPE, 0)
                     for e, d in sorted(elements.items()))
    context = Context({A: 9, B: 9})
    resp: ReadOk | NotFound = ReadOk(siblings, context) if siblings else NotFound(context)
    return {key: FinalRead(key, resp, EPOCH + 100.0)}


def _set_history(key: bytes) -> DataHistory:
    data = DataHistory(sets=[key])
    d1: Dot = (A, 1)
    # e1 added at t=1 (dot d1, first read at t=2); removed with a context that saw d1.
    data.set_adds.append(SetAdd(1, 1, key, b"e1", 1.0, False, False, "ok", 1.5))
    data.set_seen[(key, b"e1")] = {d1: 2.0}
    data.set_removes.append(SetRemove(2, 1, key, b"e1", frozenset({d1}), 2.0, 3.0, False,
                                      "ok", 3.5))
    return data


def test_set_checker_removed_element_stays_removed() -> None:
    key = b"\x00s\x07defaultset"
    data = _set_history(key)
    assert sets(data, _set_final(key, {}), None) == []
    failures = sets(data, _set_final(key, {b"e1": (A, 1)}), None)
    assert failures and "observed every dot" in failures[0]


def test_set_checker_a_concurrent_add_wins() -> None:
    key = b"\x00s\x07defaultset"
    data = _set_history(key)
    # e1 added again at t=2.5 (after the remove's read, before the remove): dot d2,
    # first seen at t=4. The remove did not observe it, so e1 must be there.
    d2: Dot = (B, 1)
    data.set_adds.append(SetAdd(3, 2, key, b"e1", 2.5, False, True, "ok", 2.6))
    data.set_seen[(key, b"e1")][d2] = 4.0
    assert sets(data, _set_final(key, {b"e1": d2}), None) == []
    failures = sets(data, _set_final(key, {}), None)
    assert failures and "add-wins broken" in failures[0] and "#3" in failures[0]
    # A later remove that observed d2 covers it: absent is then right.
    data.set_removes.append(SetRemove(4, 1, key, b"e1", frozenset({d2}), 4.0, 5.0, False,
                                      "failed", 5.5))
    assert sets(data, _set_final(key, {}), None) == []


def test_set_checker_flags_lost_adds_and_phantoms() -> None:
    key = b"\x00s\x07defaultset"
    data = DataHistory(sets=[key])
    data.set_adds.append(SetAdd(1, 1, key, b"e1", 1.0, False, False, "ok", 1.5))
    failures = sets(data, _set_final(key, {b"e9": (A, 3)}), None)
    assert any("nobody added" in f for f in failures)
    assert any("no read ever returned" in f for f in failures)


# --- conditional writes -------------------------------------------------------------------------


def _create(wid: int, value: bytes, dot: Dot, start: float,
            context: Context = EMPTY_CONTEXT) -> Write:
    w = Write(wid, 1, b"cond-0", value, context, None, start, False, outcome="ok")
    w.dot = dot
    w.dots.add(dot)
    return w


def test_racing_creates_must_stay_siblings() -> None:
    a, b = _create(1, b"v1", (A, 1), 1.0), _create(2, b"v2", (B, 1), 1.0)
    history = History(writes=[a, b], keys={b"cond-0": "cond"})
    data = DataHistory(cond={1: "create", 2: "create"})
    both = Context({A: 1, B: 1})
    siblings = (Sibling(A, 1, b"v1", "text/plain", 0), Sibling(B, 1, b"v2", "text/plain", 0))
    finals = {b"cond-0": FinalRead(b"cond-0", ReadOk(siblings, both), EPOCH + 50.0)}
    assert racing_creates(history, data, finals) == ([], 1)
    # A read at t=10 covering both that returns only v2: v1 was replaced silently.
    data.cond_reads.append((b"cond-0", EPOCH + 10.0, both, frozenset({b"v2"})))
    failures, racing = racing_creates(history, data, finals)
    assert racing == 1 and failures and "#2 silently replaced it" in failures[0]
    # Unless a write sent before that read had superseded v1.
    history.writes.append(_create(3, b"v3", (A, 2), EPOCH + 5.0, Context({A: 1})))
    assert racing_creates(history, data, finals) == ([], 1)


def test_creates_that_saw_each_other_did_not_race() -> None:
    a = _create(1, b"v1", (A, 1), 1.0)
    b = _create(2, b"v2", (B, 1), 2.0, Context({A: 1}))  # b's read saw a's tombstone
    history = History(writes=[a, b], keys={b"cond-0": "cond"})
    data = DataHistory(cond={1: "create", 2: "create"})
    only = (Sibling(B, 1, b"v2", "text/plain", 0),)
    finals = {b"cond-0": FinalRead(b"cond-0", ReadOk(only, Context({A: 1, B: 1})),
                                   EPOCH + 50.0)}
    assert racing_creates(history, data, finals) == ([], 0)


# --- key listing --------------------------------------------------------------------------------


def _listing(keys: list[bytes], expected: set[bytes]) -> DataHistory:
    data = DataHistory()
    history_keys = sorted(expected | set(keys))
    for user in history_keys:
        data.list_keys[internal_key(LIST_BUCKET, KV, user)] = user
    data.listings.append(KeyListing(1, 1, 10.0, 2, frozenset(expected), list(keys), pages=3,
                                    outcome="complete", end=11.0))
    return data


def _ordered(users: list[bytes]) -> list[bytes]:
    return sorted(users, key=lambda u: listing_position(internal_key(LIST_BUCKET, KV, u)))


def _written(data: DataHistory, at: float = 1.0) -> History:
    history = History()
    for i, stored in enumerate(sorted(data.list_keys), start=1):
        history.writes.append(Write(i, 1, stored, b"v%d" % i, EMPTY_CONTEXT, None, at, False,
                                    outcome="ok", end=at + 0.1))
    return history


def test_listing_checker() -> None:
    users = _ordered([b"k1", b"k2", b"k3", b"k4"])
    good = _listing(users, set(users[:3]))
    assert listings(good, _written(good))[0] == []
    skipped = _listing(users[:1] + users[2:], set(users[:3]))
    assert "misses 1" in listings(skipped, _written(skipped))[0][0]
    twice = _listing(users + users[-1:], set(users))
    assert "more than once" in listings(twice, _written(twice))[0][0]
    disorder = _listing(users[::-1], set(users))
    assert "out of order" in listings(disorder, _written(disorder))[0][0]
    late = _listing(users, set())
    assert "nobody wrote" in listings(late, _written(late, at=20.0))[0][0]


def test_listing_checker_excuses_keys_no_read_quorum_held() -> None:
    users = _ordered([b"k1", b"k2"])
    data = _listing(users[1:], set(users))
    history = _written(data)
    assert "misses 1" in listings(data, history)[0][0]
    # The write of users[0] was held by one primary only (fallbacks acknowledged it)
    # when the page covering it was sent: not due, and counted as excused.
    ctx = (Context({A: 1}),)
    data.listings[0].views[users[0]] = ReplicaView(2, (1, 2), (ctx, ctx * 2))
    assert listings(data, history) == ([], 1)
    data.listings[0].views[users[0]] = ReplicaView(2, (2, 2), (ctx * 2, ctx * 2))
    assert "misses 1" in listings(data, history)[0][0]


def test_listing_checker_with_deleted_keys() -> None:
    users = _ordered([b"k1", b"k2"])
    data = _listing(users, set(users))
    history = _written(data)
    first = history.writes[0]
    first.dot = (A, 1)
    first.dots.add(first.dot)
    # An acknowledged delete at t=2 that covered the only write to users[0]...
    stored = internal_key(LIST_BUCKET, KV, users[0])
    delete = Write(9, 1, stored, None, Context({A: 1}), None, 2.0, False, outcome="ok",
                   end=2.5, dot=(("n5", 1, 1), 1))
    history.writes.append(delete)
    failures, _ = listings(data, history)
    assert len(failures) == 1 and "deleted before it started" in failures[0]
    # Unless only one primary of three held the delete while the listing walked the
    # key's range: R=2 primaries may both hold the live value (the delete went to a
    # sloppy quorum), as in seed 38 of the first sweep with `ldel`.
    live = Context({A: 1})
    gone = Context({A: 1, ("n5", 1, 1): 1})
    data.listings[0].views[users[0]] = ReplicaView(2, (2, 2), ((live, live, gone),) * 2)
    assert listings(data, history) == ([], 0)
    data.listings[0].views[users[0]] = ReplicaView(2, (1, 1), ((live, gone, gone),) * 2)
    assert "deleted before it started" in listings(data, history)[0][0]
    del data.listings[0].views[users[0]]
    # ...and a listing without it is complete: a deleted key is not expected.
    data.listings[0].keys = users[1:]
    assert listings(data, history) == ([], 0)
    # A write to it whose dot nobody knows may have landed after the delete: the key
    # is then not certainly dead, and may be listed.
    data.listings[0].keys = users
    history.writes.append(Write(10, 1, stored, b"again", EMPTY_CONTEXT, None, 1.9, False,
                                outcome="unknown"))
    assert listings(data, history) == ([], 0)


# --- scenarios: each kind passes, and each checker fails against a broken core ----------------


@pytest.mark.parametrize("mix", ["incr", "set", "cond", "lput=2,list", "lput=3,ldel=2,list=2"])
def test_each_kind_alone_holds_its_guarantees(mix: str) -> None:
    for seed in (1, 2):
        result = run_scenario(Scenario(seed=seed, duration=SHORT, mix=parse_mix(mix)))
        assert result.ok, (mix, seed, result.failures[:5])


def test_the_default_mix_exercises_every_kind() -> None:
    result = run_scenario(Scenario(seed=1, duration=120.0))
    assert result.ok, result.failures[:5]
    stats = result.datatypes
    for name in ("increments_acked", "increments_retried", "set_adds_acked", "set_readds",
                 "set_removes_acked", "cond_writes", "cond_412", "listings_complete",
                 "keys_listed"):
        assert stats[name] > 0, (name, stats)


def test_no_datatypes_runs_the_value_kinds_alone() -> None:
    result = run_scenario(Scenario(seed=1, duration=SHORT, datatypes=False))
    assert result.ok and result.datatypes["increments"] == 0
    assert result.datatypes["listings_complete"] == 0


@pytest.fixture
def retry_applied_twice(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A counter that forgets idempotency keys: a retry is applied again."""
    apply = CounterAdd.apply
    monkeypatch.setattr(CounterAdd, "apply", lambda self, base, actor, now_ms: apply(
        CounterAdd(self.amount), base, actor, now_ms))
    yield


def test_counter_checker_fails_when_a_retry_is_applied_twice(
        retry_applied_twice: None) -> None:
    result = run_scenario(Scenario(seed=1, duration=SHORT, mix=(("incr", 1),)))
    assert result.checks.get("counters", 0) > 0, result.failures[:3]
    assert "counted twice" in next(f for f in result.failures if f.startswith("counters"))
    # A failing seed replays exactly.
    again = run_scenario(Scenario(seed=1, duration=SHORT, mix=(("incr", 1),)))
    assert (again.trace_hash, again.failures) == (result.trace_hash, result.failures)


def test_set_checker_fails_when_a_remove_ignores_its_context(
        monkeypatch: pytest.MonkeyPatch) -> None:
    apply = SetEdit.apply

    def blind(self: SetEdit, base: Versions | None, actor: Actor, now_ms: int) -> object:
        # Remove every dot of the element this coordinator holds, whatever the
        # client's context observed (and nothing it did not hold).
        state = base or EMPTY
        removes = []
        for element, _ in self.removes:
            held = frozenset(s.dot for s in state.siblings
                             if s.value == element and s.content_type == SET_CONTENT_TYPE)
            if held:
                removes.append((element, held))
        return apply(SetEdit(self.adds, tuple(removes)), base, actor, now_ms)

    monkeypatch.setattr(SetEdit, "apply", blind)
    result = run_scenario(Scenario(seed=1, duration=SHORT, mix=(("set", 1),)))
    assert result.checks.get("sets", 0) > 0, result.failures[:3]


def test_listing_checker_fails_when_listing_skips_ranges(
        monkeypatch: pytest.MonkeyPatch) -> None:
    past = coordinator.listing.past
    # After each stretch the walk jumps 1/32 of the ring ahead.
    monkeypatch.setattr(coordinator.listing, "past",
                        lambda token: past(min(token + (1 << 59), MAX_TOKEN)))
    result = run_scenario(Scenario(seed=1, duration=SHORT, mix=(("lput", 2), ("list", 1))))
    assert result.checks.get("listing", 0) > 0, result.failures[:3]
    assert any("misses" in f for f in result.failures)


def test_listing_checker_fails_when_deleted_keys_are_listed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    outline = coordinator.replica.outline

    def undead(state: Versions) -> Versions:
        # A replica that reports its tombstones as live values when scanned.
        return outline(Versions(state.context, tuple(
            Sibling(s.actor, s.counter, b"" if s.value is None else s.value,
                    s.content_type, s.timestamp_ms, s.expires_at_ms)
            for s in state.siblings)))

    monkeypatch.setattr(coordinator.replica, "outline", undead)
    result = run_scenario(Scenario(seed=1, duration=SHORT,
                                   mix=(("lput", 3), ("ldel", 2), ("list", 2))))
    assert result.checks.get("listing", 0) > 0, result.failures[:3]
    assert any("deleted before it started" in f for f in result.failures)


def test_conditional_checker_fails_under_last_write_wins() -> None:
    # LWW keeps one of two racing creates: the other is replaced silently.
    result = run_scenario(Scenario(seed=1, duration=SHORT, mix=(("cond", 1),),
                                   conflict="lww"))
    assert result.checks.get("conditional", 0) > 0, result.failures[:3]
    assert result.datatypes["cond_racing_creates"] > 0


def test_cli_sweep_counts_failures_by_checker() -> None:
    result = CliRunner().invoke(sim_command, ["--seeds", "1:2", "--duration", "45",
                                              "--mix", "cond", "--conflict", "lww",
                                              "--jobs", "1", "-q"])
    assert result.exit_code == 1
    assert "failures by checker: conditional" in result.output
    ok = CliRunner().invoke(sim_command, ["--seed", "2", "--duration", "45", "--mix",
                                          "incr=2,set"])
    assert ok.exit_code == 0, ok.output
    assert "increments_retried" in ok.output


def test_cli_mix_is_validated() -> None:
    assert parse_mix("set=3, incr") == (("set", 3), ("incr", 1))
    assert parse_mix("") == ()
    with pytest.raises(ValueError):
        parse_mix("set=x")
    with pytest.raises(ValueError):
        Scenario(mix=(("meteor", 1),))
    bad = CliRunner().invoke(sim_command, ["--seed", "1", "--mix", "set=0"])
    assert bad.exit_code == 2
