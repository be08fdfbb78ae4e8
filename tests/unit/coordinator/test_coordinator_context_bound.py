"""Writes never leave a state the store's own decoders refuse (issue 13, item 8).

A client context is joined into the key's stored context. Six writes, each with a large
but valid context naming different actors, used to push a key's context past
`MAX_CONTEXT_ENTRIES`: replicas then refused the record (`from_wire`), and the hint the
coordinator kept could not be read back. A write whose new state (or the context
handed back) would exceed the limits is refused with `Rejected` and changes nothing.
"""

from __future__ import annotations

import msgpack

from coordinator.effects import Reply
from coordinator.messages import ReplicaPut, ReplicaPutAck
from coordinator.requests import Rejected, WriteOk, WriteRequest
from ring.token import key_token
from storage.versions import (
    MAX_CONTEXT_CHARS,
    MAX_CONTEXT_ENTRIES,
    Context,
    decode_context,
    encode_context,
    from_wire,
    to_wire,
)
from tests.unit.coordinator.fakes import NOW, coordinator, fallbacks, primaries, sends

KEY = b"k"
TOKEN = key_token(KEY)


def forged(tag: str, entries: int) -> Context:
    """A valid context naming `entries` actors no node ever was (as a client may send)."""
    return decode_context(encode_context(Context(
        {(f"{tag}{i}", 1, 1): 1 for i in range(entries)})))


def assert_decodable(effects: list) -> None:
    for e in sends(effects):
        if isinstance(e.msg, ReplicaPut):
            from_wire(msgpack.unpackb(msgpack.packb(to_wire(e.msg.versions)), raw=False))


def test_six_large_contexts_never_make_a_record_replicas_refuse() -> None:
    coord, host = coordinator(primaries(KEY)[0])
    outcomes = []
    for i in range(6):
        ctx = forged(f"x{i}-", 1000)
        effects = coord.client_request(i, WriteRequest(KEY, b"v", "text/plain", ctx), NOW)
        assert_decodable(effects)
        record = host.store.get_record(TOKEN, KEY)
        assert record is not None
        # The stored record passes the validator replicas apply to it.
        from_wire(to_wire(record.versions))
        answers = [e.response for e in effects if isinstance(e, Reply)]
        outcomes.append(answers[0] if answers else None)
        if isinstance(outcomes[-1], Rejected):
            assert not sends(effects)
    assert any(isinstance(o, Rejected) and "context" in o.message for o in outcomes)


def test_a_fallback_with_a_full_client_context_keeps_a_readable_hint() -> None:
    down = primaries(KEY)[0]
    coord, host = coordinator(fallbacks(KEY)[0])
    host.down.add(down)
    ctx = forged("y", MAX_CONTEXT_ENTRIES)
    effects = coord.client_request(1, WriteRequest(KEY, b"v", "text/plain", ctx), NOW)
    assert_decodable(effects)
    for target in host.store.hint_targets():
        for hkey in host.store.hints_for(target, 100, set()):
            assert host.store.get_hint(hkey) is not None
    answers = [e.response for e in effects if isinstance(e, Reply)]
    assert answers and isinstance(answers[0], Rejected)


def test_every_context_handed_back_can_be_sent_back() -> None:
    coord, _ = coordinator(primaries(KEY)[0])
    for entries in (10, 1500, MAX_CONTEXT_ENTRIES):
        ctx = forged(f"z{entries}-", entries)
        effects = coord.client_request(entries, WriteRequest(KEY, b"v", "text/plain", ctx),
                                       NOW)
        answers = [e.response for e in effects if isinstance(e, Reply)]
        for e in sends(effects):  # every replica acknowledges
            if isinstance(e.msg, ReplicaPut):
                answers += [a.response for a in coord.receive(e.dst, ReplicaPutAck(e.msg.req_id),
                                                              NOW) if isinstance(a, Reply)]
            elif isinstance(e.msg, ReplicaPutAck):
                coord.receive(e.dst, e.msg, NOW)
        (answer,) = answers
        if isinstance(answer, WriteOk):
            text = encode_context(answer.context)
            assert len(text) <= MAX_CONTEXT_CHARS
            decode_context(text)
        else:
            assert isinstance(answer, Rejected)


def test_the_new_refusals_travel_back_to_a_forwarder() -> None:
    from coordinator.messages import ForwardReply
    from coordinator.requests import RecordTooLarge, StorageFull

    for refusal in (RecordTooLarge(20 << 20, 16 << 20), StorageFull("storage full: map")):
        reply = ForwardReply(3, refusal)
        assert ForwardReply.from_fields(reply.to_fields()) == reply
