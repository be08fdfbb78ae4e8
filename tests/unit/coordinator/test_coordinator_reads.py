"""Read coordination and the replica side without a node: quorum, staleness receipt,
read repair, timeouts, and what a replica does with puts and gets."""

from __future__ import annotations

from coordinator.effects import Reply, Send
from coordinator.messages import (
    REPAIR_ID,
    ReplicaGet,
    ReplicaGetReply,
    ReplicaPut,
    ReplicaPutAck,
)
from coordinator.quorum import Target
from coordinator.requests import NotFound, QuorumFailed, ReadOk, ReadRequest
from ring.token import key_token
from storage.store import unpack_versions
from storage.versions import EMPTY_CONTEXT, Versions, update
from tests.unit.coordinator.fakes import (
    NOW,
    coordinator,
    fallbacks,
    primaries,
    sends,
    targets_of,
    timer_of,
)

KEY = b"k"
TOKEN = key_token(KEY)


def state(value: bytes, actor: str = "z") -> Versions:
    versions, _ = update(None, EMPTY_CONTEXT, (actor, 1, 1), value, "text/plain",
                         int(NOW * 1000))
    return versions


def test_a_read_answers_at_r_with_a_staleness_receipt_and_repairs_when_complete() -> None:
    first, second, third = primaries(KEY)
    coord, _ = coordinator(first)
    effects = coord.client_request(1, ReadRequest(KEY), NOW)
    req_id = timer_of(effects).key
    assert [(s.dst, s.msg) for s in sends(effects)] == [
        (n, ReplicaGet(req_id, KEY)) for n in (first, second, third)]
    v = state(b"v")
    assert coord.receive(first, ReplicaGetReply(req_id, v), NOW) == []
    (answer,) = coord.receive(second, ReplicaGetReply(req_id, None), NOW)
    replied = tuple(sorted((first, second)))  # the receipt names replicas in order
    assert answer == Reply(1, ReadOk(v.siblings, v.context, replied, (second,)))
    assert coord.stats.stale_replies == 1
    # The last reply completes the read: the stale replica is repaired, fire-and-forget.
    assert coord.receive(third, ReplicaGetReply(req_id, v), NOW) == [
        Send(second, ReplicaPut(REPAIR_ID, KEY, v, None))]
    assert coord.stats.read_repairs == 1
    assert coord.in_flight() == 0
    assert coord.timer(req_id, NOW + 1) == []


def test_a_read_short_of_r_at_its_deadline_fails_and_still_repairs_what_replied() -> None:
    first, second, _ = primaries(KEY)
    coord, _ = coordinator(first, r=3)
    req_id = timer_of(coord.client_request(1, ReadRequest(KEY), NOW)).key
    v = state(b"v")
    coord.receive(first, ReplicaGetReply(req_id, v), NOW)
    coord.receive(second, ReplicaGetReply(req_id, None), NOW)
    assert coord.timer(req_id, NOW + 1) == [
        Reply(1, QuorumFailed(2, 3)), Send(second, ReplicaPut(REPAIR_ID, KEY, v, None))]
    assert coord.receive(first, ReplicaGetReply(req_id, v), NOW) == []  # too late


def test_a_read_of_nothing_is_not_found_and_repairs_nothing() -> None:
    first, second, third = primaries(KEY)
    coord, _ = coordinator(first)
    req_id = timer_of(coord.client_request(1, ReadRequest(KEY, r=1), NOW)).key
    assert coord.receive(second, ReplicaGetReply(req_id, None), NOW) == [
        Reply(1, NotFound(None, (second,), ()))]
    assert coord.receive(first, ReplicaGetReply(req_id, None), NOW) == []
    assert coord.receive(third, ReplicaGetReply(req_id, None), NOW) == []
    assert coord.stats.read_repairs == 0


def test_a_stale_fallback_is_repaired_with_the_hint_for_its_primary() -> None:
    first, second, third = primaries(KEY)
    fallback = fallbacks(KEY)[0]
    coord, host = coordinator(first)
    host.down.add(third)
    effects = coord.client_request(1, ReadRequest(KEY), NOW)
    assert targets_of(effects) == [Target(first), Target(second), Target(fallback)]
    req_id = timer_of(effects).key
    v = state(b"v")
    coord.receive(first, ReplicaGetReply(req_id, v), NOW)
    coord.receive(second, ReplicaGetReply(req_id, v), NOW)
    assert coord.receive(fallback, ReplicaGetReply(req_id, None), NOW) == [
        Send(fallback, ReplicaPut(REPAIR_ID, KEY, v, third))]


def test_a_replica_merges_puts_acks_them_durably_and_never_acks_a_repair() -> None:
    replica, host = coordinator(primaries(KEY)[1])
    a, b = state(b"a", actor="x"), state(b"b", actor="y")
    assert replica.receive("x", ReplicaPut(5, KEY, a, None), NOW) == [
        Send("x", ReplicaPutAck(5), durable=True)]
    assert replica.receive("y", ReplicaPut(REPAIR_ID, KEY, b, None), NOW) == []
    record = host.store.get_record(TOKEN, KEY)
    assert record is not None and {s.value for s in record.versions.siblings} == {b"a", b"b"}
    assert record.local_actor is None  # received versions carry no local actor


def test_a_replica_answers_a_get_with_its_record_merged_with_its_hints() -> None:
    replica, host = coordinator(primaries(KEY)[1])
    assert replica.receive("x", ReplicaGet(3, KEY), NOW) == [
        Send("x", ReplicaGetReply(3, None))]
    replica.receive("x", ReplicaPut(5, KEY, state(b"a", actor="x"), None), NOW)
    replica.receive("x", ReplicaPut(6, KEY, state(b"b", actor="y"), "elsewhere"), NOW)
    (reply,) = replica.receive("x", ReplicaGet(4, KEY), NOW)
    assert isinstance(reply, Send) and isinstance(reply.msg, ReplicaGetReply)
    assert isinstance(reply.msg.versions, bytes)  # packed, as replicas answer
    assert {s.value for s in unpack_versions(reply.msg.versions).siblings} == {b"a", b"b"}
