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
    14-15  key listing scans           coordinator.listing_messages
    20-21  forwarded writes            coordinator.messages
    30-33  anti-entropy (to 39)        antientropy.messages
    40-44  range transfers             ringkv.core.transfer_wire

A message class may set `PACKED_TAIL = True`: its last field, when not None, is carried
already packed (msgpack bytes), so that a state read from disk goes out without being
decoded and encoded again. `encode` appends those bytes as they are, and `decode` hands
`from_fields` the last field's bytes as they came, packed, for the receiver to decode
when (and if) it needs them, once the class's `tail_shape_ok` accepted the field's
outline. The frame is the one the unpacked field would give.

`decode` validates shape and types and raises `WireError` on anything else, so a
malformed frame from a peer is refused without touching node state; msgpack builds the
document under the limits below (array, string and bin lengths, arrays in all), so a
hostile frame is refused before it can take memory out of proportion to its size.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol, runtime_checkable

import msgpack

from antientropy.messages import MAX_ITEMS as AE_MAX_ITEMS
from antientropy.messages import MESSAGES as AE_MESSAGES
from coordinator.effects import Message as AnyMessage
from coordinator.listing_messages import LISTING_MESSAGES
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
_PACKED_TAIL: set[int] = set()  # ids of the types whose last field travels packed
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
        if getattr(cls, "PACKED_TAIL", False):
            _PACKED_TAIL.add(type_id)


def registered_types() -> dict[int, Any]:
    """Every registered message class by type id, in id order (a copy: registering is
    `register`'s job)."""
    return {type_id: _TYPES[type_id] for type_id in sorted(_TYPES)}


def encode(msg: AnyMessage) -> bytes:
    if _TYPES.get(msg.TYPE) is not type(msg):
        raise WireError(f"not a message: {msg!r}")
    try:
        fields = msg.to_fields()  # type: ignore[attr-defined]
    except (ValueError, TypeError) as exc:
        raise WireError(str(exc)) from exc
    if msg.TYPE in _PACKED_TAIL and fields and type(fields[-1]) is bytes:
        # The frame of [type, *fields] with the last one unpacked: msgpack writes a
        # list as its header and then each item, so a placeholder nil (one byte, last)
        # is swapped for the packed bytes.
        head: bytes = msgpack.packb([msg.TYPE, *fields[:-1], None], use_bin_type=True)
        return head[:-1] + fields[-1]
    packed: bytes = msgpack.packb([msg.TYPE, *fields], use_bin_type=True)
    return packed


def _packed_tail(frame: bytes, doc: list[Any]) -> bytes:
    """The bytes of the last item of the message list `doc` that `frame` decoded to.

    They are the end of the frame when its start is as `encode` writes it (any
    well-formed frame ends with its last item); a frame from another encoder gets the
    item packed again, the same value in `encode`'s form.
    """
    head: bytes = msgpack.packb([*doc[:-1], None], use_bin_type=True)[:-1]
    if frame.startswith(head):
        return frame[len(head):]
    packed: bytes = msgpack.packb(doc[-1], use_bin_type=True)
    return packed


# Decoding limits, checked by msgpack while it builds the document, before any message
# looks at it: without them one 8 MiB frame of nested empty arrays builds ~8 million
# lists (~690 MB). Each is an honest ceiling over what real messages need:
# - the longest array any `from_fields` accepts is anti-entropy's flattened (index,
#   hash) pairs, 2 x antientropy MAX_ITEMS (2^17); beats are 4 x MAX_MEMBERS, tokens
#   MAX_VNODES, a range batch MAX_BATCH_KEYS, a scan reply MAX_SCAN_ENTRIES: all shorter.
MAX_ARRAY_LEN = 2 * AE_MAX_ITEMS
# - no message carries a map (records, clocks and batches are arrays).
MAX_MAP_LEN = 0
# - strings are node ids (64), addresses (260), content types and error texts: 64 KiB
#   is far above any of them.
MAX_STR_LEN = 1 << 16
# - bins are keys (1 KiB) and values (up to the node's max_value_bytes, 1 MiB by
#   default and not bounded above by configuration): the transport's frame cap is the
#   only honest ceiling (a claim longer than the frame itself is refused without
#   allocating).
MAX_BIN_LEN = 64 << 20
# - containers in one message: the largest is a range batch, anti-entropy page or scan
#   reply of 1,000 records, each 2 arrays plus one a sibling and one a clock entry; at 100
#   siblings and 100 clock entries that is ~200,000. Twice that, rounded up, bounds the
#   lists of a hostile frame at ~40 MB whatever its nesting. Scalars still cost up to
#   ~20 times their wire size (a 2-character string: 3 bytes on the wire, ~50 in memory),
#   which only the transport's frame cap bounds.
MAX_CONTAINERS = 1 << 19


class _Budget:
    """Counts the containers msgpack builds (its list hook) and stops it past the cap."""

    __slots__ = ("left",)

    def __init__(self) -> None:
        self.left = MAX_CONTAINERS

    def __call__(self, items: list[Any]) -> list[Any]:
        self.left -= 1
        if self.left < 0:
            raise WireError(f"frame holds more than {MAX_CONTAINERS} arrays")
        return items


def decode(frame: bytes) -> Message:
    try:
        doc = msgpack.unpackb(
            frame, raw=False, use_list=True, strict_map_key=True, list_hook=_Budget(),
            max_array_len=MAX_ARRAY_LEN, max_map_len=MAX_MAP_LEN, max_str_len=MAX_STR_LEN,
            max_bin_len=MAX_BIN_LEN, max_ext_len=0)
    except WireError:
        raise
    except Exception as exc:  # msgpack raises many types on garbage
        raise WireError("frame is not msgpack") from exc
    if not isinstance(doc, list) or not doc:
        raise WireError("frame is not a message")
    type_id, fields = doc[0], doc[1:]
    cls = _TYPES.get(type_id) if type(type_id) is int else None
    if cls is None:
        raise WireError(f"unknown message type {type_id!r} with {len(fields)} fields")
    if type_id in _PACKED_TAIL and fields and fields[-1] is not None:
        # Unpacked above under the limits (so unpacking it again is as bounded), but
        # handed over packed: validating it whole is the receiver's, when it needs it.
        # Its shape is checked here, at no cost, so garbage is refused (and counted)
        # like any malformed frame.
        if not cls.tail_shape_ok(fields[-1]):
            raise WireError(f"malformed packed field of message type {type_id}")
        fields[-1] = _packed_tail(frame, doc)
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
register(*LISTING_MESSAGES)
register(*AE_MESSAGES)
register(*TRANSFER_MESSAGES)
