"""What a read costs: a replica answers from its stored bytes, a coordinator decodes each
distinct answer once and skips merge and staleness when every answer is the same bytes,
and one ReplicaGet serves every target. The fast path must give exactly today's answer:
a property test compares it with the merge of the decoded replies on random states."""

from __future__ import annotations

from collections import Counter

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.coordinator import Coordinator
from coordinator.effects import Reply, Send
from coordinator.messages import ReplicaGet, ReplicaGetReply, ReplicaPut
from coordinator.quorum import ReadQuorum, Target
from coordinator.requests import ReadOk, ReadRequest, WriteRequest
from ring.token import key_token
from ringkv.core import wire
from storage.store import pack_versions, unpack_versions
from storage.versions import (
    EMPTY_CONTEXT,
    Actor,
    Versions,
    lww_resolve,
    merge,
    merge_all,
    update,
)
from tests.support.costs import count_costs
from tests.unit.coordinator.fakes import NOW, coordinator, primaries, sends, timer_of

KEY = b"k"
TOKEN = key_token(KEY)


def state(value: bytes, actor: str = "z", ts: int = int(NOW * 1000)) -> Versions:
    versions, _ = update(None, EMPTY_CONTEXT, (actor, 1, 1), value, "text/plain", ts)
    return versions


def siblings_state() -> Versions:
    """Two siblings listed out of merge order (the later timestamp first)."""
    first = state(b"late", actor="x", ts=2000)
    both, _ = update(first, EMPTY_CONTEXT, ("y", 1, 1), b"early", "text/plain", 1000)
    assert [s.timestamp_ms for s in both.siblings] == [2000, 1000]
    return both


# --- the replica ------------------------------------------------------------------------


def test_a_replica_answers_with_its_stored_bytes_without_decoding_or_encoding(
        monkeypatch: pytest.MonkeyPatch) -> None:
    replica, host = coordinator(primaries(KEY)[1])
    v = state(b"v")
    replica.receive("x", ReplicaPut(5, KEY, v, None), NOW)
    counts = count_costs(monkeypatch)
    (reply,) = replica.receive("x", ReplicaGet(4, KEY), NOW)
    assert counts == Counter()  # no decode of the record, no re-encode of the answer
    assert isinstance(reply, Send) and isinstance(reply.msg, ReplicaGetReply)
    assert reply.msg.versions == pack_versions(v)
    # On the wire it is the very frame the decoded form gives: peers see no change.
    assert wire.encode(reply.msg) == wire.encode(ReplicaGetReply(4, v))


def test_a_replica_with_a_local_actor_still_answers_its_versions_only() -> None:
    coord, host = coordinator(primaries(KEY)[0])
    coord.client_request(1, WriteRequest(KEY, b"mine", "text/plain", EMPTY_CONTEXT), NOW)
    record = host.store.get_record(TOKEN, KEY)
    assert record is not None and record.local_actor is not None
    (reply,) = coord.receive("x", ReplicaGet(4, KEY), NOW)
    assert isinstance(reply, Send) and isinstance(reply.msg, ReplicaGetReply)
    assert reply.msg.versions == pack_versions(record.versions)


def test_a_replica_holding_hints_for_the_key_answers_the_merge() -> None:
    replica, host = coordinator(primaries(KEY)[1])
    replica.receive("x", ReplicaPut(5, KEY, state(b"a", actor="x"), None), NOW)
    replica.receive("x", ReplicaPut(6, KEY, state(b"b", actor="y"), "elsewhere"), NOW)
    (reply,) = replica.receive("x", ReplicaGet(4, KEY), NOW)
    assert isinstance(reply, Send) and isinstance(reply.msg, ReplicaGetReply)
    merged = host.store.read_merged(TOKEN, KEY)
    assert merged is not None and reply.msg.versions == pack_versions(merged)
    assert {s.value for s in merged.siblings} == {b"a", b"b"}


def test_a_decoded_reply_keeps_its_packed_bytes_and_its_frame() -> None:
    v = state(b"v")
    frame = wire.encode(ReplicaGetReply(7, v))
    decoded = wire.decode(frame)
    assert decoded == ReplicaGetReply(7, pack_versions(v))
    assert wire.encode(decoded) == frame
    assert wire.decode(wire.encode(ReplicaGetReply(8, None))) == ReplicaGetReply(8, None)


# --- the coordinator --------------------------------------------------------------------


def _read(r: int = 2) -> tuple[Coordinator, list[str], int]:
    nodes = primaries(KEY)
    coord, _ = coordinator(nodes[0])
    effects = coord.client_request(1, ReadRequest(KEY, r=r), NOW)
    return coord, nodes, timer_of(effects).key


def test_one_replica_get_serves_every_target() -> None:
    coord, _ = coordinator(primaries(KEY)[0])
    gets = sends(coord.client_request(1, ReadRequest(KEY), NOW))
    assert len(gets) == 3
    # One object: the runtime encodes a message once per object it sends.
    assert len({id(s.msg) for s in gets}) == 1


def test_equal_replies_are_decoded_once_and_neither_merged_nor_judged_stale(
        monkeypatch: pytest.MonkeyPatch) -> None:
    coord, nodes, req_id = _read()
    v = state(b"v")
    packed = pack_versions(v)
    counts = count_costs(monkeypatch)
    assert coord.receive(nodes[0], ReplicaGetReply(req_id, packed), NOW) == []
    (answer,) = coord.receive(nodes[1], ReplicaGetReply(req_id, packed), NOW)
    assert answer == Reply(1, ReadOk(v.siblings, v.context, tuple(sorted(nodes[:2])), ()))
    assert coord.receive(nodes[2], ReplicaGetReply(req_id, packed), NOW) == []
    assert counts == Counter(decode=1)
    assert coord.stats.read_repairs == 0


def test_different_replies_take_the_merge_path_and_repair_the_stale_one(
        monkeypatch: pytest.MonkeyPatch) -> None:
    coord, nodes, req_id = _read()
    old, new = state(b"old", actor="x"), state(b"new", actor="y")
    both = merge(old, new)
    counts = count_costs(monkeypatch)
    coord.receive(nodes[0], ReplicaGetReply(req_id, pack_versions(both)), NOW)
    (answer,) = coord.receive(nodes[1], ReplicaGetReply(req_id, pack_versions(old)), NOW)
    assert isinstance(answer, Reply) and isinstance(answer.response, ReadOk)
    assert answer.response.stale == (nodes[1],)
    repairs = coord.receive(nodes[2], ReplicaGetReply(req_id, pack_versions(both)), NOW)
    assert repairs == [Send(nodes[1], ReplicaPut(0, KEY, both, None))]
    assert counts["decode"] == 2  # each distinct answer once, the repeated one not again


def test_a_malformed_packed_reply_counts_as_no_reply() -> None:
    coord, nodes, req_id = _read()
    v = state(b"v")
    # A well-formed frame whose versions are not: a sibling no context covers.
    sibling = ["n", 1, 1, 9, b"v", "text/plain", 1, None]
    garbage = wire.decode(msgpack.packb([13, req_id, [[], [], [sibling]]]))
    assert isinstance(garbage, ReplicaGetReply)
    assert coord.receive(nodes[0], garbage, NOW) == []
    assert coord.receive(nodes[0], ReplicaGetReply(req_id, b"\xc1"), NOW) == []
    # The node may still answer properly, and the read completes with R real answers.
    assert coord.receive(nodes[0], ReplicaGetReply(req_id, pack_versions(v)), NOW) == []
    (answer,) = coord.receive(nodes[1], ReplicaGetReply(req_id, pack_versions(v)), NOW)
    assert isinstance(answer, Reply) and isinstance(answer.response, ReadOk)


def test_equal_replies_with_siblings_out_of_order_give_the_merged_order() -> None:
    coord, nodes, req_id = _read()
    v = siblings_state()
    packed = pack_versions(v)
    coord.receive(nodes[0], ReplicaGetReply(req_id, packed), NOW)
    (answer,) = coord.receive(nodes[1], ReplicaGetReply(req_id, packed), NOW)
    assert isinstance(answer, Reply) and isinstance(answer.response, ReadOk)
    assert answer.response.siblings == merge_all([v, v]).siblings
    assert [s.timestamp_ms for s in answer.response.siblings] == [1000, 2000]


# --- the fast path is today's path: a property over random states ------------------------

VALUES = st.sampled_from([b"a", b"bb", None])


@st.composite
def replica_states(draw: st.DrawFn) -> list[Versions | None]:
    """A few replica states of one key from a random history of writes, merges and
    expiries (so sibling lists are out of order, clouds have gaps, tombstones exist)."""
    pool: list[Versions | None] = [None]
    epoch = 0
    for _ in range(draw(st.integers(1, 7))):
        base = draw(st.sampled_from(pool))
        kind = draw(st.sampled_from(["write", "write", "merge"]))
        if kind == "merge":
            pool.append(merge(base, draw(st.sampled_from(pool))))
            continue
        seen = draw(st.sampled_from(pool))
        epoch += 1  # a fresh actor epoch per write keeps dots unique (rule 5)
        actor: Actor = (draw(st.sampled_from(["a", "b", "c"])), 1, epoch)
        new, _ = update(base, seen.context if seen else EMPTY_CONTEXT, actor, draw(VALUES),
                        "text/plain", draw(st.integers(0, 50)),
                        draw(st.none() | st.integers(0, 60)))
        pool.append(new)
    return pool


@settings(max_examples=300, deadline=None)
@given(replica_states(), st.data())
def test_the_fast_path_answers_exactly_what_merging_the_decoded_replies_does(
        pool: list[Versions | None], data: st.DataObject) -> None:
    count = data.draw(st.integers(1, 3))
    answers = [data.draw(st.sampled_from(pool)) for _ in range(count)]
    if data.draw(st.booleans()):
        answers = [answers[0]] * count  # every replica equal: the fast path
    nodes = [f"n{i}" for i in range(count)]
    targets = tuple(Target(n) for n in nodes)
    fast, slow = ReadQuorum(count, targets), ReadQuorum(count, targets)
    for node, answer in zip(nodes, answers, strict=True):
        fast.reply(node, None if answer is None else pack_versions(answer))
        slow.reply(node, None if answer is None else unpack_versions(pack_versions(answer)))
    expected = merge_all(answers[i] for i in sorted(range(count), key=lambda i: nodes[i]))
    merged = fast.merged()
    assert merged == expected and merged.siblings == expected.siblings
    assert slow.merged() == expected
    assert fast.stale(merged) == slow.stale(slow.merged())
    resolved = lww_resolve(merged)
    assert fast.stale(resolved) == slow.stale(lww_resolve(slow.merged()))
    assert fast.repairs() == slow.repairs()
