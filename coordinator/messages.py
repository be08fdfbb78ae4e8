"""The data-path messages between nodes, type ids 10-13 and 20-21, and their field codecs.

    ReplicaPut       (10)  coordinator -> replica   merge these versions (or keep them as
                                                    a hint for `hint_for`)
    ReplicaPutAck    (11)  replica -> coordinator   the put is on disk
    ReplicaGet       (12)  coordinator -> replica   what do you hold for this key?
    ReplicaGetReply  (13)  replica -> coordinator   this (None: nothing)
    ForwardWrite     (20)  any node -> a replica    coordinate this client write for me
    ForwardReply     (21)  replica -> forwarder     the write's outcome

A ReplicaPut with request id `REPAIR_ID` (a read repair) is fire-and-forget: the replica
sends no ack for it. Hint deliveries are ReplicaPuts too, acknowledged like writes; the
coordinator tells the two kinds of ack apart by the request id.

Invariants: `ringkv.core.wire` registers these classes and encodes each as
`[TYPE, *to_fields()]`; `from_fields` accepts exactly what `to_fields` produces and
raises `ValueError`/`TypeError` on anything else (keys outside 1..`MAX_KEY_BYTES`, the
stored-key limit of `storage.namespace`; node ids outside 1..64 characters, malformed
versions, client contexts or data-type updates, booleans for
integers), so a peer's garbage never reaches the coordinator. The one deferred check
is a ReplicaGetReply's versions: they stay packed until the read's quorum decodes them,
validating them the same way, and an answer that fails is dropped there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from coordinator.requests import (
    ClientResponse,
    LimitExceeded,
    QuorumFailed,
    RecordTooLarge,
    Rejected,
    StorageFull,
    TooManySiblings,
    WriteOk,
    WriteRequest,
)
from storage.crdt import operation_from_doc, operation_to_doc
from storage.keys import MAX_KEY_LEN
from storage.store import pack_versions
from storage.versions import Context, Versions, decode_context, encode_context, from_wire, to_wire

__all__ = ["DATA_MESSAGES", "MAX_KEY_BYTES", "REPAIR_ID", "ForwardReply", "ForwardWrite",
           "ReplicaGet", "ReplicaGetReply", "ReplicaPut", "ReplicaPutAck"]

MAX_KEY_BYTES = MAX_KEY_LEN
REPAIR_ID = 0  # request id of fire-and-forget repairs: their acks are ignored


def _arity(f: list[Any], n: int, what: str) -> None:
    if len(f) != n:
        raise ValueError(f"malformed {what}")


def _int(doc: Any) -> int:
    if not isinstance(doc, int) or isinstance(doc, bool):
        raise ValueError("expected an integer")
    return doc


def _opt_int(doc: Any) -> int | None:
    return None if doc is None else _int(doc)


def _key(doc: Any) -> bytes:
    if not isinstance(doc, bytes) or not 1 <= len(doc) <= MAX_KEY_BYTES:
        raise ValueError("malformed key")
    return doc


def _node_id(doc: Any) -> str | None:
    if doc is None:
        return None
    if not isinstance(doc, str) or not 1 <= len(doc) <= 64:
        raise ValueError("malformed node id")
    return doc


def _context(text: Any) -> Context:
    if not isinstance(text, str):
        raise ValueError("malformed context")
    context = decode_context(text)  # a ContextError is a ValueError
    # One encoding per context on the wire, as for every other field: a client may
    # send "" for none, a peer sends the encoding `encode_context` gives.
    if encode_context(context) != text:
        raise ValueError("context not in its canonical encoding")
    return context


def _write_request_doc(req: WriteRequest) -> list[Any]:
    doc: list[Any] = [req.key, req.value, req.content_type, encode_context(req.context), req.w,
           req.ttl, req.timeout_ms]
    if req.op is not None:
        doc.append(operation_to_doc(req.op))
    return doc


def _write_request(doc: Any) -> WriteRequest:
    # Seven fields for a value written, an eighth for a data-type update.
    if not (isinstance(doc, list) and len(doc) in (7, 8)):
        raise ValueError("malformed write request")
    key, value, ctype, ctx, w, ttl, timeout = doc[:7]
    if value is not None and not isinstance(value, bytes) or not isinstance(ctype, str):
        raise ValueError("malformed write request")
    op = operation_from_doc(doc[7]) if len(doc) == 8 else None
    return WriteRequest(_key(key), value, ctype, _context(ctx), _opt_int(w), _opt_int(ttl),
                        _opt_int(timeout), op)


def _response_doc(resp: ClientResponse) -> list[Any]:
    if isinstance(resp, WriteOk):
        return ["ok", encode_context(resp.context), resp.acks]
    if isinstance(resp, QuorumFailed):
        return ["quorum", resp.acks, resp.required, resp.error]
    if isinstance(resp, Rejected):
        return ["rejected", resp.message]
    if isinstance(resp, TooManySiblings):
        return ["siblings", resp.siblings, resp.limit]
    if isinstance(resp, RecordTooLarge):
        return ["too_large", resp.size, resp.limit]
    if isinstance(resp, StorageFull):
        return ["storage_full", resp.error]
    if isinstance(resp, LimitExceeded):
        return ["limit", resp.what, resp.size, resp.limit]
    raise ValueError(f"cannot forward a {type(resp).__name__}")


def _response(doc: Any) -> ClientResponse:
    if not isinstance(doc, list) or not doc:
        raise ValueError("malformed response")
    kind = doc[0]
    if kind == "ok" and len(doc) == 3:
        return WriteOk(_context(doc[1]), _int(doc[2]))
    if kind == "quorum" and len(doc) == 4 and isinstance(doc[3], str):
        return QuorumFailed(_int(doc[1]), _int(doc[2]), doc[3])
    if kind == "rejected" and len(doc) == 2 and isinstance(doc[1], str):
        return Rejected(doc[1])
    if kind == "siblings" and len(doc) == 3:
        return TooManySiblings(_int(doc[1]), _int(doc[2]))
    if kind == "too_large" and len(doc) == 3:
        return RecordTooLarge(_int(doc[1]), _int(doc[2]))
    if kind == "storage_full" and len(doc) == 2 and isinstance(doc[1], str):
        return StorageFull(doc[1])
    if kind == "limit" and len(doc) == 4 and isinstance(doc[1], str) and len(doc[1]) <= 64:
        return LimitExceeded(doc[1], _int(doc[2]), _int(doc[3]))
    raise ValueError("malformed response")


@dataclass(frozen=True, slots=True)
class ReplicaPut:
    TYPE: ClassVar[int] = 10
    req_id: int
    key: bytes
    versions: Versions
    hint_for: str | None

    def to_fields(self) -> list[Any]:
        return [self.req_id, self.key, to_wire(self.versions), self.hint_for]

    @classmethod
    def from_fields(cls, f: list[Any]) -> ReplicaPut:
        _arity(f, 4, "replica put")
        return cls(_int(f[0]), _key(f[1]), from_wire(f[2]), _node_id(f[3]))


@dataclass(frozen=True, slots=True)
class ReplicaPutAck:
    TYPE: ClassVar[int] = 11
    req_id: int

    def to_fields(self) -> list[Any]:
        return [self.req_id]

    @classmethod
    def from_fields(cls, f: list[Any]) -> ReplicaPutAck:
        _arity(f, 1, "replica put ack")
        return cls(_int(f[0]))


@dataclass(frozen=True, slots=True)
class ReplicaGet:
    TYPE: ClassVar[int] = 12
    req_id: int
    key: bytes

    def to_fields(self) -> list[Any]:
        return [self.req_id, self.key]

    @classmethod
    def from_fields(cls, f: list[Any]) -> ReplicaGet:
        _arity(f, 2, "replica get")
        return cls(_int(f[0]), _key(f[1]))


@dataclass(frozen=True, slots=True, eq=False)
class ReplicaGetReply:
    """A replica's answer, usually still packed as the replica stores it.

    `versions` is None (nothing held), the state packed (`storage.store.pack_versions`:
    what replicas send, and what the codec hands over, unvalidated) or decoded. Packed
    or decoded, it is the same frame, and replies compare equal by it. The codec treats
    the packed form as the frame's last field already encoded (`PACKED_TAIL`), and the
    coordinator decodes and validates it (`coordinator.quorum.ReadQuorum`), once per
    distinct answer.
    """

    TYPE: ClassVar[int] = 13
    PACKED_TAIL: ClassVar[bool] = True
    req_id: int
    versions: bytes | Versions | None

    def to_fields(self) -> list[Any]:
        state = self.versions
        return [self.req_id, state if state is None or isinstance(state, bytes)
                else to_wire(state)]

    def packed(self) -> bytes | None:
        """The versions packed, whichever form this reply holds them in."""
        state = self.versions
        return state if state is None or isinstance(state, bytes) else pack_versions(state)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ReplicaGetReply):
            return NotImplemented
        return self.req_id == other.req_id and self.packed() == other.packed()

    def __hash__(self) -> int:
        return hash((self.req_id, self.packed()))

    @staticmethod
    def tail_shape_ok(doc: Any) -> bool:
        """The outline of a packed state ([vector, cloud, siblings], three lists),
        checked by the codec before it hands the state over unvalidated."""
        return (type(doc) is list and len(doc) == 3
                and all(type(part) is list for part in doc))

    @classmethod
    def from_fields(cls, f: list[Any]) -> ReplicaGetReply:
        _arity(f, 2, "replica get reply")
        if f[1] is not None and type(f[1]) is not bytes:
            raise ValueError("malformed replica get reply")
        return cls(_int(f[0]), f[1])


@dataclass(frozen=True, slots=True)
class ForwardWrite:
    TYPE: ClassVar[int] = 20
    req_id: int
    request: WriteRequest

    def to_fields(self) -> list[Any]:
        return [self.req_id, _write_request_doc(self.request)]

    @classmethod
    def from_fields(cls, f: list[Any]) -> ForwardWrite:
        _arity(f, 2, "forwarded write")
        return cls(_int(f[0]), _write_request(f[1]))


@dataclass(frozen=True, slots=True)
class ForwardReply:
    TYPE: ClassVar[int] = 21
    req_id: int
    response: ClientResponse

    def to_fields(self) -> list[Any]:
        return [self.req_id, _response_doc(self.response)]

    @classmethod
    def from_fields(cls, f: list[Any]) -> ForwardReply:
        _arity(f, 2, "forward reply")
        return cls(_int(f[0]), _response(f[1]))


DATA_MESSAGES = (ReplicaPut, ReplicaPutAck, ReplicaGet, ReplicaGetReply, ForwardWrite,
                 ForwardReply)
