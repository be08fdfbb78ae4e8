"""Acks only count from the node they were asked of: another member that guesses a
request id can neither tell a client its write succeeded nor drop a hint its target
lacks."""

from __future__ import annotations

from coordinator.effects import Reply, Send
from coordinator.messages import ForwardReply, ForwardWrite, ReplicaPutAck
from coordinator.requests import WriteOk, WriteRequest
from ring.token import key_token
from storage.versions import EMPTY_CONTEXT, Versions, update
from tests.unit.coordinator.fakes import NODES, NOW, coordinator, primaries, puts

KEY = b"k"


def write() -> WriteRequest:
    return WriteRequest(KEY, b"v", "text/plain", EMPTY_CONTEXT)


def state(value: bytes) -> Versions:
    versions, _ = update(None, EMPTY_CONTEXT, ("z", 1, 1), value, "text/plain", 1)
    return versions


def test_a_forward_reply_from_another_member_answers_nothing() -> None:
    me = next(n for n in NODES if n not in primaries(KEY))
    forwarder, _ = coordinator(me)
    fwd, _timer = forwarder.client_request(5, write(), NOW)
    assert isinstance(fwd, Send) and isinstance(fwd.msg, ForwardWrite)
    forged = ForwardReply(fwd.msg.req_id, WriteOk(EMPTY_CONTEXT, 2))
    liar = next(n for n in NODES if n not in (fwd.dst, me))
    assert forwarder.receive(liar, forged, NOW) == []
    # The replica the write went to still answers it.
    assert forwarder.receive(fwd.dst, forged, NOW) == [Reply(5, WriteOk(EMPTY_CONTEXT, 2))]


def test_a_put_ack_from_another_member_does_not_drop_a_hint() -> None:
    target = primaries(KEY)[2]
    me = primaries(KEY)[0]
    coord, host = coordinator(me)
    coord.hints.keep(key_token(KEY), KEY, target, state(b"held"))
    ((_, delivery),) = puts(coord.tick(NOW))
    liar = next(n for n in NODES if n not in (target, me))
    coord.receive(liar, ReplicaPutAck(delivery.req_id), NOW)
    assert host.store.hints_pending() == 1  # still held: the target never acked
    coord.receive(target, ReplicaPutAck(delivery.req_id), NOW)
    assert host.store.hints_pending() == 0
