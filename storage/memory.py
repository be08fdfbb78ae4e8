"""MemoryEngine: the in-memory engine for the simulation, tests, throw-away nodes and caches.

The durable layer is one ``SortedDict`` per table. "Durable" means what a simulated
crash keeps: ``crash_copy()`` returns a new engine holding exactly the batches whose
``commit`` has returned, and ``crash(lose_disk=True)`` returns an empty one.

Invariants:

- ``commit`` never touches the SortedDicts: it only marks the batch durable (see
  ``storage.engine``). The owning thread folds durable batches into the SortedDicts
  when it drops them from the overlay (``_absorb``). Hence the SortedDicts are only
  ever mutated by the owning thread, and a ``commit`` in a worker thread (the runtime
  with ``storage="memory"``) is as safe as with LMDB.
- The durable state is therefore "SortedDicts + the durable prefix of the sealed
  batches"; ``crash_copy`` folds that prefix in. Batches become durable strictly in
  seal order, so the durable batches are always a prefix of the sealed list.
- Deterministic: no hashing of str, no clocks, iteration in key order.

Memory bound (``MemoryEngine(max_memory=BYTES)``; ``None``, the default, is unbounded
and behaves exactly as an engine without this feature): the engine is then a cache with
least-recently-used eviction, like Riak's memory backend (``max_memory``, there per
vnode; here per node) or Redis's ``maxmemory`` with ``allkeys-lru``.

- Accounting: only the durable ``"data"`` table counts. One entry costs
  ``len(key) + len(value) + ENTRY_OVERHEAD`` bytes; ``ENTRY_OVERHEAD`` (256) is about
  what CPython 3.11 on 64 bits spends per entry beyond the two byte strings (the
  SortedDict's dict slot and list slot, two bytes headers, the LRU order's node and the
  size it records: 220 to 280 bytes measured with tracemalloc, by table fill). Writes
  still in the overlay (staged, or sealed and not yet folded in) are not counted: they
  are bounded by the group commit, not by this engine. ``memory_used`` is the sum.
- Recency: one ``OrderedDict`` (data key -> accounted size), least recent first, so a
  use and an eviction are O(1). A use is a ``get`` that finds the key in the durable
  table, and a write: a write counts when its batch is folded in (the owning thread's
  first engine call after its commit), so within one group-commit window the order of
  writes against reads is approximate. ``scan`` and ``count`` are NOT uses: anti-entropy
  builds its Merkle trees and range transfers move data by scanning, and if a scan
  counted, every tree build would make the whole table "recent" and erase the order
  the clients' reads made. (A key read one at a time, by any part of the node, is a use:
  anti-entropy pushing a key that differs reads it with ``get``.)
- Eviction: when a fold leaves ``memory_used`` above the bound, least recently used
  ``"data"`` entries are dropped until it is not. The bound therefore holds after every
  fold, with one exception: an entry whose key has a newer write still in the overlay
  is never evicted (dropping its older durable value would be invisible to reads, and
  a listener told of it would drop the newer state instead); it goes to the recent end
  and is counted again when that write folds in. Eviction never runs from ``commit``
  itself (which may be in the committer thread); ``abandon`` folds and evicts before
  it drops its batch, so none is reported while its caller undoes that batch.
- Only ``"data"`` is evicted. ``"hints"`` hold writes meant for another node (a hint
  lost is that node's write lost, not a cache miss) and ``"meta"`` holds the node's
  identity, ring and progress; neither is evicted nor counted.
- An entry larger than the whole bound by itself is never kept: its batch's fold drops
  it (and any older value of its key, which the write replaced) at once, counted and
  reported as an eviction, without displacing anything else. Until that fold it is
  readable from the overlay like any write. A node's configuration should keep the
  bound at least ``MIN_MAX_MEMORY``, so that every record the store accepts fits.
- Visibility: evictions are counted in ``evictions`` and each is reported to
  ``on_evict(data_key, value)`` (when set) on the owning thread, after the engine's
  state is consistent (the callback may read the engine), with the value reads found
  until then. To every reader an evicted key is gone, exactly as if deleted: whoever
  derives state from the data table (``KeyStore``'s change listener, which keeps
  anti-entropy's Merkle trees) must treat the report as a delete of that value.

What eviction on one replica means for reads (the engine is per node; replicas of a
key evict independently):

- An evicted key reads as missing *from that replica*; the replica answers a read for
  it like a replica that never had the key.
- A read asks every target of the key (its N replicas, or fallbacks standing in) and
  answers with the merge of the first R replies. So with
  R=2 the key is still found if one of the two replies comes from a replica that kept
  it; it reads as missing only when each of the R replies that decided the answer comes
  from a replica that evicted it (with R=1, one evicting replica answering first is
  enough). A read answered "not found" is a cache miss, not an error. Every target
  that holds the key counts the read as a use, so replicas' recency orders tend to
  agree; their contents still differ with what each was sent and how much it holds.
- Read repair then sends the merged state to every replica that answered with less,
  the evicting one included: the key is written back there (a write, so it becomes that
  replica's most recently used entry, displacing another).
- Anti-entropy sees the evicting replica's tree lose the key (once its store reports
  evictions to the change listener, as above), so the next exchange with
  a replica that kept it copies it back (again as a most recent write). A cache bucket
  should therefore run with a long anti-entropy interval, or accept that exchanges
  refill what was evicted on only some replicas (and push out other keys to do so).
  Keys evicted on every replica, and held in no hint, are gone for good.
- Evicting forgets state, like a disk loss for that key: a write or a delete held only
  by replicas that evicted it is lost, and an older version another replica kept can
  be read (and repaired back) in its place; a deleted value can come back that way.
  Causality stays safe: the record's local actor goes with it, so the next write this
  node coordinates for the key takes a fresh epoch (rule 5 of ``storage.versions``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from itertools import islice
from typing import Final

from sortedcontainers import SortedDict

from storage.engine import TABLES, Batch, OverlayEngine, Table
from storage.limits import MAX_RECORD_BYTES

__all__ = ["ENTRY_OVERHEAD", "MIN_MAX_MEMORY", "EvictionCallback", "MemoryEngine"]

# Durable items copied per step of a scan: a scan never holds an iterator over a
# SortedDict across a ``yield`` (the owning thread may fold a batch in meanwhile).
_SCAN_CHUNK = 256

# Bytes accounted per "data" entry on top of its key and value (see module docstring).
ENTRY_OVERHEAD: Final = 256
# The smallest bound a node should be configured with: room for two of the largest
# records the store accepts (`storage.limits`), so a record never exceeds the bound alone.
MIN_MAX_MEMORY: Final = 2 * MAX_RECORD_BYTES

# Told of each evicted "data" entry: (data key, the value reads found until then).
EvictionCallback = Callable[[bytes, bytes], None]


class MemoryEngine(OverlayEngine):
    """``max_memory``: the bound in bytes on the "data" table, or None for no bound."""

    def __init__(self, max_memory: int | None = None) -> None:
        super().__init__()
        if max_memory is not None and (
            not isinstance(max_memory, int) or isinstance(max_memory, bool) or max_memory < 1
        ):
            raise ValueError(f"max_memory must be a positive integer or None, got {max_memory!r}")
        self._tables: dict[Table, SortedDict] = {t: SortedDict() for t in TABLES}
        self._max_memory = max_memory
        # data key -> accounted size, least recently used first; None when unbounded.
        self._lru: OrderedDict[bytes, int] | None = (
            None if max_memory is None else OrderedDict())
        self._used = 0
        # Entries over the whole bound met by the fold in progress: key -> value.
        self._dropped: dict[bytes, bytes] = {}
        self.evictions = 0
        self.on_evict: EvictionCallback | None = None

    @property
    def max_memory(self) -> int | None:
        return self._max_memory

    @property
    def memory_used(self) -> int:
        """Bytes accounted for the durable "data" table (0 when unbounded)."""
        return self._used

    # -- durable layer hooks -------------------------------------------------------------

    def _durable_get(self, table: Table, key: bytes) -> bytes | None:
        value: bytes | None = self._tables[table].get(key)
        if value is not None and table == "data" and self._lru is not None:
            self._lru.move_to_end(key)  # a read is a use; a scan never comes here
        return value

    def _durable_scan(
        self, table: Table, start: bytes, end: bytes | None
    ) -> Iterator[tuple[bytes, bytes]]:
        tree = self._tables[table]
        lower, inclusive = start, True
        while True:
            keys: list[bytes] = list(
                islice(
                    tree.irange(lower, end, inclusive=(inclusive, False)),
                    _SCAN_CHUNK,
                )
            )
            if not keys:
                return
            chunk = [(k, tree[k]) for k in keys]
            yield from chunk
            if len(keys) < _SCAN_CHUNK:
                return
            lower, inclusive = keys[-1], False

    def _durable_count(self, table: Table, keys: list[bytes]) -> tuple[int, int]:
        tree = self._tables[table]
        return len(tree), sum(1 for k in keys if k in tree)

    def _durable_write(self, batch: Batch) -> None:
        pass  # folded in by the owning thread in _absorb; see module docstring

    def _absorb(self, batch: Batch) -> None:
        lru = self._lru
        if lru is None:
            _apply(self._tables, batch)
            return
        tables = self._tables
        data = tables["data"]
        bound = self._max_memory
        assert bound is not None
        for (table, key), value in batch.items():
            if table != "data":
                if value is None:
                    tables[table].pop(key, None)
                else:
                    tables[table][key] = value
                continue
            old = lru.pop(key, None)
            if old is not None:
                self._used -= old
            self._dropped.pop(key, None)  # a later write replaces a dropped one
            if value is None:
                data.pop(key, None)
                continue
            size = len(key) + len(value) + ENTRY_OVERHEAD
            if size > bound:
                data.pop(key, None)  # never kept, and its key's older value is replaced
                self._dropped[key] = value
                continue
            data[key] = value
            lru[key] = size  # a write is a use: the most recent end
            self._used += size

    def _prune(self) -> None:
        sealed = self._sealed
        if not (sealed and sealed[0].durable):
            return
        super()._prune()
        if self._lru is not None:
            evicted = self._evict()
            if evicted:
                self._report(evicted)

    def abandon(self, batch: Batch) -> list[tuple[tuple[Table, bytes], bytes | None]]:
        # Fold (and evict) what is already committed first: the caller then reads back
        # the keys the batch wrote to undo what it derived from them, and an eviction
        # reported in the middle of that undo would meet a state half undone. After
        # this only a batch committed later can fold (the abandoned one was the next
        # to commit), and its driver commits it after the undo.
        self._prune()
        return super().abandon(batch)

    # -- eviction ------------------------------------------------------------------------

    def _shadowed(self, key: bytes) -> bool:
        """True when the overlay holds a newer write (or delete) of a "data" key."""
        wkey: tuple[Table, bytes] = ("data", key)
        return wkey in self._staged or any(wkey in b._writes for b in self._sealed)

    def _evict(self) -> list[tuple[bytes, bytes]]:
        """Drop what the last fold left over the bound; the evicted (key, value) pairs.

        Mutates only this engine's own tables; the caller reports afterwards, so a
        callback that reads the engine finds a consistent state.
        """
        lru = self._lru
        bound = self._max_memory
        assert lru is not None and bound is not None
        evicted: list[tuple[bytes, bytes]] = []
        for key, value in self._dropped.items():
            if not self._shadowed(key):  # else a newer write hides it: nothing to tell
                evicted.append((key, value))
        self._dropped = {}
        if self._used > bound:
            data = self._tables["data"]
            kept: list[tuple[bytes, int]] = []
            while self._used > bound and lru:
                key, size = lru.popitem(last=False)
                if self._shadowed(key):
                    kept.append((key, size))  # its newer write folds in later
                    continue
                evicted.append((key, data.pop(key)))
                self._used -= size
            for key, size in kept:
                lru[key] = size
        self.evictions += len(evicted)
        return evicted

    def _report(self, evicted: list[tuple[bytes, bytes]]) -> None:
        callback = self.on_evict
        if callback is not None:
            for key, value in evicted:
                callback(key, value)

    # -- simulation helpers ------------------------------------------------------------

    def crash_copy(self) -> MemoryEngine:
        """A new engine holding only what was committed; ``self`` is left untouched.

        Staged writes and sealed batches whose commit had not returned are lost. The
        copy keeps the bound and the recency order (a restarted node rebuilds whatever
        it derives from the data, so evictions made while folding are not reported).
        """
        survivor = MemoryEngine(self._max_memory)
        survivor._tables = {t: self._tables[t].copy() for t in TABLES}
        if self._lru is not None:
            survivor._lru = self._lru.copy()
            survivor._used = self._used
        for batch in self._sealed:
            if not batch.durable:
                break
            survivor._absorb(batch)
        if survivor._lru is not None:
            survivor._evict()
        return survivor

    def crash(self, lose_disk: bool) -> MemoryEngine:
        """Simulate a crash: close ``self`` and return the engine the restarted node gets.

        ``lose_disk=False``: what was committed (``crash_copy``); ``True``: a fresh empty
        engine, as after a disk replacement.
        """
        survivor = MemoryEngine(self._max_memory) if lose_disk else self.crash_copy()
        self.close()
        return survivor

    def _close_durable(self) -> None:
        self._tables = {t: SortedDict() for t in TABLES}
        if self._lru is not None:
            self._lru = OrderedDict()
        self._used = 0
        self._dropped = {}


def _apply(tables: dict[Table, SortedDict], batch: Batch) -> None:
    for (table, key), value in batch.items():
        tree = tables[table]
        if value is None:
            tree.pop(key, None)
        else:
            tree[key] = value
