"""The wire codec: every message round-trips; garbage is a WireError and nothing else."""

from __future__ import annotations

import contextlib
import random
import tracemalloc

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.listing_messages import ReplicaScan, ReplicaScanReply
from coordinator.messages import (
    ForwardReply,
    ForwardWrite,
    ReplicaGet,
    ReplicaGetReply,
    ReplicaPut,
    ReplicaPutAck,
)
from coordinator.requests import (
    LimitExceeded,
    QuorumFailed,
    Rejected,
    TooManySiblings,
    WriteOk,
    WriteRequest,
)
from gossip.membership import COUNTER_LIMIT, MAX_TOKENS, UP, Member
from gossip.messages import MAX_MEMBERS
from ringkv.core import wire
from ringkv.core.join_wire import JoinReply, JoinRequest
from ringkv.core.transfer_wire import (
    MAX_BATCH_KEYS,
    RangeBatch,
    RangeBusy,
    RangeFetch,
    SyncDone,
)
from storage.crdt import CounterAdd, SetEdit
from storage.versions import EMPTY_CONTEXT, encode_context, update

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
    ForwardReply(9, TooManySiblings(101, 100)),
    RangeFetch(11, 5, 2**64 - 1, None, 256),
    RangeFetch(12, 9, 3, b"\x00" * 8 + b"key", 1),
    RangeBatch(11, ((b"key", STATE), (b"k2", STATE)), b"\x00" * 8 + b"k2"),
    RangeBatch(12, (), None),
    SyncDone(2**64 - 1),
    RangeBusy(13),
    ReplicaScan(1, (0, b""), 2**64 - 1, "b", "kv", 10),
    ReplicaScanReply(1, ((b"k", STATE),), (5, b"k")),
    ReplicaScanReply(2, (), None),
    ForwardWrite(14, WriteRequest(b"\x00c\x01bk", None, "", EMPTY_CONTEXT,
                                  op=CounterAdd(-3, "retry-7"))),
    ForwardWrite(15, WriteRequest(b"\x00s\x01bk", None, "", EMPTY_CONTEXT,
                                  op=SetEdit((b"apple",), ((b"pear", frozenset({(ACTOR, 1)})),)))),
    ForwardReply(14, LimitExceeded("set elements", 10_001, 10_000)),
]


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_round_trip(msg: wire.Message) -> None:
    decoded = wire.decode(wire.encode(msg))
    assert type(decoded) is type(msg)
    assert wire.encode(decoded) == wire.encode(msg)


def test_type_ids_are_unique_and_stable() -> None:
    ids = {type(m).__name__: type(m).TYPE for m in MESSAGES}
    assert ids == {"JoinRequest": 4, "JoinReply": 5, "ReplicaPut": 10, "ReplicaPutAck": 11,
                   "ReplicaGet": 12, "ReplicaGetReply": 13, "ReplicaScan": 14,
                   "ReplicaScanReply": 15, "ForwardWrite": 20,
                   "ForwardReply": 21, "RangeFetch": 40, "RangeBatch": 41, "SyncDone": 42,
                   "RangeBusy": 43}
    registered = {cls.__name__: type_id for type_id, cls in wire._TYPES.items()}
    assert {"GossipSyn": 6, "GossipAck": 7, "GossipAck2": 8}.items() <= registered.items()
    with pytest.raises(ValueError, match="already taken"):
        wire.register(type("Clash", (), {"TYPE": 1}))  # a retired id stays retired


# The bytes of the join and data-path messages, as the codec produced them when each
# type was decoded by its own case: moving a message must not change one byte.
# (The member records of the first two gained their key, author and signature.)
PINNED = [
    "93049aa26e31ae3132372e302e302e313a38303031ae3132372e302e302e313a393030319201cfffffff"
    "ffffffffffa27570032ac400a0c400cd0100",
    "9705c3a0919aa26e31ae3132372e302e302e313a38303031ae3132372e302e302e313a393030319201cf"
    "ffffffffffffffffa27570032ac400a0c400030202",
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
    "93150993a87369626c696e67736564",
]


def test_join_and_data_path_bytes_are_pinned() -> None:
    assert [wire.encode(m).hex() for m in MESSAGES[:len(PINNED)]] == PINNED


def test_every_message_type_is_in_the_one_table() -> None:
    assert sorted(wire._TYPES) == [4, 5, 6, 7, 8, 10, 11, 12, 13, 14, 15, 20, 21, 30, 31,
                                   32, 33, 40, 41, 42, 43, 44]
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


def test_a_too_many_siblings_reply_is_decoded_strictly() -> None:
    for doc in (["siblings", 1], ["siblings", 1, 2, 3], ["siblings", True, 2],
                ["siblings", 1, "2"], ["siblings", 1.0, 2]):
        with pytest.raises(wire.WireError):
            wire.decode(msgpack.packb([21, 9, doc], use_bin_type=True))
    frame = msgpack.packb([21, 9, ["siblings", 101, 100]], use_bin_type=True)
    assert wire.decode(frame) == ForwardReply(9, TooManySiblings(101, 100))


def test_a_forwarded_context_in_another_encoding_than_its_own_is_refused() -> None:
    """A found input: a ForwardWrite whose context was "" decoded (to the empty
    context) but re-encoded to other bytes. Every context on the wire is in the
    encoding `encode_context` gives; the same for a forwarded answer's context."""
    request = [b"\x00", b"", "text/plain", "", None, None, 256]
    with pytest.raises(wire.WireError):
        wire.decode(msgpack.packb([20, 0, request], use_bin_type=True))
    padded = encode_context(EMPTY_CONTEXT) + "=="
    with pytest.raises(wire.WireError):
        wire.decode(msgpack.packb([21, 9, ["ok", padded, 2]], use_bin_type=True))
    canonical = [b"\x00", b"", "text/plain", encode_context(EMPTY_CONTEXT), None, None, 256]
    frame = msgpack.packb([20, 0, canonical], use_bin_type=True)
    assert wire.encode(wire.decode(frame)) == frame


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


# --- hostile frames: refused before they take memory out of proportion to their size --

FRAME = 8 << 20  # an 8 MiB frame


def _array32(n: int) -> bytes:
    return b"\xdd" + n.to_bytes(4, "big")


def _peak_decoding(frame: bytes) -> tuple[int, str]:
    """Peak traced bytes while decoding `frame`, and the WireError it raised."""
    tracemalloc.start()
    try:
        with pytest.raises(wire.WireError) as err:
            wire.decode(frame)
        return tracemalloc.get_traced_memory()[1], str(err.value)
    finally:
        tracemalloc.stop()


HOSTILE = {
    # one array claiming 8 million empty arrays (msgpack builds ~690 MB of lists)
    "flat empty arrays": _array32(FRAME - 5) + b"\x90" * (FRAME - 5),
    # the same in rows short enough to pass any per-array length limit
    "nested empty arrays": _array32(128) + (_array32(65_536) + b"\x90" * 65_536) * 127,
    # the type id, then 8 MiB of one-element arrays nested in each other
    "deep arrays": b"\x92\x04" + b"\x91" * (FRAME - 3) + b"\xc0",
    "huge map": b"\x92\x04\xdf" + (FRAME // 2).to_bytes(4, "big") + b"\x00\xc0" * (FRAME // 2),
    "huge map claim": b"\x92\x04\xdf\xff\xff\xff\xff",
    "huge bin claim": b"\x93\x0c\x07\xc6\xff\xff\xff\xff" + b"\x00" * 64,
    "huge str claim": b"\x92\x04\xdb\xff\xff\xff\xff" + b"a" * 64,
    "huge array claim": b"\x92\x04\xdd\xff\xff\xff\xff",
    "long string": b"\x92\x04\xdb" + FRAME.to_bytes(4, "big") + b"a" * FRAME,
    "ext": b"\x92\x04\xc7" + (200).to_bytes(1, "big") + b"\x01" + b"\x00" * 200,
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_frame_is_refused_within_a_memory_ceiling(name: str) -> None:
    peak, _ = _peak_decoding(HOSTILE[name])
    assert peak < 64 << 20, f"{name}: {peak / 2**20:.0f} MiB"


def test_the_limits_cover_the_largest_legitimate_messages() -> None:
    big = Member("n" * 64, "h" * 250 + ":65535", "h" * 250 + ":65535",
                 tuple(range(MAX_TOKENS)), UP, COUNTER_LIMIT - 1, COUNTER_LIMIT - 1)
    many = tuple(Member(f"n{i}", "h:1", "h:2", tuple(range(8)), UP, 1, 1)
                 for i in range(MAX_MEMBERS))
    for msg in (JoinReply(True, "", (big, *many[1:]), 3, 2, 2), JoinRequest(big, 4096),
                RangeBatch(1, tuple((b"k%d" % i, STATE) for i in range(MAX_BATCH_KEYS)),
                           None)):
        frame = wire.encode(msg)
        assert wire.encode(wire.decode(frame)) == frame
    assert MAX_TOKENS <= wire.MAX_ARRAY_LEN and 4 * MAX_MEMBERS <= wire.MAX_ARRAY_LEN


# --- fuzz: anything decodes to a message that re-encodes to the same bytes, or is a
# WireError, for every registered type --------------------------------------------------

LEAVES = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
          | st.floats(allow_nan=False) | st.text(max_size=70) | st.binary(max_size=70)
          | st.sampled_from(["n1", "h:1", "127.0.0.1:9001", UP, "left", "bad id!", "../x"]))
DOCS = st.recursive(LEAVES, lambda inner: st.lists(inner, max_size=6), max_leaves=40)


def _decodes_canonically_or_refuses(frame: bytes, packed: bool = True) -> None:
    """`frame` is refused with a WireError (and nothing else), or it decodes to a message
    that encodes to the same bytes: exactly `frame` when msgpack packed it (random bytes
    may spell an integer in a longer form than msgpack's, and re-encode shorter)."""
    try:
        msg = wire.decode(frame)
    except wire.WireError:
        return
    again = wire.encode(msg)
    assert wire.encode(wire.decode(again)) == again
    if packed:
        assert again == frame


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=256))
def test_fuzz_random_bytes(frame: bytes) -> None:
    _decodes_canonically_or_refuses(frame, packed=False)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(wire._TYPES)), st.lists(DOCS, max_size=8))
def test_fuzz_random_documents_of_every_type(type_id: int, fields: list[object]) -> None:
    _decodes_canonically_or_refuses(msgpack.packb([type_id, *fields], use_bin_type=True))


@settings(max_examples=800, deadline=None)
@given(st.sampled_from(MESSAGES), st.randoms(use_true_random=False))
def test_fuzz_mutated_messages(msg: wire.Message, rng: random.Random) -> None:
    doc = msgpack.unpackb(wire.encode(msg), raw=False)
    _decodes_canonically_or_refuses(msgpack.packb(mutate(doc, rng), use_bin_type=True))
