"""Gossip messages: the three legs of a push-pull exchange, as wire extensions.

    GossipSyn  (6)  initiator -> peer   the initiator's digest: one `Beat` per member
                                        (and its own record, for a while after a change)
    GossipAck  (7)  peer -> initiator   beats the peer knows newer, records whose version
                                        is newer at the peer, ids of records it wants
    GossipAck2 (8)  initiator -> peer   the records the peer asked for
    (9 is kept spare for the protocol.)

A `Beat` is `(node_id, generation, counter, version)`: the member's heartbeat (its
generation and counter) and the version of its record. Beats are encoded as one flat
list `[id, gen, counter, version, id, ...]`, which saves a msgpack header per member
(a 200-node digest is ~4.5 KB).

Invariants: `from_fields` accepts exactly what `to_fields` produces and raises
`ValueError`/`TypeError` on anything else, with sizes bounded (ids follow the node-id rule,
integers in [0, COUNTER_LIMIT = 2^62), at most `MAX_MEMBERS` beats, records or ids, and
every record checked whole by `Member.from_wire`), so a peer's garbage never reaches the
gossiper.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from gossip.membership import COUNTER_LIMIT, MAX_TOKENS, Member, valid_counter, valid_node_id

__all__ = ["MAX_MEMBERS", "MAX_TOKENS", "Beat", "GossipAck", "GossipAck2", "GossipSyn"]

MAX_MEMBERS = 4096  # far above any cluster this protocol is meant for


@dataclass(frozen=True, slots=True)
class Beat:
    node_id: str
    generation: int
    counter: int
    version: int


def _uint(x: Any) -> int:
    if not valid_counter(x):
        raise ValueError(f"expected an integer in [0, {COUNTER_LIMIT})")
    return x


def _node_id(x: Any) -> str:
    if not valid_node_id(x):
        raise ValueError("malformed node id")
    return x


def _list(x: Any, limit: int, what: str) -> list[Any]:
    if type(x) is not list or len(x) > limit:
        raise ValueError(f"malformed {what} list")
    return x


def _beats_fields(beats: tuple[Beat, ...]) -> list[Any]:
    flat: list[Any] = []
    for b in beats:
        flat += (b.node_id, b.generation, b.counter, b.version)
    return flat


def _beats(x: Any) -> tuple[Beat, ...]:
    flat = _list(x, 4 * MAX_MEMBERS, "beat")
    if len(flat) % 4:
        raise ValueError("beat list length is not a multiple of 4")
    return tuple(Beat(_node_id(flat[i]), _uint(flat[i + 1]), _uint(flat[i + 2]),
                      _uint(flat[i + 3])) for i in range(0, len(flat), 4))


def _records(x: Any) -> tuple[Member, ...]:
    out = []
    for doc in _list(x, MAX_MEMBERS, "record"):
        out.append(Member.from_wire(doc))  # checks every field
    return tuple(out)


def _arity(fields: Any, n: int, name: str) -> list[Any]:
    if type(fields) is not list or len(fields) != n:
        raise ValueError(f"malformed {name}")
    return fields


@dataclass(frozen=True, slots=True)
class GossipSyn:
    TYPE: ClassVar[int] = 6
    digest: tuple[Beat, ...]
    # The initiator's own record, for a while after it changed: a peer that still dials
    # the initiator's old address could not ask for it (its ACK would be lost).
    sender: Member | None = None

    def to_fields(self) -> list[Any]:
        return [_beats_fields(self.digest),
                None if self.sender is None else self.sender.to_wire()]

    @classmethod
    def from_fields(cls, fields: list[Any]) -> GossipSyn:
        digest, sender = _arity(fields, 2, "gossip syn")
        return cls(_beats(digest), None if sender is None else _records([sender])[0])


@dataclass(frozen=True, slots=True)
class GossipAck:
    TYPE: ClassVar[int] = 7
    beats: tuple[Beat, ...]
    records: tuple[Member, ...]
    wanted: tuple[str, ...]

    def to_fields(self) -> list[Any]:
        return [_beats_fields(self.beats), [m.to_wire() for m in self.records],
                list(self.wanted)]

    @classmethod
    def from_fields(cls, fields: list[Any]) -> GossipAck:
        beats, records, wanted = _arity(fields, 3, "gossip ack")
        return cls(_beats(beats), _records(records),
                   tuple(_node_id(w) for w in _list(wanted, MAX_MEMBERS, "wanted")))


@dataclass(frozen=True, slots=True)
class GossipAck2:
    TYPE: ClassVar[int] = 8
    records: tuple[Member, ...]

    def to_fields(self) -> list[Any]:
        return [[m.to_wire() for m in self.records]]

    @classmethod
    def from_fields(cls, fields: list[Any]) -> GossipAck2:
        (records,) = _arity(fields, 1, "gossip ack2")
        return cls(_records(records))


GOSSIP_MESSAGES = (GossipSyn, GossipAck, GossipAck2)
