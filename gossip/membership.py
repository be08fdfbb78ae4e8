"""The membership table: who is in the cluster, where, with which tokens.

Each member owns its record and is the only one to bump its `version` (the two
exceptions: a seed writes the first record of a node that joins through it, and an
operator's removal writes `left` for a dead node). A record carries its owner's public
key and a signature by its owner, or by the member that wrote it for the owner
(`author`); `gossip.signing` says which records a node admits. Records merge by
version, highest wins, so any exchange order converges; `gossip.gossiper` spreads them.
`Membership` itself checks no signature: it holds what the gossiper (or the node's own
disk) admitted.

`status` is the membership status the cluster agreed on (`joining`, `up`, `leaving`,
`left`); whether a member is reachable right now is a separate, local judgement made by
the phi-accrual detector (`gossip.phi`), and the node's `view_status` combines the two
into what `GET /cluster` shows (`down` when an `up` member is not heard from).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeGuard

from ring.allocation import MAX_VNODES

# The node-id rule of the contract, in its one home: configuration, member records and
# the transport's handshake (which is handed `valid_node_id`) all check ids with it.
NODE_ID_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def valid_node_id(node_id: object) -> TypeGuard[str]:
    return type(node_id) is str and NODE_ID_RE.fullmatch(node_id) is not None


# Versions, heartbeat counters and generations are below 2^62: a node draws its
# generation with 62 random bits, and a bound that far under msgpack's uint64 leaves room
# for every `+ 1` a node makes (a refutation, a status change) without overflow. A
# version reaches it only by a forged record (one bump a millisecond takes 146 million
# years), so anything at or over it is refused where it is decoded.
COUNTER_LIMIT = 1 << 62
# A node refutes no record of itself at or over this version (only a forgery gets
# there): the 2^32 versions left under COUNTER_LIMIT are its room to refute one under it
# and change status after, so its own record never passes what peers decode.
REFUTE_LIMIT = COUNTER_LIMIT - (1 << 32)
# Tokens are ring positions (64-bit), at most MAX_VNODES of them a member.
TOKEN_LIMIT = 1 << 64
MAX_TOKENS = MAX_VNODES
# An Ed25519 public key and signature, raw. A record saved before records were signed
# has neither (`key` and `sig` empty): it is a placeholder until a signed one arrives.
KEY_BYTES = 32
SIG_BYTES = 64
# An address is `host:port`: a DNS name (at most 253 characters) or an IPv6 literal.
MAX_ADDRESS = 260


def valid_counter(x: object) -> TypeGuard[int]:
    return type(x) is int and 0 <= x < COUNTER_LIMIT


def valid_address(addr: object) -> bool:
    if type(addr) is not str or not 3 <= len(addr) <= MAX_ADDRESS:
        return False
    host, _, port = addr.rpartition(":")
    return (bool(host) and host.isprintable() and not any(c.isspace() for c in host)
            and port.isascii() and port.isdigit() and len(port) <= 5 and int(port) <= 65535)


JOINING = "joining"
UP = "up"
DOWN = "down"
LEAVING = "leaving"
LEFT = "left"
STATUSES = (JOINING, UP, LEAVING, LEFT)


@dataclass(frozen=True, slots=True)
class Member:
    node_id: str
    http: str  # host:port clients use
    rpc: str  # host:port peers use
    tokens: tuple[int, ...]
    status: str
    version: int
    generation: int  # changes when the node's data dir is new
    key: bytes = b""  # the owner's Ed25519 public key
    author: str = ""  # who signed it when not the owner: a seed or a remover
    sig: bytes = b""  # by the owner's key, or the author's (gossip.signing)

    @property
    def signer(self) -> str:
        return self.author or self.node_id

    def to_wire(self) -> list[object]:
        # `from_wire` checks every field (ids, `host:port` addresses, status, at most
        # MAX_TOKENS tokens, counters under COUNTER_LIMIT, key and signature sizes): a
        # record from a peer or a disk holds nothing a node cannot act on. Whether the
        # signature is good is checked where records are admitted, not here.
        return [self.node_id, self.http, self.rpc, list(self.tokens), self.status,
                self.version, self.generation, self.key, self.author, self.sig]

    @staticmethod
    def from_wire(doc: object) -> Member:
        if not (isinstance(doc, list) and len(doc) == 10):
            raise ValueError("malformed member record")
        node_id, http, rpc, tokens, status, version, generation, key, author, sig = doc
        if not (type(key) is bytes and len(key) in (0, KEY_BYTES)
                and type(sig) is bytes and len(sig) in (0, SIG_BYTES)):
            raise ValueError("member record with a malformed key or signature")
        if author != "" and not (valid_node_id(author) and author != node_id):
            raise ValueError("member record with a malformed author")
        if not valid_node_id(node_id):
            raise ValueError("member record with a malformed node id")
        if not (valid_address(http) and valid_address(rpc)):
            raise ValueError("member record with a malformed address")
        if type(status) is not str or status not in STATUSES:
            raise ValueError("member record with an unknown status")
        if not (valid_counter(version) and valid_counter(generation)):
            raise ValueError("member record version or generation out of range")
        if type(tokens) is not list or len(tokens) > MAX_TOKENS or not all(
                type(t) is int and 0 <= t < TOKEN_LIMIT for t in tokens):
            raise ValueError("malformed member tokens")
        return Member(node_id, http, rpc, tuple(tokens), status, version, generation,
                      key, author, sig)


class Membership:
    """Member records by node id, merged by version."""

    def __init__(self, members: Iterable[Member] = ()) -> None:
        self._members: dict[str, Member] = {}
        for m in members:
            self.merge_one(m)

    def get(self, node_id: str) -> Member | None:
        return self._members.get(node_id)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._members

    def members(self) -> list[Member]:
        return [self._members[k] for k in sorted(self._members)]

    def ids(self) -> list[str]:
        return sorted(self._members)

    def merge_one(self, member: Member) -> bool:
        current = self._members.get(member.node_id)
        if current is not None and current.version >= member.version:
            return False
        self._members[member.node_id] = member
        return True

    def merge(self, members: Iterable[Member]) -> bool:
        changed = False
        for m in members:
            changed |= self.merge_one(m)
        return changed

    def ring_tokens(self, statuses: Iterable[str] = (JOINING, UP, LEAVING)
                    ) -> dict[str, tuple[int, ...]]:
        """Tokens of the members with one of `statuses` (by default all but `left`)."""
        wanted = frozenset(statuses)
        return {k: m.tokens for k, m in sorted(self._members.items())
                if m.status in wanted and m.tokens}
