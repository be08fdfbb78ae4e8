"""Which token ranges a node replicates, with whom, and how to scan one in tree order.

Job: turn a ring into the ranges anti-entropy keeps a tree for. A range is one vnode's
arc ``(previous token, token]``: every key in it has the same preference list, so the
range has one replica set and two replicas of it build identical trees. (The merged
ranges of `Ring.ranges_of` mix arcs with different replica sets, which two peers could
not compare.) `scan_ordered` reads a range from a `KeyStore` in the order the tree's
build cursor uses: by offset from the range start, then key, resuming after a position.

Invariant: two nodes with equal rings compute equal ranges, so a range is named on the
wire by its ``(start, end)`` alone; a range one side does not have is skipped, never
compared against a different one.
"""

from __future__ import annotations

from collections.abc import Iterator

from antientropy.merkle import RangeTree
from ring.ring import Ring
from storage.keys import MAX_TOKEN
from storage.record import Record
from storage.store import KeyStore

Range = tuple[int, int]


def replica_ranges(ring: Ring, node: str, n: int) -> dict[Range, tuple[str, ...]]:
    """``{(start, end): the other replicas}`` for every arc ``node`` replicates."""
    tokens = sorted({t for ts in ring.token_map().values() for t in ts})
    out: dict[Range, tuple[str, ...]] = {}
    if node not in ring or not tokens:
        return out
    for i, token in enumerate(tokens):
        start = tokens[i - 1] if i else tokens[-1]
        replicas = ring.preference_list(token, n)
        if node in replicas:
            out[(start, token)] = tuple(p for p in replicas if p != node)
    return out


def _pieces(start: int, end: int) -> list[Range]:
    """Non-wrapping pieces of ``(start, end]`` in offset order (scan_range's form)."""
    if start < end:
        return [(start, end)]
    pieces: list[Range] = []
    if start < MAX_TOKEN:
        pieces.append((start, MAX_TOKEN))
    pieces.append((MAX_TOKEN, end))  # tokens 0..end; (MAX, MAX) is the whole ring
    return pieces


def scan_ordered(store: KeyStore, tree: RangeTree, start: int, end: int,
                 after: tuple[int, bytes] | None,
                 limit: int) -> Iterator[tuple[int, bytes, Record]]:
    """Up to ``limit`` records of ``(start, end]`` in ``tree`` offset order.

    ``after`` is a position (offset in ``tree``, key) already passed.
    """
    left = limit
    for lo, hi in _pieces(start, end):
        resume: bytes | None = None
        if after is not None:
            first = (lo + 1 - tree.start - 1) % (1 << 64)
            last = (hi - tree.start - 1) % (1 << 64)
            if after[0] > last:
                continue
            if after[0] >= first:
                token = (tree.start + 1 + after[0]) % (1 << 64)
                resume = token.to_bytes(8, "big") + after[1]
        while left > 0:
            want = min(left, 512)
            page = store.scan_range(lo, hi, resume, want)
            yield from page
            left -= len(page)
            if len(page) < want:
                break
            last_token, last_key, _ = page[-1]
            resume = last_token.to_bytes(8, "big") + last_key
        if left <= 0:
            return
