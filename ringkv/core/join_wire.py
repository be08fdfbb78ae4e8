"""Messages of joining a cluster, type ids 4-5.

    JoinRequest (4)  joining node -> seed   this node's record (tokens empty unless it
                                            restarts with a place in the ring) and vnodes
    JoinReply   (5)  seed -> joining node   ok, or an error; every member record (the
                                            joiner's with its tokens) and the cluster's
                                            n, r and w

A joining node does not know a seed's id yet: it sends to "seed:host:port" and the
runtime resolves the address. How the messages are handled is `ringkv.core.cluster`.

Invariants: `from_fields` accepts exactly what `to_fields` produces and raises
`ValueError`/`TypeError` on anything else (wrong arity, booleans for integers,
malformed member records), so a bad frame never reaches the membership.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from gossip.membership import Member
from gossip.messages import MAX_MEMBERS


def _int(doc: Any) -> int:
    if not isinstance(doc, int) or isinstance(doc, bool):
        raise ValueError("expected an integer")
    return doc


def _members(doc: Any) -> tuple[Member, ...]:
    if type(doc) is not list or len(doc) > MAX_MEMBERS:
        raise ValueError("expected a list of at most MAX_MEMBERS member records")
    return tuple(Member.from_wire(m) for m in doc)


@dataclass(frozen=True, slots=True)
class JoinRequest:
    TYPE: ClassVar[int] = 4
    record: Member
    vnodes: int

    def to_fields(self) -> list[Any]:
        return [self.record.to_wire(), self.vnodes]

    @classmethod
    def from_fields(cls, f: list[Any]) -> JoinRequest:
        if len(f) != 2:
            raise ValueError("malformed join request")
        return cls(Member.from_wire(f[0]), _int(f[1]))


@dataclass(frozen=True, slots=True)
class JoinReply:
    TYPE: ClassVar[int] = 5
    ok: bool
    error: str
    records: tuple[Member, ...]
    n: int
    r: int
    w: int

    def to_fields(self) -> list[Any]:
        return [self.ok, self.error, [m.to_wire() for m in self.records], self.n, self.r,
                self.w]

    @classmethod
    def from_fields(cls, f: list[Any]) -> JoinReply:
        if len(f) != 6 or not isinstance(f[0], bool) or not isinstance(f[1], str):
            raise ValueError("malformed join reply")
        return cls(f[0], f[1], _members(f[2]), _int(f[3]), _int(f[4]), _int(f[5]))


JOIN_MESSAGES = (JoinRequest, JoinReply)
