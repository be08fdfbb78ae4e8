"""Internode messages: one table of every message type by its stable numeric id, and the
codec that encodes and decodes through it.

A message is encoded as the msgpack array `[type_id, field, field, ...]`. Type ids are
part of the protocol: ONLY APPEND TO THE TABLE, never renumber. The simulation encodes
and decodes every message too, so the codec is exercised by every simulated run.

Every message is defined next to the logic that handles it, as an `Extension`: a
`TYPE`, `to_fields()` and a `from_fields()` that raises `ValueError`/`TypeError` on a
malformed list. This module registers them all (`register`), so it stays the one place
that knows every type id:

    1-3    retired (the heartbeat ping, pong and members update that gossip replaced)
    4-5    joining                     ringkv.core.join_wire
    6-8    gossip (9 spare)            gossip.messages
    10-13  replica puts and gets       coordinator.messages
    20-21  forwarded writes            coordinator.messages
    30-33  anti-entropy (to 39)        antientropy.messages
    40-43  range transfers             ringkv.core.transfer_wire

`decode` validates shape and types and raises `WireError` on anything else, so a
malformed frame from a peer is refused without touching node state.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol, runtime_checkable

import msgpack

from antientropy.messages import MESSAGES as AE_MESSAGES
from coordinator.effects import Message as AnyMessage
from coordinator.messages import DATA_MESSAGES
from gossip.messages import GOSSIP_MESSAGES
from ringkv.core.join_wire import JOIN_MESSAGES
from ringkv.core.transfer_wire import TRANSFER_MESSAGES


class WireError(ValueError):
    """A frame that is not a valid ringkv message."""


@runtime_checkable
class Extension(Protocol):
    """A message, encoded by its own `to_fields` (and decoded by its `from_fields`)."""

    TYPE: ClassVar[int]

    def to_fields(self) -> list[Any]: ...


Message = Extension

_TYPES: dict[int, Any] = {}
# Ids 1-3 were the heartbeat ping, pong and members update that gossip (6-8) replaced:
# retired, never to be reused, so a frame from an old node cannot be misread.
_RETIRED = frozenset(range(1, 4))


def register(*classes: Any) -> None:
    """Make message classes encodable and decodable. Ids must be unique."""
    for cls in classes:
        type_id = cls.TYPE
        if type_id in _RETIRED or _TYPES.get(type_id, cls) is not cls:
            raise ValueError(f"message type id {type_id} is already taken")
        _TYPES[type_id] = cls


def encode(msg: AnyMessage) -> bytes:
    if _TYPES.get(msg.TYPE) is not type(msg):
        raise WireError(f"not a message: {msg!r}")
    try:
        fields = msg.to_fields()  # type: ignore[attr-defined]
    except (ValueError, TypeError) as exc:
        raise WireError(str(exc)) from exc
    packed: bytes = msgpack.packb([msg.TYPE, *fields], use_bin_type=True)
    return packed


def decode(frame: bytes) -> Message:
    try:
        doc = msgpack.unpackb(frame, raw=False, use_list=True, strict_map_key=True)
    except Exception as exc:  # msgpack raises many types on garbage
        raise WireError("frame is not msgpack") from exc
    if not isinstance(doc, list) or not doc:
        raise WireError("frame is not a message")
    type_id, fields = doc[0], doc[1:]
    cls = _TYPES.get(type_id) if type(type_id) is int else None
    if cls is None:
        raise WireError(f"unknown message type {type_id!r} with {len(fields)} fields")
    try:
        msg: Message = cls.from_fields(fields)
    except WireError:
        raise
    except (ValueError, TypeError) as exc:
        raise WireError(str(exc)) from exc
    return msg


register(*JOIN_MESSAGES)
register(*GOSSIP_MESSAGES)
register(*DATA_MESSAGES)
register(*AE_MESSAGES)
register(*TRANSFER_MESSAGES)
