"""Every record the store accepts fits every frame it must travel in (issue 13, item 9).

Frames are capped at 64 MiB after the handshake, and a frame over the cap is dropped by
the transport: replication, hints and range transfers of such a record never finish.
Values are up to 1 MiB and a key may hold up to `max_siblings` versions, so the
write path bounds the encoded state (`storage.limits.MAX_RECORD_BYTES`); the largest
state it accepts is then carried by a replica put, a hint delivery, a read reply, a
range-transfer page and an anti-entropy push, each within the cap and decoded intact.
"""

from __future__ import annotations

from antientropy.messages import AePush
from coordinator.effects import Reply, Send
from coordinator.messages import ReplicaGet, ReplicaPut
from coordinator.requests import RecordTooLarge, WriteRequest
from ring.token import key_token
from ringkv.core import wire
from ringkv.core.transfer import PAGE_BYTES
from ringkv.core.transfer_wire import RangeBatch
from ringkv.net.transport import Transport
from storage import limits
from storage.versions import EMPTY_CONTEXT, Versions
from tests.unit.coordinator.fakes import NOW, coordinator, primaries, sends

KEY = b"big"
TOKEN = key_token(KEY)
VALUE = b"x" * (1 << 20)  # the default max_value_bytes


def through_the_wire(msg: object) -> object:
    frame = wire.encode(msg)  # type: ignore[arg-type]
    assert len(frame) <= limits.FRAME_BYTES
    return wire.decode(frame)


def test_the_frame_cap_is_the_transports() -> None:
    import inspect

    default = inspect.signature(Transport.__init__).parameters["max_frame"].default
    assert default == limits.FRAME_BYTES
    assert wire.MAX_BIN_LEN >= limits.MAX_RECORD_BYTES


def test_the_largest_accepted_record_travels_in_every_frame() -> None:
    coord, host = coordinator(primaries(KEY)[0])
    refused = None
    last_puts: list[ReplicaPut] = []
    for i in range(70):
        effects = coord.client_request(i, WriteRequest(KEY, VALUE, "application/x", EMPTY_CONTEXT),
                                       NOW)
        answers = [e.response for e in effects if isinstance(e, Reply)]
        if answers:
            refused = answers[0]
            break
        last_puts = [e.msg for e in sends(effects) if isinstance(e.msg, ReplicaPut)]
    assert isinstance(refused, RecordTooLarge), refused
    assert refused.limit == limits.MAX_RECORD_BYTES and refused.size > refused.limit
    record = host.store.get_record(TOKEN, KEY)
    assert record is not None
    state: Versions = record.versions
    assert limits.record_bytes(state) <= limits.MAX_RECORD_BYTES
    assert len(state.siblings) >= 10  # the bound is not needlessly tight

    # A replica put (and a hint delivery, which is a ReplicaPut too).
    assert last_puts and through_the_wire(last_puts[0]) == last_puts[0]
    hint = ReplicaPut(9, KEY, state, "some-node")
    assert through_the_wire(hint) == hint
    # A read reply, however the replica side builds it.
    (reply,) = coord.receive("b", ReplicaGet(5, KEY), NOW)
    assert isinstance(reply, Send)
    through_the_wire(reply.msg)
    # A range page: it stops growing past PAGE_BYTES, so at worst it holds that much
    # and then the largest record.
    filler = (b"f", Versions(state.context, state.siblings[:1]))
    fillers = tuple(filler for _ in range(PAGE_BYTES // len(VALUE)))
    batch = RangeBatch(3, (*fillers, (KEY, state)), None)
    assert through_the_wire(batch) == batch
    # An anti-entropy push holds at most MAX_PUSH_BYTES of values, or one record alone.
    push = AePush(4, ((KEY, state),), ())
    assert through_the_wire(push) == push
