"""The siblings bound (contract section 4): a write past `max_siblings` changes nothing.

Context-less writes to one key each add a sibling, and each write costs time linear in
the siblings, so an unbounded key grows quadratic. The coordinator refuses a write whose
new state would hold more than `max_siblings` versions (the new one and tombstones
included) with `TooManySiblings`; a write whose context covers them always works.
"""

from __future__ import annotations

from coordinator.coordinator import Coordinator
from coordinator.effects import Reply, Send
from coordinator.messages import ForwardReply, ForwardWrite
from coordinator.requests import TooManySiblings, WriteRequest
from ring.token import key_token
from storage.versions import EMPTY_CONTEXT, Context
from tests.unit.coordinator.fakes import (
    NODES,
    NOW,
    FakeHost,
    Settings,
    coordinator,
    primaries,
    sends,
)

KEY = b"k"
TOKEN = key_token(KEY)


def write(value: bytes | None = b"v", context: Context = EMPTY_CONTEXT) -> WriteRequest:
    return WriteRequest(KEY, value, "text/plain", context)


def limited(limit: int = 3) -> tuple[Coordinator, FakeHost]:
    coord, host = coordinator(primaries(KEY)[0])
    host.config = Settings(max_siblings=limit)
    return coord, host


def test_a_write_past_the_limit_is_refused_and_changes_nothing() -> None:
    coord, host = limited(3)
    host.down.add(primaries(KEY)[2])  # a hint would be kept for it on success
    for i in range(3):
        assert sends(coord.client_request(i, write(b"%d" % i), NOW))
    before = host.store.get_record(TOKEN, KEY)
    hints_before = host.store.hints_pending()
    assert before is not None and len(before.versions.siblings) == 3
    in_flight = coord.in_flight()

    effects = coord.client_request(9, write(b"too many"), NOW)
    assert effects == [Reply(9, TooManySiblings(siblings=4, limit=3))]
    after = host.store.get_record(TOKEN, KEY)
    assert after is not None and after.versions.same_as(before.versions)
    assert after.local_actor == before.local_actor
    assert host.store.hints_pending() == hints_before
    assert coord.in_flight() == in_flight  # no op, no fan-out, no timer

    # A tombstone is a version too: a blind delete is refused likewise.
    assert coord.client_request(10, write(None), NOW) == [
        Reply(10, TooManySiblings(siblings=4, limit=3))]


def test_a_write_whose_context_covers_the_siblings_always_works() -> None:
    coord, host = limited(1)
    coord.client_request(1, write(b"a"), NOW)
    assert coord.client_request(2, write(b"b"), NOW) == [
        Reply(2, TooManySiblings(siblings=2, limit=1))]
    record = host.store.get_record(TOKEN, KEY)
    assert record is not None
    effects = coord.client_request(3, write(b"c", record.versions.context), NOW)
    assert sends(effects)
    record = host.store.get_record(TOKEN, KEY)
    assert record is not None and [s.value for s in record.versions.siblings] == [b"c"]


def test_a_forwarded_write_past_the_limit_travels_back_as_too_many_siblings() -> None:
    coord, host = limited(2)
    coord.client_request(1, write(b"a"), NOW)
    coord.client_request(2, write(b"b"), NOW)
    (answer,) = coord.receive("a-forwarder", ForwardWrite(77, write(b"c")), NOW)
    assert isinstance(answer, Send) and answer.dst == "a-forwarder"
    refused = TooManySiblings(siblings=3, limit=2)
    assert answer.msg == ForwardReply(77, refused)
    # Through the message codec to the forwarder, which answers its client with it.
    assert ForwardReply.from_fields(answer.msg.to_fields()) == answer.msg
    forwarder, _ = coordinator(next(n for n in NODES if n not in primaries(KEY)))
    fwd, _timer = forwarder.client_request(5, write(b"c"), NOW)
    assert isinstance(fwd, Send) and isinstance(fwd.msg, ForwardWrite)
    reply = ForwardReply(fwd.msg.req_id, refused)
    decoded = ForwardReply.from_fields(reply.to_fields())
    assert forwarder.receive(fwd.dst, decoded, NOW) == [Reply(5, refused)]


def test_the_default_limit_is_generous() -> None:
    coord, _ = coordinator(primaries(KEY)[0])
    for i in range(100):
        assert sends(coord.client_request(i, write(), NOW))
    assert coord.client_request(100, write(), NOW) == [
        Reply(100, TooManySiblings(siblings=101, limit=100))]
