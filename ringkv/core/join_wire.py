"""Messages of joining a cluster, type ids 4-5.

    JoinRequest (4)  joining node -> seed   this node's record (its tokens are never
                                            read: the seed places the joiner), the vnodes
                                            it asks for, and a nonce
    JoinReply   (5)  seed -> joining node   ok, or an error; every member record (the
                                            joiner's with its tokens), the cluster's n, r
                                            and w, and the nonce of the request answered

A joining node does not know a seed's id yet: it sends to "seed:host:port" and the
runtime resolves the address. The nonce is what ties a reply to the seed that was
dialed: only the node listening there saw it. How the messages are handled is
`ringkv.core.cluster`.

Invariants: `from_fields` accepts exactly what `to_fields` produces and raises
`ValueError`/`TypeError` on anything else (wrong arity, booleans for integers,
malformed member records, quorums no cluster can have), so a bad frame never reaches the
membership. The nonce is a trailing field, written only when set (1 to 2^63 - 1): a
frame without it is the same bytes as before nonces existed, and carries nonce 0, which
no joiner ever accepts.
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


MAX_REPLICAS = MAX_MEMBERS  # n can never usefully exceed the members a cluster may have
NONCE_LIMIT = 1 << 63


def valid_quorums(n: object, r: object, w: object) -> bool:
    """True for replication settings a cluster can have: 1 <= r, w <= n <= MAX_REPLICAS."""
    return (type(n) is int and type(r) is int and type(w) is int
            and 1 <= n <= MAX_REPLICAS and 1 <= r <= n and 1 <= w <= n)


def _nonce(f: list[Any], at: int) -> int:
    """The optional trailing nonce at `f[at]`: 0 when absent, else 1 to NONCE_LIMIT - 1."""
    if len(f) == at:
        return 0
    nonce = _int(f[at])
    if not 1 <= nonce < NONCE_LIMIT:
        raise ValueError("nonce out of range")
    return nonce


def _with_nonce(fields: list[Any], nonce: int) -> list[Any]:
    return [*fields, nonce] if nonce else fields


def _members(doc: Any) -> tuple[Member, ...]:
    if type(doc) is not list or len(doc) > MAX_MEMBERS:
        raise ValueError("expected a list of at most MAX_MEMBERS member records")
    return tuple(Member.from_wire(m) for m in doc)


@dataclass(frozen=True, slots=True)
class JoinRequest:
    TYPE: ClassVar[int] = 4
    record: Member
    vnodes: int
    nonce: int = 0  # echoed by the seed's reply; 0: none (a reply to it is never taken)

    def to_fields(self) -> list[Any]:
        return _with_nonce([self.record.to_wire(), self.vnodes], self.nonce)

    @classmethod
    def from_fields(cls, f: list[Any]) -> JoinRequest:
        if len(f) not in (2, 3):
            raise ValueError("malformed join request")
        return cls(Member.from_wire(f[0]), _int(f[1]), _nonce(f, 2))


@dataclass(frozen=True, slots=True)
class JoinReply:
    TYPE: ClassVar[int] = 5
    ok: bool
    error: str
    records: tuple[Member, ...]
    n: int
    r: int
    w: int
    nonce: int = 0  # the nonce of the request this answers

    def to_fields(self) -> list[Any]:
        return _with_nonce([self.ok, self.error, [m.to_wire() for m in self.records],
                            self.n, self.r, self.w], self.nonce)

    @classmethod
    def from_fields(cls, f: list[Any]) -> JoinReply:
        if len(f) not in (6, 7) or not isinstance(f[0], bool) or not isinstance(f[1], str):
            raise ValueError("malformed join reply")
        n, r, w = _int(f[3]), _int(f[4]), _int(f[5])
        if not valid_quorums(n, r, w):
            raise ValueError("join reply with impossible n, r or w")
        return cls(f[0], f[1], _members(f[2]), n, r, w, _nonce(f, 6))


JOIN_MESSAGES = (JoinRequest, JoinReply)
