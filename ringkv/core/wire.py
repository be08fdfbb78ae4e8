"""Internode messages: frozen dataclasses with stable numeric type ids, and their codec.

A message is encoded as the msgpack array `[type_id, field, field, ...]`. Type ids are
part of the protocol: ONLY APPEND TO THE TABLE, never renumber. The simulation encodes
and decodes every message too, so the codec is exercised by every simulated run.

`decode` validates shape and types and raises `WireError` on anything else, so a
malformed frame from a peer is refused without touching node state.

Subsystems with their own messages (gossip, range transfers, anti-entropy) define them
next to their logic as `Extension`s: a `TYPE`, `to_fields()` and a `from_fields()` that
raises `ValueError`/`TypeError` on a malformed list. They are registered here with
`register`, so this module stays the one place that knows every type id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, cast, runtime_checkable

import msgpack

from coordinator.effects import Message as AnyMessage
from coordinator.requests import (
    ClientResponse,
    QuorumFailed,
    Rejected,
    WriteOk,
    WriteRequest,
)
from gossip.membership import Member
from gossip.messages import GOSSIP_MESSAGES
from storage.versions import (
    ContextError,
    Versions,
    decode_context,
    encode_context,
    from_wire,
    to_wire,
)

MAX_KEY_BYTES = 1024


class WireError(ValueError):
    """A frame that is not a valid ringkv message."""


@dataclass(frozen=True, slots=True)
class JoinRequest:
    TYPE: ClassVar[int] = 4
    record: Member
    vnodes: int


@dataclass(frozen=True, slots=True)
class JoinReply:
    TYPE: ClassVar[int] = 5
    ok: bool
    error: str
    records: tuple[Member, ...]
    n: int
    r: int
    w: int


@dataclass(frozen=True, slots=True)
class ReplicaPut:
    TYPE: ClassVar[int] = 10
    req_id: int
    key: bytes
    versions: Versions
    hint_for: str | None


@dataclass(frozen=True, slots=True)
class ReplicaPutAck:
    TYPE: ClassVar[int] = 11
    req_id: int


@dataclass(frozen=True, slots=True)
class ReplicaGet:
    TYPE: ClassVar[int] = 12
    req_id: int
    key: bytes


@dataclass(frozen=True, slots=True)
class ReplicaGetReply:
    TYPE: ClassVar[int] = 13
    req_id: int
    versions: Versions | None


@dataclass(frozen=True, slots=True)
class ForwardWrite:
    TYPE: ClassVar[int] = 20
    req_id: int
    request: WriteRequest


@dataclass(frozen=True, slots=True)
class ForwardReply:
    TYPE: ClassVar[int] = 21
    req_id: int
    response: ClientResponse


@runtime_checkable
class Extension(Protocol):
    """A message defined by a subsystem, encoded by its own `to_fields`."""

    TYPE: ClassVar[int]

    def to_fields(self) -> list[Any]: ...


Message = (
    JoinRequest | JoinReply | ReplicaPut | ReplicaPutAck
    | ReplicaGet | ReplicaGetReply | ForwardWrite | ForwardReply | Extension
)

_EXTENSIONS: dict[int, Any] = {}
# Ids 1-3 were the heartbeat ping, pong and members update that gossip (6-8) replaced:
# retired, never to be reused, so a frame from an old node cannot be misread.
_CORE_TYPES = frozenset(range(1, 6)) | frozenset(range(10, 14)) | {20, 21}


def register(*classes: Any) -> None:
    """Make extension message classes encodable and decodable. Ids must be unique."""
    for cls in classes:
        type_id = cls.TYPE
        if type_id in _CORE_TYPES or _EXTENSIONS.get(type_id, cls) is not cls:
            raise ValueError(f"message type id {type_id} is already taken")
        _EXTENSIONS[type_id] = cls


def _members(doc: Any) -> tuple[Member, ...]:
    if not isinstance(doc, list):
        raise WireError("expected a list of member records")
    return tuple(Member.from_wire(m) for m in doc)


def _key(doc: Any) -> bytes:
    if not isinstance(doc, bytes) or not 1 <= len(doc) <= MAX_KEY_BYTES:
        raise WireError("malformed key")
    return doc


def _int(doc: Any) -> int:
    if not isinstance(doc, int) or isinstance(doc, bool):
        raise WireError("expected an integer")
    return doc


def _opt_int(doc: Any) -> int | None:
    return None if doc is None else _int(doc)


def _versions(doc: Any) -> Versions:
    try:
        return from_wire(doc)
    except ValueError as exc:
        raise WireError(str(exc)) from exc


def _context(text: Any) -> Any:
    if not isinstance(text, str):
        raise WireError("malformed context")
    try:
        return decode_context(text)
    except ContextError as exc:
        raise WireError(str(exc)) from exc


def _write_request_doc(req: WriteRequest) -> list[Any]:
    return [req.key, req.value, req.content_type, encode_context(req.context), req.w,
            req.ttl, req.timeout_ms]


def _write_request(doc: Any) -> WriteRequest:
    if not (isinstance(doc, list) and len(doc) == 7):
        raise WireError("malformed write request")
    key, value, ctype, ctx, w, ttl, timeout = doc
    if value is not None and not isinstance(value, bytes) or not isinstance(ctype, str):
        raise WireError("malformed write request")
    return WriteRequest(_key(key), value, ctype, _context(ctx), _opt_int(w), _opt_int(ttl),
                        _opt_int(timeout))


def _response_doc(resp: ClientResponse) -> list[Any]:
    if isinstance(resp, WriteOk):
        return ["ok", encode_context(resp.context), resp.acks]
    if isinstance(resp, QuorumFailed):
        return ["quorum", resp.acks, resp.required, resp.error]
    if isinstance(resp, Rejected):
        return ["rejected", resp.message]
    raise WireError(f"cannot forward a {type(resp).__name__}")


def _response(doc: Any) -> ClientResponse:
    if not isinstance(doc, list) or not doc:
        raise WireError("malformed response")
    kind = doc[0]
    if kind == "ok" and len(doc) == 3:
        return WriteOk(_context(doc[1]), _int(doc[2]))
    if kind == "quorum" and len(doc) == 4 and isinstance(doc[3], str):
        return QuorumFailed(_int(doc[1]), _int(doc[2]), doc[3])
    if kind == "rejected" and len(doc) == 2 and isinstance(doc[1], str):
        return Rejected(doc[1])
    raise WireError("malformed response")


def _fields(msg: Message) -> list[Any]:
    match msg:
        case JoinRequest(record, vnodes):
            return [record.to_wire(), vnodes]
        case JoinReply(ok, error, records, n, r, w):
            return [ok, error, [m.to_wire() for m in records], n, r, w]
        case ReplicaPut(req_id, key, versions, hint_for):
            return [req_id, key, to_wire(versions), hint_for]
        case ReplicaPutAck(req_id):
            return [req_id]
        case ReplicaGet(req_id, key):
            return [req_id, key]
        case ReplicaGetReply(req_id, versions):
            return [req_id, None if versions is None else to_wire(versions)]
        case ForwardWrite(req_id, request):
            return [req_id, _write_request_doc(request)]
        case ForwardReply(req_id, response):
            return [req_id, _response_doc(response)]
    if _EXTENSIONS.get(msg.TYPE) is type(msg):
        return msg.to_fields()
    raise WireError(f"not a message: {msg!r}")


def encode(msg: AnyMessage) -> bytes:
    packed: bytes = msgpack.packb([msg.TYPE, *_fields(cast(Message, msg))], use_bin_type=True)
    return packed


def decode(frame: bytes) -> Message:
    try:
        doc = msgpack.unpackb(frame, raw=False, use_list=True, strict_map_key=True)
    except Exception as exc:  # msgpack raises many types on garbage
        raise WireError("frame is not msgpack") from exc
    if not isinstance(doc, list) or not doc:
        raise WireError("frame is not a message")
    try:
        return _decode_fields(doc[0], doc[1:])
    except WireError:
        raise
    except (ValueError, TypeError) as exc:
        raise WireError(str(exc)) from exc


def _node_id(doc: Any) -> str | None:
    if doc is None:
        return None
    if not isinstance(doc, str) or not 1 <= len(doc) <= 64:
        raise WireError("malformed node id")
    return doc


def _decode_fields(type_id: Any, f: list[Any]) -> Message:  # noqa: C901 - one case a type
    match type_id, len(f):
        case JoinRequest.TYPE, 2:
            return JoinRequest(Member.from_wire(f[0]), _int(f[1]))
        case JoinReply.TYPE, 6:
            if not isinstance(f[0], bool) or not isinstance(f[1], str):
                raise WireError("malformed join reply")
            return JoinReply(f[0], f[1], _members(f[2]), _int(f[3]), _int(f[4]), _int(f[5]))
        case ReplicaPut.TYPE, 4:
            return ReplicaPut(_int(f[0]), _key(f[1]), _versions(f[2]), _node_id(f[3]))
        case ReplicaPutAck.TYPE, 1:
            return ReplicaPutAck(_int(f[0]))
        case ReplicaGet.TYPE, 2:
            return ReplicaGet(_int(f[0]), _key(f[1]))
        case ReplicaGetReply.TYPE, 2:
            return ReplicaGetReply(_int(f[0]), None if f[1] is None else _versions(f[1]))
        case ForwardWrite.TYPE, 2:
            return ForwardWrite(_int(f[0]), _write_request(f[1]))
        case ForwardReply.TYPE, 2:
            return ForwardReply(_int(f[0]), _response(f[1]))
    ext = _EXTENSIONS.get(type_id) if isinstance(type_id, int) else None
    if ext is not None:
        msg: Message = ext.from_fields(f)
        return msg
    raise WireError(f"unknown message type {type_id!r} with {len(f)} fields")



# Subsystem messages (imported last: they only need this module's `register`).
from antientropy.messages import MESSAGES as AE_MESSAGES  # noqa: E402
from ringkv.core.transfer_wire import TRANSFER_MESSAGES  # noqa: E402

register(*TRANSFER_MESSAGES)
register(*GOSSIP_MESSAGES)  # gossip/messages.py: types 6-8, 9 spare
register(*AE_MESSAGES)  # antientropy/messages.py: types 30-33
