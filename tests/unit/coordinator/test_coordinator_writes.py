"""Write coordination without a node: quorum, forwarding, actors, W + pending, timeouts."""

from __future__ import annotations

from coordinator.coordinator import Coordinator
from coordinator.effects import Reply, Send, SetTimer
from coordinator.messages import ForwardReply, ForwardWrite, ReplicaPut, ReplicaPutAck
from coordinator.requests import QuorumFailed, Rejected, WriteOk, WriteRequest
from ring.token import key_token
from ring.transition import write_extras
from storage.versions import EMPTY_CONTEXT
from tests.unit.coordinator.fakes import (
    NODES,
    NOW,
    RING,
    coordinator,
    primaries,
    replies,
    ring_of,
    sends,
    timer_of,
)

KEY = b"k"


def write(key: bytes = KEY, value: bytes = b"v", **kw: object) -> WriteRequest:
    return WriteRequest(key, value, "text/plain", EMPTY_CONTEXT, **kw)  # type: ignore[arg-type]


def test_write_goes_to_every_target_and_is_answered_once_at_w_acks() -> None:
    first, second, third = primaries(KEY)
    coord, host = coordinator(first)
    effects = coord.client_request(1, write(), NOW)
    timer = timer_of(effects)
    assert timer.at == NOW + 1.0
    req_id = timer.key
    fan_out = sends(effects)
    assert [(s.dst, type(s.msg)) for s in fan_out] == [
        (first, ReplicaPutAck), (second, ReplicaPut), (third, ReplicaPut)]
    assert fan_out[0].durable  # its own ack counts only once the record is on disk
    assert not fan_out[1].durable  # the fan-out leaves at once
    state = fan_out[1].msg.versions  # type: ignore[attr-defined]
    record = host.store.get_record(key_token(KEY), KEY)
    assert record is not None and record.versions.same_as(state)
    assert record.local_actor == (first, 7, 1)

    assert coord.receive(first, ReplicaPutAck(req_id), NOW) == []
    assert coord.receive("stranger", ReplicaPutAck(req_id), NOW) == []  # not a target
    (reply,) = coord.receive(second, ReplicaPutAck(req_id), NOW)
    assert isinstance(reply, Reply) and reply.client_id == 1
    assert isinstance(reply.response, WriteOk) and reply.response.acks == 2
    assert reply.response.context.max_counter((first, 7, 1)) == 1
    assert coord.receive(second, ReplicaPutAck(req_id), NOW) == []  # a duplicate
    assert coord.receive(third, ReplicaPutAck(req_id), NOW) == []
    assert coord.in_flight() == 0  # complete: out of the table
    assert coord.timer(req_id, NOW + 1.0) == []


def test_a_replica_keeps_its_actor_for_a_key_in_one_life_and_takes_a_fresh_one_after() -> None:
    first = primaries(KEY)[0]
    coord, host = coordinator(first)
    coord.client_request(1, write(value=b"1"), NOW)
    coord.client_request(2, write(value=b"2"), NOW)
    other = next(k for k in (b"x", b"y", b"z") if first in primaries(k))
    coord.client_request(3, write(other), NOW)
    record = host.store.get_record(key_token(KEY), KEY)
    assert record is not None and record.local_actor == (first, 7, 1)
    assert record.versions.context.max_counter((first, 7, 1)) == 2
    assert [s.value for s in record.versions.siblings] == [b"1", b"2"]  # blind: siblings
    other_record = host.store.get_record(key_token(other), other)
    assert other_record is not None and other_record.local_actor == (first, 7, 2)
    # A restart: the same store, a new generation. The old actor is never reused.
    again = Coordinator(host, 8)
    again.client_request(4, write(value=b"3"), NOW)
    record = host.store.get_record(key_token(KEY), KEY)
    assert record is not None and record.local_actor == (first, 8, 1)
    assert len(record.versions.siblings) == 3


def test_a_write_reaching_a_non_replica_is_forwarded_to_a_replica() -> None:
    outsider = next(n for n in NODES if n not in primaries(KEY))
    coord, host = coordinator(outsider)
    effects = coord.client_request(1, write(ttl=5), NOW)
    fwd, timer = effects
    assert isinstance(fwd, Send) and fwd.dst == primaries(KEY)[0]
    assert isinstance(fwd.msg, ForwardWrite)
    # The replica is told the quorum and the time left, and waits less than we do.
    assert fwd.msg.request == WriteRequest(KEY, b"v", "text/plain", EMPTY_CONTEXT, 2, 5, 1000)
    assert timer == SetTimer(NOW + 1.25, fwd.msg.req_id)
    assert host.store.get_record(key_token(KEY), KEY) is None
    assert coord.stats.forwarded == 1
    ok = WriteOk(EMPTY_CONTEXT, 2)
    assert coord.receive(fwd.dst, ForwardReply(fwd.msg.req_id, ok), NOW) == [Reply(1, ok)]
    assert coord.receive(fwd.dst, ForwardReply(fwd.msg.req_id, ok), NOW) == []
    assert coord.timer(fwd.msg.req_id, NOW + 1.25) == []

    (fwd2, timer2) = coord.client_request(2, write(), NOW)
    assert coord.timer(timer2.key, NOW + 1.25) == [  # type: ignore[union-attr]
        Reply(2, QuorumFailed(0, 2, "coordinator did not answer"))]


def test_a_forwarded_write_is_coordinated_once_and_answered_to_the_forwarder() -> None:
    first, second, _ = primaries(KEY)
    coord, _ = coordinator(first)
    fwd = ForwardWrite(77, write(w=2, timeout_ms=500))
    effects = coord.receive("a-forwarder", fwd, NOW)
    timer = timer_of(effects)
    assert timer.at == NOW + 0.5
    assert coord.receive("a-forwarder", fwd, NOW + 1) == []  # a duplicated frame
    coord.receive(first, ReplicaPutAck(timer.key), NOW)
    (answer,) = coord.receive(second, ReplicaPutAck(timer.key), NOW)
    assert isinstance(answer, Send) and answer.dst == "a-forwarder"
    assert isinstance(answer.msg, ForwardReply) and answer.msg.req_id == 77
    assert isinstance(answer.msg.response, WriteOk) and answer.msg.response.acks == 2
    # The id is remembered for FORWARD_MEMORY (30 s) only.
    coord.tick(NOW + 31)
    assert timer_of(coord.receive("a-forwarder", fwd, NOW + 31)).key != timer.key


def test_a_forwarded_write_at_a_non_replica_is_coordinated_there_not_forwarded_again() -> None:
    outsider = next(n for n in NODES if n not in primaries(KEY))
    coord, host = coordinator(outsider)
    effects = coord.receive("x", ForwardWrite(5, write()), NOW)
    puts = sends(effects)
    assert [s.dst for s in puts] == primaries(KEY)
    assert all(isinstance(s.msg, ReplicaPut) for s in puts)
    # It holds no stable actor for the key: a fresh one, and no record of its own.
    assert puts[0].msg.versions.siblings[0].actor == (outsider, 7, 1)  # type: ignore[attr-defined]
    assert host.store.get_record(key_token(KEY), KEY) is None


def test_requests_the_coordinator_cannot_serve_are_answered_at_once() -> None:
    first = primaries(KEY)[0]
    coord, host = coordinator(first)
    assert coord.client_request(1, write(w=4), NOW) == [
        Reply(1, Rejected("quorum 4 out of range 1..3"))]
    host.down.update(n for n in NODES if n != first)
    assert coord.client_request(2, write(), NOW) == [
        Reply(2, QuorumFailed(0, 2, "too few replicas reachable"))]
    host.joined = False
    assert coord.client_request(3, write(), NOW) == [
        Reply(3, QuorumFailed(0, 1, "node has not joined a cluster"))]
    assert coord.receive("x", ForwardWrite(9, write(w=3)), NOW) == [
        Send("x", ForwardReply(9, QuorumFailed(0, 3, "node has not joined")))]
    assert coord.in_flight() == 0


def test_a_write_below_quorum_at_its_deadline_fails_with_its_ack_count() -> None:
    first, second, third = primaries(KEY)
    coord, host = coordinator(first)
    timer = timer_of(coord.client_request(1, write(), NOW))
    assert coord.receive(first, ReplicaPutAck(timer.key), NOW) == []
    assert coord.timer(timer.key, timer.at) == [Reply(1, QuorumFailed(1, 2))]
    # The replicas that never acked get the write by hint.
    assert sorted(host.store.hint_targets()) == sorted([second, third])
    assert coord.stats.hints_stored == 2
    assert coord.receive(second, ReplicaPutAck(timer.key), NOW) == []  # too late


def _key_in_transit(pending_nodes: tuple[str, ...]) -> tuple[bytes, str]:
    pending = ring_of(pending_nodes)
    for i in range(1000):
        key = f"key{i}".encode()
        extras = write_extras(RING, pending, key_token(key), 3)
        if extras:
            return key, extras[0]
    raise AssertionError("no key moves to the new node")


def test_a_pending_owner_is_a_target_that_must_ack_too() -> None:
    key, newcomer = _key_in_transit((*NODES, "f"))
    first, second, third = primaries(key)
    coord, host = coordinator(first)
    host.pending = ring_of((*NODES, "f"))
    effects = coord.client_request(1, write(key), NOW)
    assert [s.dst for s in sends(effects)] == [first, second, third, newcomer]
    req_id = timer_of(effects).key
    assert coord.receive(first, ReplicaPutAck(req_id), NOW) == []
    assert coord.receive(second, ReplicaPutAck(req_id), NOW) == []  # W, not W + pending
    (reply,) = coord.receive(newcomer, ReplicaPutAck(req_id), NOW)
    assert isinstance(reply, Reply) and isinstance(reply.response, WriteOk)
    assert reply.response.acks == 3


def test_a_pending_owner_that_is_down_gets_a_hint_and_is_not_waited_for() -> None:
    key, newcomer = _key_in_transit((*NODES, "f"))
    first, second, _ = primaries(key)
    coord, host = coordinator(first)
    host.pending = ring_of((*NODES, "f"))
    host.down.add(newcomer)
    effects = coord.client_request(1, write(key), NOW)
    assert newcomer not in [s.dst for s in sends(effects)]
    assert host.store.hint_targets() == [newcomer]
    req_id = timer_of(effects).key
    coord.receive(first, ReplicaPutAck(req_id), NOW)
    assert replies(coord.receive(second, ReplicaPutAck(req_id), NOW))
