"""Sloppy quorums and hinted handoff without a node: fallbacks, hints kept, replayed,
acknowledged, paced, retried and redirected."""

from __future__ import annotations

from coordinator.effects import Send
from coordinator.hints import HINT_TIMEOUT
from coordinator.messages import ReplicaPut, ReplicaPutAck
from coordinator.quorum import Target
from coordinator.requests import WriteOk, WriteRequest
from ring.token import key_token
from storage.versions import EMPTY_CONTEXT, Versions, update
from tests.unit.coordinator.fakes import (
    NOW,
    coordinator,
    fallbacks,
    primaries,
    puts,
    ring_of,
    sends,
    targets_of,
    timer_of,
)

KEY = b"k"


def write(key: bytes = KEY, value: bytes = b"v") -> WriteRequest:
    return WriteRequest(key, value, "text/plain", EMPTY_CONTEXT)


def state(value: bytes, epoch: int = 1) -> Versions:
    versions, _ = update(None, EMPTY_CONTEXT, ("z", 1, epoch), value, "text/plain", 1)
    return versions


def test_a_down_primary_is_stood_in_for_by_a_fallback_that_keeps_a_hint() -> None:
    first, second, third = primaries(KEY)
    fallback = fallbacks(KEY)[0]
    coord, host = coordinator(first)
    host.down.add(third)
    effects = coord.client_request(1, write(), NOW)
    assert targets_of(effects) == [Target(first), Target(second), Target(fallback, third)]

    put = sends(effects)[2]
    stand_in, stand_in_host = coordinator(fallback)
    assert stand_in.receive(first, put.msg, NOW) == [
        Send(first, ReplicaPutAck(put.msg.req_id), durable=True)]  # type: ignore[attr-defined]
    assert stand_in_host.store.hint_targets() == [third]
    assert stand_in_host.store.get_record(key_token(KEY), KEY) is None
    assert stand_in.stats.hints_stored == 1


def test_a_write_at_a_fallback_is_coordinated_there_and_hinted_for_its_primary() -> None:
    first, second, third = primaries(KEY)
    fallback = fallbacks(KEY)[0]
    coord, host = coordinator(fallback)
    host.down.add(third)
    effects = coord.client_request(1, write(), NOW)
    assert [s.dst for s in sends(effects)] == [first, second, fallback]  # not forwarded
    assert host.store.hint_targets() == [third]
    assert host.store.get_record(key_token(KEY), KEY) is None


def test_a_primary_no_fallback_stands_in_for_gets_a_hint_at_once() -> None:
    ring = ring_of(("a", "b", "c"))  # every node is a primary: there are no fallbacks
    first, second, third = primaries(KEY, ring)
    coord, host = coordinator(first, ring=ring)
    host.down.add(third)
    effects = coord.client_request(1, write(), NOW)
    assert [s.dst for s in sends(effects)] == [first, second]
    assert host.store.hint_targets() == [third]
    assert coord.stats.hints_stored == 1


def test_an_unacked_replica_gets_the_write_by_hint_once_it_is_up() -> None:
    first, second, third = primaries(KEY)
    coord, host = coordinator(first)
    effects = coord.client_request(1, write(), NOW)
    sent = sends(effects)[2].msg.versions  # type: ignore[attr-defined]
    req_id = timer_of(effects).key
    coord.receive(first, ReplicaPutAck(req_id), NOW)
    assert isinstance(coord.receive(second, ReplicaPutAck(req_id), NOW)[0].response, WriteOk)  # type: ignore[union-attr]
    assert coord.timer(req_id, NOW + 1) == []  # answered: nothing to say at the deadline
    assert host.store.hint_targets() == [third]

    host.down.add(third)
    assert coord.tick(NOW + 2) == []  # not while it is down
    host.down.clear()
    (delivery,) = coord.tick(NOW + 3)
    assert isinstance(delivery, Send) and delivery.dst == third
    assert isinstance(delivery.msg, ReplicaPut) and delivery.msg.hint_for is None
    assert delivery.msg.versions.same_as(sent) and delivery.msg.req_id != req_id
    assert coord.tick(NOW + 3.5) == []  # in flight: not sent twice
    assert coord.receive(third, ReplicaPutAck(delivery.msg.req_id), NOW + 4) == []
    assert host.store.hints_pending() == 0
    assert coord.stats.hints_delivered == 1
    assert coord.in_flight() == 0


def test_a_hint_that_changed_while_in_flight_stays_after_the_ack() -> None:
    target = primaries(KEY)[2]
    coord, host = coordinator(primaries(KEY)[0])
    token = key_token(KEY)
    coord.hints.keep(token, KEY, target, state(b"old"))
    ((_, delivery),) = puts(coord.tick(NOW))
    coord.hints.keep(token, KEY, target, state(b"new", epoch=2))  # a newer write
    coord.receive(target, ReplicaPutAck(delivery.req_id), NOW)
    assert host.store.hints_pending() == 1
    assert coord.stats.hints_delivered == 0
    ((_, again),) = puts(coord.tick(NOW + 1))
    assert {s.value for s in again.versions.siblings} == {b"old", b"new"}


def test_replay_is_paced_and_an_unacked_delivery_is_retried_after_its_timeout() -> None:
    target = primaries(KEY)[2]
    coord, host = coordinator(primaries(KEY)[0])  # hint_replay_batch = 2
    for i in range(3):
        key = f"key{i}".encode()
        coord.hints.keep(key_token(key), key, target, state(key))
    first_round = [msg for _, msg in puts(coord.tick(NOW))]
    assert len(first_round) == 2
    assert coord.tick(NOW + 1) == []  # two in flight: no room
    acked, unacked = first_round
    coord.receive(target, ReplicaPutAck(acked.req_id), NOW + 1)
    ((_, third),) = puts(coord.tick(NOW + 2))
    assert third.key not in {acked.key, unacked.key}
    ((_, retry),) = puts(coord.tick(NOW + 1 + HINT_TIMEOUT))  # the unacked one timed out
    assert retry.key == unacked.key and retry.req_id != unacked.req_id
    assert host.store.hints_pending() == 2


def test_hints_for_a_leaving_node_are_redirected_to_the_pending_replicas() -> None:
    first, _, leaving = primaries(KEY)
    coord, host = coordinator(first)
    token = key_token(KEY)
    coord.hints.keep(token, KEY, leaving, state(b"v"))
    host.departing.add(leaving)
    host.pending = host.ring.without_node(leaving)
    heirs = host.pending.preference_list(token, 3)
    assert first in heirs and leaving not in heirs
    assert coord.tick(NOW) == []  # never handed to the leaving node
    assert sorted(host.store.hint_targets()) == sorted(h for h in heirs if h != first)
    record = host.store.get_record(token, KEY)
    assert record is not None and [s.value for s in record.versions.siblings] == [b"v"]
    assert {dst for dst, _ in puts(coord.tick(NOW + 1))} == set(heirs) - {first}
