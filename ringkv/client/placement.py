"""Where a key lives, computed by the client: its stored key, its token, its replicas.

Job
---
A ring-aware client (``Client(..., route_by_ring=True)``) sends each keyed request
first to a replica of its key. This module is the arithmetic for that, kept to the
facts of the wire format a node publishes, as the token-aware drivers of Cassandra
compute a partition's token themselves:

* `stored_key` -- the bytes a node stores (and places) a key under: the user key for a
  plain value of bucket ``default`` not starting with 0x00, else
  ``0x00 kind len(bucket) bucket key`` with kind ``k`` (value), ``c`` (counter) or
  ``s`` (set);
* `key_token` -- the first 64 bits of MurmurHash3 x64-128 (seed 0) of the stored key,
  unsigned;
* `RingMap` -- the token map of ``GET /ring``, checked, and the replicas of a key: the
  first `n` distinct owners from the first token ``>=`` the key's, wrapping round.

The client imports nothing else of ringkv, so these are its own statements of the
format; a test holds them equal to the node's (`storage.namespace`, `ring.token`,
`ring.Ring.preference_list`) over random keys and rings.

Invariants
----------
* Pure: no I/O, no clock.
* A map from a node is input like any answer: `RingMap.from_json` accepts only a
  well-formed document within the bounds below and raises ValueError on anything else,
  so a bad map leaves the client routing as before, never failing a request.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import mmh3

__all__ = ["MAX_MAP_OWNERS", "MAX_MAP_TOKENS", "RingMap", "key_token", "stored_key"]

MAX_MAP_OWNERS: Final = 10_000
MAX_MAP_TOKENS: Final = 4_000_000  # more vnodes than any node would accept a ring of
_MASK64: Final = (1 << 64) - 1
_KIND_BYTE: Final = {"kv": b"k", "counter": b"c", "set": b"s"}
_DEFAULT_BUCKET: Final = "default"


def key_token(stored: bytes) -> int:
    """The ring token of a stored key: unsigned 64-bit MurmurHash3 (x64-128, first half)."""
    return mmh3.hash64(stored, 0, True)[0] & _MASK64


def stored_key(bucket: str, kind: str, key: bytes) -> bytes:
    """The key as nodes store it; `bucket` and `key` are assumed checked by the caller
    (the request builders check them before they get here)."""
    if kind == "kv" and bucket == _DEFAULT_BUCKET and key[:1] != b"\x00":
        return key
    raw = bucket.encode("ascii")
    return b"\x00" + _KIND_BYTE[kind] + bytes([len(raw)]) + raw + key


@dataclass(frozen=True, slots=True)
class RingMap:
    """A node's token map: token ``i`` is owned by ``owners[owner_of[i]]``."""

    n: int
    owners: tuple[str, ...]
    tokens: tuple[int, ...]
    owner_of: tuple[int, ...]

    @classmethod
    def from_json(cls, doc: object) -> RingMap:
        """The map of a ``GET /ring`` document; ValueError unless it is well formed."""
        if not isinstance(doc, Mapping):
            raise ValueError("the ring map is not a JSON object")
        n, owners, tokens, owner_of = (doc.get(k) for k in ("n", "owners", "tokens",
                                                              "owner_of"))
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_MAP_OWNERS:
            raise ValueError("n must be an integer from 1")
        if (not isinstance(owners, list) or not 1 <= len(owners) <= MAX_MAP_OWNERS
                or not all(isinstance(o, str) and o for o in owners)
                or len(set(owners)) != len(owners)):
            raise ValueError("owners must be a list of distinct node ids")
        if (not isinstance(tokens, list) or not isinstance(owner_of, list)
                or not 1 <= len(tokens) <= MAX_MAP_TOKENS or len(owner_of) != len(tokens)):
            raise ValueError("tokens and owner_of must be lists of one length")
        parsed = tuple(_token(t) for t in tokens)
        if any(b < a for a, b in zip(parsed, parsed[1:], strict=False)):
            raise ValueError("tokens must not decrease")
        count = len(owners)
        if not all(_is_index(i, count) for i in owner_of):
            raise ValueError("owner_of must index owners")
        if len(set(owner_of)) != count:
            raise ValueError("every owner must hold a token")
        return cls(n, tuple(owners), parsed, tuple(owner_of))

    def replicas(self, stored: bytes) -> list[str]:
        """The key's preference list: its first `n` distinct owners clockwise."""
        tokens, owner_of, owners = self.tokens, self.owner_of, self.owners
        i = bisect_left(tokens, key_token(stored))
        total = len(tokens)
        want = min(self.n, len(owners))
        found: list[str] = []
        for step in range(total):  # a lap meets every owner
            owner = owners[owner_of[(i + step) % total]]
            if owner not in found:
                found.append(owner)
                if len(found) == want:
                    break
        return found


def _token(text: Any) -> int:
    if (not isinstance(text, str) or not 1 <= len(text) <= 20 or not text.isascii()
            or not text.isdigit()):
        raise ValueError("a token is a decimal string")
    value = int(text)
    if value > _MASK64:
        raise ValueError("a token is below 2**64")
    return value


def _is_index(value: object, count: int) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and 0 <= value < count
