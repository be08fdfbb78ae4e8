"""Property-based fuzz targets: every decoder that reads bytes from outside the node.

Each `Target` names one decoder, a hypothesis strategy of inputs for it (raw bytes,
msgpack documents of random shape, and valid encodings mutated byte by byte and field
by field, so the fuzz reaches deep into the decoder), and a `check` that feeds it one
input. The property, the same for all:

- the decoder refuses the input cleanly: it raises its documented error (`WireError`,
  `ContextError`, `ValueError`/`TypeError`; for the handshake machines, a `Failed`
  result, since they never raise), and nothing else; or
- it returns a value whose encoding decodes to an equal value, and re-encodes to the
  same bytes: exactly the input where the encoding is canonical (wire frames packed by
  msgpack, member records), else after one round (a context's vector is sorted and its
  cloud compacted when encoded).

Anything else raises `Finding` with the input. `run` drives one target for a number of
inputs with a given seed (hypothesis, not derandomized) and counts what it tried;
`scripts/fuzz decoders` runs them all, `tests/fuzz/test_fuzz_decoders.py` runs each with
a small budget. Targets call only the modules' public codecs, so they follow changes of
the formats (a new protocol version, a new field) without edits here.
"""

from __future__ import annotations

import base64
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from antientropy.messages import MESSAGES as AE_MESSAGES
from antientropy.messages import AeKeys, AeNodes, AePush, AePushReply
from coordinator.listing_messages import LISTING_MESSAGES, ReplicaScan, ReplicaScanReply
from coordinator.messages import (
    DATA_MESSAGES,
    ForwardReply,
    ForwardWrite,
    ReplicaGet,
    ReplicaGetReply,
    ReplicaPut,
    ReplicaPutAck,
)
from coordinator.requests import LimitExceeded, QuorumFailed, WriteOk, WriteRequest
from gossip.membership import UP, Member, valid_node_id
from gossip.messages import GOSSIP_MESSAGES, Beat, GossipAck, GossipAck2, GossipSyn
from ringkv.core import wire
from ringkv.core.join_wire import JOIN_MESSAGES, JoinReply, JoinRequest
from ringkv.core.transfer_wire import (
    TRANSFER_MESSAGES,
    RangeBatch,
    RangeBusy,
    RangeFetch,
    SyncDone,
)
from ringkv.net import handshake
from ringkv.net.framing import FrameDecoder, encode_frame
from storage.crdt import CounterAdd, SetEdit
from storage.record import Record, decode_record, encode_record
from storage.versions import (
    EMPTY_CONTEXT,
    ContextError,
    Versions,
    decode_context,
    encode_context,
    from_wire,
    to_wire,
    update,
)

__all__ = ["TARGETS", "Finding", "Result", "Target", "run"]

REFUSED = "refused"
DECODED = "decoded"


class Finding(AssertionError):
    """A decoder broke the property: it raised something else, or its value does not
    round-trip."""


@dataclass(frozen=True)
class Target:
    name: str
    decoder: str  # what is fuzzed, for the report
    inputs: st.SearchStrategy[Any]
    check: Callable[[Any], str]  # REFUSED or DECODED; raises Finding


@dataclass
class Result:
    name: str
    seed: int
    tried: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    findings: list[str] = field(default_factory=list)  # distinct ones, each shrunk


def run(target: Target, inputs: int, seed_value: int) -> Result:
    """Feed `target` up to `inputs` generated inputs (then shrink a finding, if any)."""
    result = Result(target.name, seed_value)

    @seed(seed_value)
    @settings(max_examples=inputs, deadline=None, database=None, derandomize=False,
              phases=[Phase.generate, Phase.shrink], suppress_health_check=list(HealthCheck),
              print_blob=False)
    @given(target.inputs)
    def prop(value: Any) -> None:
        result.tried += 1
        result.outcomes[target.check(value)] += 1

    try:
        prop()
    except Finding as exc:
        result.findings.append(str(exc))
    except ExceptionGroup as group:  # hypothesis found distinct failures
        found, rest = group.split(Finding)
        if rest is not None:
            raise rest from None
        assert found is not None
        result.findings += [str(exc) for exc in found.exceptions]
    return result


def _refusal(decoder: str, value: Any, exc: BaseException) -> Finding:
    return Finding(f"{decoder} raised {type(exc).__name__}: {exc} on {value!r:.600}")


# --- inputs ----------------------------------------------------------------------------

LEAVES = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
          | st.floats(allow_nan=False) | st.text(max_size=40) | st.binary(max_size=40)
          | st.sampled_from(["n1", "h:1", "127.0.0.1:9001", UP, "left", "bad id!", "",
                             "ringkv", 0, 1, 2, 2**62, 2**64 - 1, b"\x00" * 16]))
DOCS = st.recursive(LEAVES, lambda inner: st.lists(inner, max_size=6), max_leaves=40)


def _mutate_doc(doc: Any, rng: random.Random) -> Any:
    """One leaf or list of a document replaced, dropped or duplicated."""
    if isinstance(doc, list) and doc and rng.random() < 0.85:
        doc = list(doc)
        i = rng.randrange(len(doc))
        roll = rng.random()
        if roll < 0.08:
            del doc[i]
        elif roll < 0.16:
            doc.insert(i, doc[i])
        else:
            doc[i] = _mutate_doc(doc[i], rng)
        return doc
    return rng.choice([None, -1, 0, 2**62, 2**64 - 1, "x", "", b"", b"y" * 17, [], [[]],
                       1.5, True, False, "n1", [1, 2, 3], "a" * 70])


def _mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    """A few flips, inserts, deletions, truncations or duplications of a byte string."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        roll = rng.random()
        pos = rng.randrange(len(out) + 1)
        if roll < 0.35 and out:
            out[min(pos, len(out) - 1)] = rng.getrandbits(8)
        elif roll < 0.55:
            out[pos:pos] = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 4)))
        elif roll < 0.75:
            del out[pos:pos + rng.randint(1, 4)]
        elif roll < 0.9:
            del out[pos:]
        else:
            out[pos:pos] = out[pos:pos + rng.randint(1, 16)]
    return bytes(out)


def _mutate_packed(raw: bytes, rng: random.Random) -> bytes:
    doc = _mutate_doc(msgpack.unpackb(raw, raw=False), rng)
    return bytes(msgpack.packb(doc, use_bin_type=True))


def _mutate_framed(stream: bytes, rng: random.Random) -> bytes:
    """One frame of a stream of length-prefixed msgpack frames, mutated as a document."""
    frames = []
    while stream:
        n = int.from_bytes(stream[:4], "big")
        frames.append(stream[4:4 + n])
        stream = stream[4 + n:]
    i = rng.randrange(len(frames))
    frames[i] = _mutate_packed(frames[i], rng) or b"\xc0"
    return b"".join(encode_frame(f) for f in frames)


def _sources(samples: list[bytes], docs: st.SearchStrategy[bytes],
             framed: bool = False) -> st.SearchStrategy[bytes]:
    """Raw bytes, random documents, and the samples mutated as bytes and as documents
    (the samples are msgpack, or streams of frames of msgpack when `framed`)."""
    as_bytes = st.builds(_mutate_bytes, st.sampled_from(samples), st.randoms(use_true_random=False))
    as_docs = st.builds(_mutate_framed if framed else _mutate_packed,
                        st.sampled_from(samples), st.randoms(use_true_random=False))
    return st.one_of(st.binary(max_size=300), docs, st.sampled_from(samples), as_bytes, as_docs)


def _packed(docs: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    return docs.map(lambda d: msgpack.packb(d, use_bin_type=True))


# --- valid samples to mutate -------------------------------------------------------------

ACTOR = ("n1", 42, 7)
STATE, CTX = update(None, EMPTY_CONTEXT, ACTOR, b"value", "text/plain", 1234, 9999)
STATE2, CTX2 = update(STATE, EMPTY_CONTEXT, ("n2", 1, 0), None, "", 1300)
STATE3, _ = update(STATE2, CTX, ACTOR, b"v3", "a/b", 1400)
STATES = [STATE, STATE2, STATE3, Versions(CTX2, ())]
MEMBER = Member("n1", "127.0.0.1:8001", "127.0.0.1:9001", (1, 2**64 - 1), UP, 3, 42)
MEMBER2 = Member("n-2.b_", "[::1]:8002", "host.example:9002", tuple(range(8)), "leaving", 9, 1)

WIRE_GROUPS: dict[str, tuple[Any, list[Any]]] = {
    "join": (JOIN_MESSAGES, [JoinRequest(MEMBER, 256), JoinReply(True, "", (MEMBER, MEMBER2),
                                                                 3, 2, 2)]),
    "gossip": (GOSSIP_MESSAGES, [
        GossipSyn((Beat("n1", 1, 2, 3), Beat("n2", 4, 5, 6)), MEMBER),
        GossipSyn((), None),
        GossipAck((Beat("n3", 0, 0, 0),), (MEMBER, MEMBER2), ("n4",)),
        GossipAck2((MEMBER2,)),
    ]),
    "data": (DATA_MESSAGES, [
        ReplicaPut(5, b"key", STATE3, None), ReplicaPut(6, b"k", STATE, "n3"),
        ReplicaPutAck(5), ReplicaGet(7, b"\x00\xff"), ReplicaGetReply(7, STATE2),
        ReplicaGetReply(8, None),
        ForwardWrite(9, WriteRequest(b"k", b"v", "text/plain", CTX, 2, 10, 500)),
        ForwardReply(9, WriteOk(CTX2, 2)), ForwardReply(9, QuorumFailed(1, 2, "quorum")),
        ForwardWrite(10, WriteRequest(b"\x00c\x01bk", None, "", EMPTY_CONTEXT,
                                      op=CounterAdd(7, "retry-1"))),
        ForwardWrite(11, WriteRequest(b"\x00s\x01bk", None, "", EMPTY_CONTEXT,
                                      op=SetEdit((b"a", b"b"), ()))),
        ForwardReply(10, LimitExceeded("set elements", 10_001, 10_000)),
    ]),
    "listing": (LISTING_MESSAGES, [
        ReplicaScan(1, (0, b""), 2**64 - 1, "b", "kv", 10),
        ReplicaScan(2, (5, b"key"), 9, "default", "set", 1000),
        ReplicaScanReply(1, ((b"k", STATE3), (b"k2", STATE)), (5, b"k2")),
        ReplicaScanReply(2, (), None),
    ]),
    "antientropy": (AE_MESSAGES, [
        AeNodes(1, 0, ((0, 2**64 - 1, ((0, 12345),)),)),
        AeNodes(2, 1, ((5, 9, ((3, 1), (15, 2**64 - 1))),)),
        AeKeys(3, ((0, 10, 255, b"", True, ((b"k", 7), (b"k2", 8))),)),
        AePush(4, ((b"key", STATE3), (b"k2", STATE)), (b"want",)),
        AePushReply(5, ((b"key", STATE2),)),
    ]),
    "transfer": (TRANSFER_MESSAGES, [
        RangeFetch(11, 5, 2**64 - 1, None, 256),
        RangeFetch(12, 9, 3, b"\x00" * 8 + b"key", 1),
        RangeBatch(11, ((b"key", STATE3), (b"k2", STATE)), b"\x00" * 8 + b"k2"),
        SyncDone(2**64 - 1), RangeBusy(13),
    ]),
}


# --- wire frames (ringkv.core.wire: every registered message type) ------------------------


def _check_wire(frame: bytes, packed_by_msgpack: bool) -> str:
    try:
        msg = wire.decode(frame)
    except wire.WireError:
        return REFUSED
    except Exception as exc:  # noqa: BLE001 - anything else is the finding
        raise _refusal("wire.decode", frame, exc) from exc
    try:
        again = wire.encode(msg)
        twice = wire.encode(wire.decode(again))
    except Exception as exc:  # noqa: BLE001
        raise Finding(f"{msg!r:.300} from {frame!r:.300} does not re-encode: {exc!r}") from exc
    if twice != again:
        raise Finding(f"{msg!r:.300} re-encodes unstably: {again!r:.300} / {twice!r:.300}")
    if packed_by_msgpack and again != frame:
        raise Finding(f"{frame!r:.300} decodes to {msg!r:.300}, which encodes to {again!r:.300}")
    return DECODED


def _canonical_frame(frame: bytes) -> bool:
    """Whether msgpack itself would write these bytes (random bytes may spell a value in
    a longer form, which then re-encodes shorter: not a finding)."""
    try:
        doc = msgpack.unpackb(frame, raw=False, strict_map_key=False)
        return bool(msgpack.packb(doc, use_bin_type=True) == frame)
    except Exception:  # noqa: BLE001 - not msgpack: refused before any comparison
        return False


def _wire_target(group: str) -> Target:
    classes, messages = WIRE_GROUPS[group]
    type_ids = sorted(cls.TYPE for cls in classes)
    samples = [wire.encode(m) for m in messages]
    docs = _packed(st.tuples(st.sampled_from(type_ids), st.lists(DOCS, max_size=8))
                   .map(lambda t: [t[0], *t[1]]))
    return Target(f"wire-{group}", f"ringkv.core.wire.decode, type ids {type_ids}",
                  _sources(samples, docs),
                  lambda frame: _check_wire(frame, _canonical_frame(frame)))


# --- framing (ringkv.net.framing) ---------------------------------------------------------


def _check_frames(value: tuple[bytes, list[int], int]) -> str:
    stream, cuts, limit = value
    whole = FrameDecoder(limit)
    try:
        frames = whole.feed(stream)
        pieces = FrameDecoder(limit)
        chunked: list[bytes] = []
        bounds = sorted({min(c, len(stream)) for c in cuts} | {0, len(stream)})
        for a, b in zip(bounds, bounds[1:], strict=False):
            chunked += pieces.feed(stream[a:b])
    except Exception as exc:  # noqa: BLE001
        raise _refusal("FrameDecoder.feed", value, exc) from exc
    if chunked != frames or (whole.error is None) != (pieces.error is None):
        raise Finding(f"chunking changed the frames of {value!r:.600}")
    consumed = b"".join(encode_frame(f) for f in frames)
    if not stream.startswith(consumed) or any(not 1 <= len(f) <= limit for f in frames):
        raise Finding(f"frames of {stream!r:.600} do not re-encode to its prefix")
    return REFUSED if whole.error is not None else DECODED


def _frame_streams() -> st.SearchStrategy[bytes]:
    frame = st.binary(min_size=1, max_size=40).map(encode_frame)
    good = st.lists(frame, max_size=6).map(b"".join)
    return st.one_of(st.binary(max_size=200), good,
                     st.builds(_mutate_bytes, good.filter(bool),
                               st.randoms(use_true_random=False)))


FRAMES = Target("frames", "ringkv.net.framing.FrameDecoder.feed",
                st.tuples(_frame_streams(), st.lists(st.integers(0, 200), max_size=8),
                          st.sampled_from([1, 16, 40, 1024, 2**32 - 1])),
                _check_frames)


# --- the handshake (ringkv.net.handshake) -------------------------------------------------

SECRET = b"cluster-secret"
NONCE_L = b"L" * handshake.NONCE_SIZE
NONCE_D = b"D" * handshake.NONCE_SIZE


def _listener(secret: bytes | None) -> handshake.ListenerHandshake:
    return handshake.ListenerHandshake("n1", secret, valid_node_id, nonce=NONCE_L)


def _dialer(secret: bytes | None, expect: str | None) -> handshake.DialerHandshake:
    return handshake.DialerHandshake("n2", secret, valid_node_id, expect, nonce=NONCE_D)


def _outcome(machine: Any, chunks: list[bytes]) -> tuple[str, str]:
    """Feed chunks until the machine is done: ('accepted', peer) or ('failed', kind) or
    ('pending', '')."""
    for chunk in chunks:
        out = machine.receive(chunk)
        if isinstance(out, handshake.Accepted):
            if not valid_node_id(out.peer_id):
                raise Finding(f"accepted an invalid peer id {out.peer_id!r}")
            return ("accepted", out.peer_id)
        if isinstance(out, handshake.Failed):
            if machine.receive(b"more") is not out:
                raise Finding("a failed handshake did not stay failed")
            return ("failed", out.kind)
        if not isinstance(out, bytes):
            raise Finding(f"receive returned {out!r}")
    return ("pending", "")


def _check_handshake(value: tuple[str, bool, bytes, list[int]]) -> str:
    side, with_secret, data, cuts = value
    secret = SECRET if with_secret else None

    def make() -> Any:
        if side == "listener":
            return _listener(secret)
        machine = _dialer(secret, "n1")
        return machine

    bounds = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    chunks = [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    try:
        whole = _outcome(make(), [data])
        pieces = _outcome(make(), chunks)
    except Finding:
        raise
    except Exception as exc:  # noqa: BLE001 - receive must never raise
        raise _refusal(f"{side} handshake receive", value, exc) from exc
    if whole != pieces:
        raise Finding(f"chunking changed the outcome of {value!r:.600}: {whole} / {pieces}")
    return DECODED if whole[0] == "accepted" else REFUSED


def _handshake_samples() -> dict[str, list[bytes]]:
    """What an honest peer sends each side, with and without the secret, produced by the
    machines themselves (so the samples follow the protocol)."""
    out: dict[str, list[bytes]] = {"listener": [], "dialer": []}
    for secret in (None, SECRET):
        listener, dialer = _listener(secret), _dialer(secret, "n1")
        challenge = listener.opening()
        hello = dialer.receive(challenge)
        assert isinstance(hello, bytes) and hello
        accepted = listener.receive(hello)
        assert isinstance(accepted, handshake.Accepted), accepted
        out["listener"].append(hello)
        out["dialer"].append(challenge + accepted.send)
    return out


def _handshake_target(side: str) -> Target:
    samples = _handshake_samples()[side]
    docs = _packed(st.lists(DOCS, max_size=7).map(lambda f: ["ringkv", *f])).map(encode_frame)
    return Target(f"handshake-{side}", f"ringkv.net.handshake: the {side}'s receive",
                  st.tuples(st.just(side), st.booleans(),
                            st.one_of(_sources(samples, docs, framed=True),
                                      st.lists(st.sampled_from(samples), min_size=1,
                                               max_size=3).map(b"".join)),
                            st.lists(st.integers(0, 300), max_size=6)),
                  _check_handshake)


# --- client contexts (storage.versions.decode_context) ------------------------------------


def _check_context(text: str) -> str:
    try:
        ctx = decode_context(text)
    except ContextError:
        return REFUSED
    except Exception as exc:  # noqa: BLE001
        raise _refusal("decode_context", text, exc) from exc
    encoded = encode_context(ctx)
    again = decode_context(encoded)
    if again != ctx or encode_context(again) != encoded:
        raise Finding(f"context {text!r:.600} does not round-trip: {ctx!r:.300}")
    return DECODED


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _context_inputs() -> st.SearchStrategy[str]:
    samples = [msgpack.packb([1, *to_wire(s)[:2]], use_bin_type=True) for s in STATES]
    entry = st.lists(LEAVES, min_size=4, max_size=4) | st.tuples(
        st.sampled_from(["n1", "n2", "x" * 64, "x" * 65, ""]), st.integers(-1, 3),
        st.integers(0, 2**64 - 1), st.integers(-1, 5)).map(list)
    docs = _packed(st.tuples(st.sampled_from([1, 0, 2, "1"]), st.lists(entry, max_size=6),
                             st.lists(entry, max_size=6)).map(list))
    return st.one_of(st.text(max_size=80), st.text("AZaz09-_=+/ ", max_size=80),
                     _sources(samples, docs).map(_b64))


CONTEXTS = Target("context", "storage.versions.decode_context (X-Context from clients)",
                  _context_inputs(), _check_context)


# --- replica states (storage.versions.from_wire: from peers, and hints from disk) ---------


def _check_versions(raw: bytes) -> str:
    try:
        state = from_wire(msgpack.unpackb(raw, raw=False))
    except (ValueError, TypeError):
        return REFUSED  # msgpack's own errors are ValueErrors too
    except Exception as exc:  # noqa: BLE001
        raise _refusal("from_wire", raw, exc) from exc
    packed = msgpack.packb(to_wire(state), use_bin_type=True)
    again = from_wire(msgpack.unpackb(packed, raw=False))
    if again != state or msgpack.packb(to_wire(again), use_bin_type=True) != packed:
        raise Finding(f"versions {raw!r:.600} do not round-trip: {state!r:.300}")
    return DECODED


VERSIONS = Target("versions", "storage.versions.from_wire (replica states, hints on disk)",
                  _sources([msgpack.packb(to_wire(s), use_bin_type=True) for s in STATES],
                           _packed(st.lists(DOCS, min_size=3, max_size=3))),
                  _check_versions)


# --- records from disk (storage.record.decode_record) --------------------------------------


def _check_record(raw: bytes) -> str:
    """Damage on disk is refused with ValueError and nothing else; what decodes encodes
    again, to bytes that decode to the same record."""
    try:
        record = decode_record(raw)
    except ValueError:
        return REFUSED
    except Exception as exc:  # noqa: BLE001
        raise _refusal("decode_record", raw, exc) from exc
    try:
        again = encode_record(record)
        same = encode_record(decode_record(again)) == again
    except Exception as exc:  # noqa: BLE001
        raise Finding(f"record from {raw!r:.600} does not re-encode: {exc!r}") from exc
    if not same:
        raise Finding(f"record {raw!r:.600} decodes to {record!r:.300}, encoded {again!r:.300}")
    return DECODED


RECORDS = Target("record", "storage.record.decode_record (key records on disk)",
                 _sources([encode_record(Record(STATE3, ACTOR)), encode_record(Record(STATE))],
                          _packed(st.tuples(st.sampled_from([1, 2]), DOCS, DOCS).map(list))),
                 _check_record)


# --- member records (gossip.membership.Member.from_wire: gossip and the saved list) -------


def _check_member(raw: bytes) -> str:
    try:
        member = Member.from_wire(msgpack.unpackb(raw, raw=False))
    except (ValueError, TypeError):
        return REFUSED
    except Exception as exc:  # noqa: BLE001
        raise _refusal("Member.from_wire", raw, exc) from exc
    again = msgpack.packb(member.to_wire(), use_bin_type=True)
    if Member.from_wire(msgpack.unpackb(again, raw=False)) != member or (
            _canonical_frame(raw) and again != raw):
        raise Finding(f"member record {raw!r:.600} decodes to {member!r:.300}")
    return DECODED


MEMBERS = Target("member", "gossip.membership.Member.from_wire (gossip, saved members)",
                 _sources([msgpack.packb(m.to_wire(), use_bin_type=True)
                           for m in (MEMBER, MEMBER2)],
                          _packed(st.lists(DOCS, max_size=8))),
                 _check_member)


def _raw_wire_target() -> Target:
    samples = [wire.encode(m) for _, messages in WIRE_GROUPS.values() for m in messages]
    return Target("wire-bytes", "ringkv.core.wire.decode, any bytes",
                  st.one_of(st.binary(max_size=300),
                            st.builds(_mutate_bytes, st.sampled_from(samples),
                                      st.randoms(use_true_random=False))),
                  lambda frame: _check_wire(frame, _canonical_frame(frame)))


TARGETS: list[Target] = [
    FRAMES,
    _handshake_target("listener"),
    _handshake_target("dialer"),
    CONTEXTS,
    VERSIONS,
    RECORDS,
    MEMBERS,
    _raw_wire_target(),
    *(_wire_target(group) for group in WIRE_GROUPS),
]
