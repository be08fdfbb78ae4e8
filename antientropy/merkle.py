"""A Merkle tree over one token range, kept as sums of per-key hashes.

Job: summarise every key a replica holds in a token range ``(start, end]`` so that two
replicas find the keys on which they differ by exchanging a few hashes rather than the
keys. The tree has a fixed shape, the same on every replica of the range: ``LEAVES``
buckets of equal token width, grouped ``FANOUT`` at a time under ``FANOUT`` middle
nodes, under one root (levels 0, 1, 2).

Invariants:

- ``key_hash(key, versions)`` depends only on the key and on what a replica would send
  for it (context, siblings by dot, values, expiry): never on sibling order, the local
  actor, or which replica computes it. Equal states hash equal on every replica.
- Every node's hash is the sum modulo 2**64 of the hashes of the keys below it (a leaf:
  of the keys whose token falls in its bucket). Because a sum needs no neighbours, a
  write costs O(1) per level: ``apply(token, old_hash, new_hash)`` adds the difference
  to one leaf, one middle node and the root; nothing is recomputed lazily. A sum of
  64-bit hashes of distinct (key, state) pairs collides only by accident (about 2**-64
  per comparison); nothing here defends against a peer that chooses hashes to collide.
- Absent keys count 0, so an empty bucket hashes 0 on every replica and a replica that
  lost a key sees that bucket differ.
- Build order: a tree rebuilt from the store is ``ready`` only after a scan of its whole
  range. While building, the scan position (token order from ``start``, then key bytes)
  decides whether a write is applied now (already scanned) or left to the scan.
"""

from __future__ import annotations

from array import array
from hashlib import blake2b

import msgpack

from storage.versions import Actor, Sibling, Versions

FANOUT = 16
LEAF_LEVEL = 2
LEAVES: int = FANOUT**LEAF_LEVEL
MASK = (1 << 64) - 1
TOKEN_SPACE = 1 << 64


def _dot_order(s: Sibling) -> tuple[Actor, int]:
    return (s.actor, s.counter)


# One packer for the process: building one per call costs as much as the packing.
_PACKER = msgpack.Packer(use_bin_type=True)


def key_hash(key: bytes, versions: Versions | None) -> int:
    """A 64-bit hash of one key's replicated state; 0 for an absent key.

    On every write path (old and new state), so kept lean: tuples, sorting only when
    there is more than one entry.
    """
    if versions is None:
        return 0
    ctx = versions.context
    vector = ctx.vector
    sibs = versions.siblings
    if len(sibs) > 1:
        sibs = tuple(sorted(sibs, key=_dot_order))
    doc = (
        key,
        sorted(vector.items()) if len(vector) > 1 else tuple(vector.items()),
        sorted(ctx.cloud) if ctx.cloud else (),
        [(s.actor, s.counter, s.value, s.content_type, s.timestamp_ms, s.expires_at_ms)
         for s in sibs],
    )
    digest = blake2b(_PACKER.pack(doc), digest_size=8).digest()
    # Never 0, so a present key always moves its bucket away from the empty value.
    return int.from_bytes(digest, "big") or 1


class RangeTree:
    """The hash tree of one token range ``(start, end]`` (``start == end``: the ring)."""

    __slots__ = ("start", "end", "size", "leaves", "mids", "root", "ready", "cursor")

    def __init__(self, start: int, end: int) -> None:
        self.start = start
        self.end = end
        self.size = (end - start) % TOKEN_SPACE or TOKEN_SPACE
        self.leaves = array("Q", bytes(8 * LEAVES))
        self.mids = array("Q", bytes(8 * FANOUT))
        self.root = 0
        self.ready = False
        # While building: the scan position of the last key scanned, or None.
        self.cursor: tuple[int, bytes] | None = None

    @property
    def range(self) -> tuple[int, int]:
        return (self.start, self.end)

    def offset(self, token: int) -> int:
        """Position of ``token`` in the range: 0 for ``start + 1``."""
        return (token - self.start - 1) % TOKEN_SPACE

    def contains(self, token: int) -> bool:
        return self.offset(token) < self.size

    def leaf_of(self, token: int) -> int:
        return self.offset(token) * LEAVES // self.size

    def leaf_bounds(self, leaf: int) -> tuple[int, int] | None:
        """The token range ``(lo, hi]`` of one leaf, or None when it holds no token."""
        a = -(-leaf * self.size // LEAVES)
        b = -(-(leaf + 1) * self.size // LEAVES)
        if a == b:
            return None
        return ((self.start + a) % TOKEN_SPACE, (self.start + b) % TOKEN_SPACE)

    def scanned(self, token: int, key: bytes) -> bool:
        """True when a build scan has passed this key (always, once ready)."""
        if self.ready:
            return True
        if self.cursor is None:
            return False
        return (self.offset(token), key) <= self.cursor

    def apply(self, token: int, delta: int) -> None:
        """Add ``delta`` (new hash minus old, modulo 2**64) to the key's path."""
        if not delta:
            return
        leaf = self.leaf_of(token)
        self.leaves[leaf] = (self.leaves[leaf] + delta) & MASK
        mid = leaf // FANOUT
        self.mids[mid] = (self.mids[mid] + delta) & MASK
        self.root = (self.root + delta) & MASK

    def node_hash(self, level: int, index: int) -> int:
        if level == 0:
            return self.root
        if level == 1:
            return self.mids[index]
        return self.leaves[index]

    def children(self, level: int, index: int) -> list[tuple[int, int]]:
        """``(index, hash)`` of the children of a node above the leaves."""
        row = self.mids if level == 0 else self.leaves
        first = index * FANOUT
        return [(i, row[i]) for i in range(first, first + FANOUT)]

    def reset(self) -> None:
        """Forget everything and start a fresh build."""
        self.leaves = array("Q", bytes(8 * LEAVES))
        self.mids = array("Q", bytes(8 * FANOUT))
        self.root = 0
        self.ready = False
        self.cursor = None


def valid_index(level: int, index: int) -> bool:
    return 0 <= level <= LEAF_LEVEL and 0 <= index < FANOUT**level


def diff_keys(mine: dict[bytes, int], theirs: dict[bytes, int]) -> tuple[list[bytes],
                                                                          list[bytes]]:
    """Keys to send (held here and differing or absent there) and keys to ask for.

    Both sorted, so an exchange is deterministic.
    """
    send = sorted(k for k, h in mine.items() if theirs.get(k) != h)
    want = sorted(k for k in theirs if k not in mine)
    return send, want
