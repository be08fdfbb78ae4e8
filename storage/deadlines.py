"""A queue of deadlines with at most one per key: when to look at a key again.

Expiry and tombstone compaction each keep one deadline per key (the key's next expiry,
or when its tombstones may be compacted). Rewriting a key moves its deadline; it must
not add another, or a hot key written with a TTL 5,000 times would hold 5,000 entries.

Shape: a heap of ``(at, seq, key)`` plus ``current: key -> (at, seq)``. Moving or
dropping a key's deadline only updates ``current``; the heap entry it replaces is
skipped when it surfaces (lazy deletion), and the heap is rebuilt from ``current``
whenever stale entries outnumber live ones.

Invariants:
- Each key has at most one live deadline: the heap entry whose ``seq`` equals
  ``current[key][1]``. `pop_due` returns only live entries, earliest first, ties in
  the order they were set (``seq``), so the order never depends on hashing.
- The heap holds at most ``2 * len(current) + SLACK`` entries: memory is O(keys).
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

# Stale entries tolerated before a rebuild is worth it, whatever the number of keys.
SLACK = 4


class DeadlineQueue(Generic[K]):
    __slots__ = ("_current", "_heap", "_seq")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, K]] = []
        self._current: dict[K, tuple[float, int]] = {}
        self._seq = 0

    def set(self, key: K, at: float) -> None:
        """Schedule `key` at `at`, replacing any deadline it had."""
        old = self._current.get(key)
        if old is not None and old[0] == at:
            return  # already scheduled then: keep its place among equal deadlines
        self._seq += 1
        self._current[key] = (at, self._seq)
        heapq.heappush(self._heap, (at, self._seq, key))
        self._maybe_rebuild()

    def discard(self, key: K) -> None:
        """Drop `key`'s deadline, if it has one."""
        if self._current.pop(key, None) is not None:
            self._maybe_rebuild()

    def get(self, key: K) -> float | None:
        entry = self._current.get(key)
        return None if entry is None else entry[0]

    def pop_due(self, now: float) -> K | None:
        """The key with the earliest deadline at or before `now` (unscheduled), or None."""
        heap, current = self._heap, self._current
        while heap:
            at, seq, key = heap[0]
            live = current.get(key)
            if live is None or live[1] != seq:
                heapq.heappop(heap)  # replaced or dropped since
                continue
            if at > now:
                return None
            heapq.heappop(heap)
            del current[key]
            return key
        return None

    def scheduled(self) -> int:
        """Keys with a deadline."""
        return len(self._current)

    def __len__(self) -> int:
        """Heap entries held, stale ones included (what the queue costs in memory)."""
        return len(self._heap)

    def _maybe_rebuild(self) -> None:
        if len(self._heap) > 2 * len(self._current) + SLACK:
            self._heap = [(at, seq, key) for key, (at, seq) in self._current.items()]
            heapq.heapify(self._heap)
