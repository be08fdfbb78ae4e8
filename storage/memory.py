"""MemoryEngine: the in-memory engine for the simulation, tests and throw-away nodes.

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
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice

from sortedcontainers import SortedDict

from storage.engine import TABLES, Batch, OverlayEngine, Table

__all__ = ["MemoryEngine"]

# Durable items copied per step of a scan: a scan never holds an iterator over a
# SortedDict across a ``yield`` (the owning thread may fold a batch in meanwhile).
_SCAN_CHUNK = 256


class MemoryEngine(OverlayEngine):
    def __init__(self) -> None:
        super().__init__()
        self._tables: dict[Table, SortedDict] = {t: SortedDict() for t in TABLES}

    def _durable_get(self, table: Table, key: bytes) -> bytes | None:
        value: bytes | None = self._tables[table].get(key)
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
        _apply(self._tables, batch)

    # -- simulation helpers ------------------------------------------------------------

    def crash_copy(self) -> MemoryEngine:
        """A new engine holding only what was committed; ``self`` is left untouched.

        Staged writes and sealed batches whose commit had not returned are lost.
        """
        survivor = MemoryEngine()
        survivor._tables = {t: self._tables[t].copy() for t in TABLES}
        for batch in self._sealed:
            if not batch.durable:
                break
            _apply(survivor._tables, batch)
        return survivor

    def crash(self, lose_disk: bool) -> MemoryEngine:
        """Simulate a crash: close ``self`` and return the engine the restarted node gets.

        ``lose_disk=False``: what was committed (``crash_copy``); ``True``: a fresh empty
        engine, as after a disk replacement.
        """
        survivor = MemoryEngine() if lose_disk else self.crash_copy()
        self.close()
        return survivor

    def _close_durable(self) -> None:
        self._tables = {t: SortedDict() for t in TABLES}


def _apply(tables: dict[Table, SortedDict], batch: Batch) -> None:
    for (table, key), value in batch.items():
        tree = tables[table]
        if value is None:
            tree.pop(key, None)
        else:
            tree[key] = value
