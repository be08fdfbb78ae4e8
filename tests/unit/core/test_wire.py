"""The wire codec: every message round-trips; garbage is a WireError and nothing else."""

from __future__ import annotations

import contextlib
import random

import msgpack
import pytest

from coordinator.requests import QuorumFailed, Rejected, WriteOk, WriteRequest
from gossip.membership import UP, Member
from ringkv.core import wire
from ringkv.core.transfer_wire import RangeBatch, RangeBusy, RangeFetch, SyncDone
from storage.versions import EMPTY_CONTEXT, update

ACTOR = ("n1", 42, 7)
STATE, CTX = update(None, EMPTY_CONTEXT, ACTOR, b"value", "text/plain", 1234, 9999)
MEMBER = Member("n1", "127.0.0.1:8001", "127.0.0.1:9001", (1, 2**64 - 1), UP, 3, 42)

MESSAGES = [
    wire.JoinRequest(MEMBER, 256),
    wire.JoinReply(True, "", (MEMBER,), 3, 2, 2),
    wire.ReplicaPut(5, b"key", STATE, None),
    wire.ReplicaPut(6, b"key", STATE, "n3"),
    wire.ReplicaPutAck(5),
    wire.ReplicaGet(7, b"\x00\xff"),
    wire.ReplicaGetReply(7, STATE),
    wire.ReplicaGetReply(8, None),
    wire.ForwardWrite(9, WriteRequest(b"k", b"v", "text/plain", CTX, 2, 10, 500)),
    wire.ForwardWrite(10, WriteRequest(b"k", None, "", EMPTY_CONTEXT)),
    wire.ForwardReply(9, WriteOk(CTX, 2)),
    wire.ForwardReply(9, QuorumFailed(1, 2, "quorum not reached")),
    wire.ForwardReply(9, Rejected("bad")),
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
    registered = {cls.__name__: type_id for type_id, cls in wire._EXTENSIONS.items()}
    assert {"GossipSyn": 6, "GossipAck": 7, "GossipAck2": 8}.items() <= registered.items()
    with pytest.raises(ValueError, match="already taken"):
        wire.register(type("Clash", (), {"TYPE": 1}))  # a retired id stays retired


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
