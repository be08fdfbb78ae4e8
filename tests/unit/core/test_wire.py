"""The wire codec: every message round-trips; garbage is a WireError and nothing else."""

from __future__ import annotations

import contextlib
import random

import msgpack
import pytest

from coordinator.messages import (
    ForwardReply,
    ForwardWrite,
    ReplicaGet,
    ReplicaGetReply,
    ReplicaPut,
    ReplicaPutAck,
)
from coordinator.requests import QuorumFailed, Rejected, WriteOk, WriteRequest
from gossip.membership import UP, Member
from ringkv.core import wire
from ringkv.core.join_wire import JoinReply, JoinRequest
from ringkv.core.transfer_wire import RangeBatch, RangeBusy, RangeFetch, SyncDone
from storage.versions import EMPTY_CONTEXT, update

ACTOR = ("n1", 42, 7)
STATE, CTX = update(None, EMPTY_CONTEXT, ACTOR, b"value", "text/plain", 1234, 9999)
MEMBER = Member("n1", "127.0.0.1:8001", "127.0.0.1:9001", (1, 2**64 - 1), UP, 3, 42)

MESSAGES = [
    JoinRequest(MEMBER, 256),
    JoinReply(True, "", (MEMBER,), 3, 2, 2),
    ReplicaPut(5, b"key", STATE, None),
    ReplicaPut(6, b"key", STATE, "n3"),
    ReplicaPutAck(5),
    ReplicaGet(7, b"\x00\xff"),
    ReplicaGetReply(7, STATE),
    ReplicaGetReply(8, None),
    ForwardWrite(9, WriteRequest(b"k", b"v", "text/plain", CTX, 2, 10, 500)),
    ForwardWrite(10, WriteRequest(b"k", None, "", EMPTY_CONTEXT)),
    ForwardReply(9, WriteOk(CTX, 2)),
    ForwardReply(9, QuorumFailed(1, 2, "quorum not reached")),
    ForwardReply(9, Rejected("bad")),
    RangeFetch(11, 5, 2**64 - 1, None, 256),
    RangeFetch(12, 9, 3, b"\x00" * 8 + b"key", 1),
    RangeBatch(11, ((b"key", STATE), (b"k2", STATE)), b"\x00" * 8 + b"k2"),
    RangeBatch(12, (), None),
    SyncDone(2**64 - 1),
    RangeBusy(13),
]


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_round_trip(msg: wire.Message) -> None:
    decoded = wire.decode(wire.encode(msg))
    assert type(decoded) is type(msg)
    assert wire.encode(decoded) == wire.encode(msg)


def test_type_ids_are_unique_and_stable() -> None:
    ids = {type(m).__name__: type(m).TYPE for m in MESSAGES}
    assert ids == {"JoinRequest": 4, "JoinReply": 5, "ReplicaPut": 10, "ReplicaPutAck": 11,
                   "ReplicaGet": 12, "ReplicaGetReply": 13, "ForwardWrite": 20,
                   "ForwardReply": 21, "RangeFetch": 40, "RangeBatch": 41, "SyncDone": 42,
                   "RangeBusy": 43}
    registered = {cls.__name__: type_id for type_id, cls in wire._TYPES.items()}
    assert {"GossipSyn": 6, "GossipAck": 7, "GossipAck2": 8}.items() <= registered.items()
    with pytest.raises(ValueError, match="already taken"):
        wire.register(type("Clash", (), {"TYPE": 1}))  # a retired id stays retired


# The bytes of the join and data-path messages, as the codec produced them when each
# type was decoded by its own case: moving a message must not change one byte.
PINNED = [
    "930497a26e31ae3132372e302e302e313a38303031ae3132372e302e302e313a393030319201cfffffff"
    "ffffffffffa27570032acd0100",
    "9705c3a09197a26e31ae3132372e302e302e313a38303031ae3132372e302e302e313a393030319201cf"
    "ffffffffffffffffa27570032a030202",
    "950a05c4036b6579939194a26e312a0701909198a26e312a0701c40576616c7565aa746578742f706c61"
    "696ecd04d2cd270fc0",
    "950a06c4036b6579939194a26e312a0701909198a26e312a0701c40576616c7565aa746578742f706c61"
    "696ecd04d2cd270fa26e33",
    "920b05",
    "930c07c40200ff",
    "930d07939194a26e312a0701909198a26e312a0701c40576616c7565aa746578742f706c61696ecd04d2"
    "cd270f",
    "930d08c0",
    "93140997c4016bc40176aa746578742f706c61696eaf6b7747526c4b4a754d536f48415a41020acd01f4",
    "93140a97c4016bc0a0a66b7747516b41c0c0c0",
    "93150993a26f6baf6b7747526c4b4a754d536f48415a4102",
    "93150994a671756f72756d0102b271756f72756d206e6f742072656163686564",
    "93150992a872656a6563746564a3626164",
]


def test_join_and_data_path_bytes_are_pinned() -> None:
    assert [wire.encode(m).hex() for m in MESSAGES[:len(PINNED)]] == PINNED


def test_every_message_type_is_in_the_one_table() -> None:
    assert sorted(wire._TYPES) == [4, 5, 6, 7, 8, 10, 11, 12, 13, 20, 21, 30, 31, 32, 33,
                                   40, 41, 42, 43]
    for type_id, cls in wire._TYPES.items():
        assert type_id == cls.TYPE and callable(cls.from_fields) and callable(cls.to_fields)
    with pytest.raises(ValueError, match="already taken"):
        wire.register(type("Clash", (), {"TYPE": 10}))
    wire.register(ReplicaPut)  # registering a class again is harmless


def test_a_wrong_arity_or_an_unknown_type_is_a_wire_error() -> None:
    for doc in ([11], [11, 1, 2], [10, 1, b"k"], [4, 1], [99, 1], ["10", 1], [None]):
        with pytest.raises(wire.WireError):
            wire.decode(msgpack.packb(doc, use_bin_type=True))
    with pytest.raises(wire.WireError, match="not a message"):
        wire.encode(type("Stray", (), {"TYPE": 11, "to_fields": lambda self: []})())


def test_random_bytes_are_wire_errors() -> None:
    rng = random.Random(11)
    for _ in range(3000):
        frame = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 64)))
        with contextlib.suppress(wire.WireError):
            wire.decode(frame)


def mutate(doc: object, rng: random.Random) -> object:
    """Replace one random leaf of a decoded message with a value of another type."""
    if isinstance(doc, list) and doc and rng.random() < 0.8:
        i = rng.randrange(len(doc))
        doc = list(doc)
        doc[i] = mutate(doc[i], rng)
        return doc
    return rng.choice([None, -1, 2**63, "x", b"y", [], {}, 1.5, True, [1, 2, 3]])


def test_mutated_messages_are_wire_errors_or_valid() -> None:
    rng = random.Random(12)
    for _ in range(5000):
        msg = rng.choice(MESSAGES)
        doc = msgpack.unpackb(wire.encode(msg), raw=False)
        frame = msgpack.packb(mutate(doc, rng), use_bin_type=True)
        with contextlib.suppress(wire.WireError):
            wire.decode(frame)
