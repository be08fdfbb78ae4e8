"""Ring transitions: what a node must fetch when the ring it serves changes.

Membership statuses give two rings at any moment:

- the *current* ring (members `up` or `leaving`) answers reads and takes writes;
- the *pending* ring (members `joining` or `up`) is the ring the cluster is moving to.

They differ only while a node joins or leaves. A write goes to the current replicas of
its key and also to the pending replicas that are not current ones (`write_extras`), so
a range in transit misses no write: Cassandra's "pending ranges".

Each node remembers its *held* ring: the ring under which its local data is complete.
Whenever the pending ring gives it a range it did not replicate under the held ring, it
must fetch that range (`gains`) before it can count as holding the pending ring. That
one rule covers every transition:

- a joiner holds nothing, so it fetches every range it will own, then becomes `up`;
- when a node leaves, the nodes that inherit its ranges fetch them, and the leaver
  waits until they have before it becomes `left`;
- when a dead node is removed, the nodes that inherit its ranges fetch them from the
  surviving replicas;
- a node whose disk was wiped rejoins holding nothing and fetches everything again.

Adding a node only ever takes ranges away from others, so a join makes no other node
fetch anything.

Invariant: every function here is pure and deterministic for equal inputs, so every
node that sees the same membership computes the same transfers.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Mapping
from dataclasses import dataclass

import mmh3
import msgpack

from ring.ring import Ring
from ring.token import MAX_TOKEN

__all__ = ["Gain", "TokenSet", "fingerprint", "gains", "write_extras"]


@dataclass(frozen=True, slots=True)
class Gain:
    """Tokens ``(start, end]`` a node must fetch, and where to fetch them from.

    `sources` are the nodes that held the range before, best first: the replicas of the
    held ring, then those of the current ring (the only ones a joiner can name). The
    caller skips sources that are down, gone, or itself.
    """

    start: int
    end: int
    sources: tuple[str, ...]


def fingerprint(token_map: Mapping[str, tuple[int, ...]]) -> int:
    """A stable 64-bit name for a ring: equal on every node and in every process."""
    doc = [[node, sorted(token_map[node])] for node in sorted(token_map)]
    h: int = mmh3.hash64(msgpack.packb(doc), 0x72696E67)[0]
    return h & MAX_TOKEN


def _boundaries(*rings: Ring) -> list[int]:
    tokens: set[int] = set()
    for ring in rings:
        for node in ring.nodes:
            tokens.update(ring.tokens_of(node))
    return sorted(tokens)


def gains(node: str, held: Ring, target: Ring, current: Ring, n: int) -> list[Gain]:
    """The ranges `node` replicates in `target` but did not in `held`.

    Adjacent ranges with the same sources are merged. A range nobody held before (a
    brand-new cluster) has no sources and is left out: there is nothing to fetch.
    """
    if node not in target:
        return []
    points = _boundaries(held, target, current)
    out: list[Gain] = []
    for i, end in enumerate(points):
        start = points[i - 1] if i else points[-1]
        if node not in target.preference_list(end, n):
            continue
        before = held.preference_list(end, n)
        if node in before:
            continue
        sources: list[str] = [x for x in before if x != node]
        sources += [x for x in current.preference_list(end, n)
                    if x != node and x not in sources]
        if not sources:
            continue
        src = tuple(sources)
        if out and out[-1].end == start and out[-1].sources == src:
            out[-1] = Gain(out[-1].start, end, src)
        else:
            out.append(Gain(start, end, src))
    if len(out) > 1 and out[-1].end == out[0].start and out[-1].sources == out[0].sources:
        first = out.pop(0)
        out[-1] = Gain(out[-1].start, first.end, first.sources)
    return out


def write_extras(current: Ring, pending: Ring, token: int, n: int) -> list[str]:
    """Pending replicas of `token` that are not current ones: writes go to them too."""
    if pending is current:
        return []
    now = current.preference_list(token, n)
    return [x for x in pending.preference_list(token, n) if x not in now]


class TokenSet:
    """A set of tokens kept as sorted, disjoint, inclusive intervals.

    Records which parts of the ring a transfer has already fetched, so that a sync
    restarted under a slightly different ring does not fetch them again.
    """

    def __init__(self, intervals: list[tuple[int, int]] | None = None) -> None:
        self._lo: list[int] = []
        self._hi: list[int] = []
        for lo, hi in intervals or []:
            self._add_linear(lo, hi)

    def intervals(self) -> list[tuple[int, int]]:
        return list(zip(self._lo, self._hi, strict=True))

    def __len__(self) -> int:
        return len(self._lo)

    @staticmethod
    def _linear(start: int, end: int) -> list[tuple[int, int]]:
        """The ring range ``(start, end]`` as inclusive linear intervals."""
        if start == end:
            return [(0, MAX_TOKEN)]
        if start < end:
            return [(start + 1, end)]
        pieces = [(0, end)]
        if start < MAX_TOKEN:
            pieces.append((start + 1, MAX_TOKEN))
        return pieces

    def add(self, start: int, end: int) -> None:
        """Add the ring range ``(start, end]``."""
        for lo, hi in self._linear(start, end):
            self._add_linear(lo, hi)

    def _add_linear(self, lo: int, hi: int) -> None:
        # Merge with every interval that overlaps or touches [lo, hi].
        i = bisect_left(self._hi, lo - 1)
        j = bisect_right(self._lo, hi + 1)
        if i < j:
            lo = min(lo, self._lo[i])
            hi = max(hi, self._hi[j - 1])
        self._lo[i:j] = [lo]
        self._hi[i:j] = [hi]

    def missing(self, start: int, end: int) -> list[tuple[int, int]]:
        """The parts of ring range ``(start, end]`` not in the set, as ring ranges."""
        out: list[tuple[int, int]] = []
        for lo, hi in self._linear(start, end):
            cursor = lo
            i = bisect_left(self._hi, lo)
            while cursor <= hi:
                if i < len(self._lo) and self._lo[i] <= hi:
                    if self._lo[i] > cursor:
                        out.append((cursor, self._lo[i] - 1))
                    cursor = max(cursor, self._hi[i] + 1)
                    i += 1
                else:
                    out.append((cursor, hi))
                    break
        # Back to ring form: linear [a, b] is the ring range (a - 1, b); a == 0 wraps.
        return [((a - 1) % (MAX_TOKEN + 1), b) for a, b in out]
