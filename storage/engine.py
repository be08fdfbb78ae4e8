"""The storage engine contract and the write overlay every engine shares.

An engine stores three ordered byte-keyed tables (``"data"``, ``"hints"``, ``"meta"``).
Writes are *staged* in memory and are visible to reads at once; the shell later *seals*
whatever is staged into a :class:`Batch` and *commits* it (one transaction, one sync).
This is group commit: a replica acknowledges a write only after the batch holding it is
committed, while the event loop keeps staging the next batch.

Layers, newest first, that every read merges::

    staged        dict, owned by the owning thread, mutated by put/delete
    sealed[-1]    newest sealed batch  (immutable)
    ...
    sealed[0]     oldest sealed batch not yet dropped from the overlay
    durable       the engine's own storage (LMDB, or dicts for MemoryEngine)

A key's value is taken from the newest layer that mentions it; a delete (``None``)
hides every older layer. ``OverlayEngine`` implements all of this once; an engine
only provides the durable part (``_durable_get``, ``_durable_scan``, ``_durable_count``,
``_durable_write``, optionally ``_absorb``).

Threading rules (the only ones; everything else is single-threaded):

- One *owning* thread calls ``get``, ``put``, ``delete``, ``scan`` (and iterates the
  iterators it returns), ``count``, ``has_staged``, ``seal`` and ``close``.
- ``commit`` may run in one other thread (the committer) concurrently with any of the
  owning thread's calls except ``close``. At most one ``commit`` runs at a time, and
  batches are committed in seal order: committing out of order, twice, or a batch of
  another engine raises ``ValueError``. A ``commit`` that raises may be retried.
- A ``commit`` that cannot fit its batch (a full database map or disk) raises
  ``StorageFullError``. The owning thread may then, with no commit running, ``grow``
  the engine and retry, or ``abandon`` the batch: its writes leave the overlay as if
  never staged (reads fall back to older layers) and the next batch commits in its
  place. Nothing else is lost: later staged writes stay staged.

How that is safe without a lock (``storage`` may not import ``threading``):

- The committer never touches the overlay's containers. ``commit`` does the durable
  write (``_durable_write``; for LMDB one synced write transaction), and only after it
  returns sets ``batch.durable = True`` (a single attribute store, atomic under the
  GIL). The owning thread drops durable batches from the head of ``sealed`` itself
  (``_prune``, run at the start of every read and seal), after calling ``_absorb``.
- So while a batch is in ``sealed`` its writes are either not yet durable or already
  durable with exactly the same values: a read that races a commit finds the same value
  in the overlay or in the durable layer. Reads consult the overlay *before* the
  durable layer, and a batch leaves the overlay only after its durable write is visible
  to every read that starts later.
- ``get`` and ``count`` read the overlay, then one durable state. That state holds
  every batch already pruned, plus possibly some batches still in the overlay they
  read (whose overlay values win, and equal the durable ones): so the merged view is
  exactly "all writes staged so far". (No new batch can be sealed meanwhile: only the
  owning thread seals, and it is busy in this call.)

Scan semantics: ``scan`` snapshots the overlay when it is *called* (not on first
``next``). The durable part is read lazily in chunks, each in its own short read
transaction, so an iterator never pins an LMDB snapshot. Keys already in the overlay
snapshot yield their value as of the call; other keys yield the durable value when their
chunk is read, so a long scan may show a key's value from a batch committed during the
scan (every yielded value is one the key held at or after the call). Keys come out in
strictly increasing byte order, each once, deletes hidden.
"""

from __future__ import annotations

import enum
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from typing import Final, Literal, Protocol

__all__ = [
    "MAX_KEY_SIZE",
    "TABLES",
    "Batch",
    "Engine",
    "EngineClosedError",
    "OverlayEngine",
    "StorageFullError",
    "Table",
]

Table = Literal["data", "hints", "meta"]
TABLES: Final[tuple[Table, ...]] = ("data", "hints", "meta")
# Engine keys are 1..MAX_KEY_SIZE bytes (user keys are at most 1024; see storage.keys).
MAX_KEY_SIZE: Final = 4096

WriteKey = tuple[Table, bytes]


class _Missing(enum.Enum):
    MISSING = 0


_MISSING: Final = _Missing.MISSING


class EngineClosedError(RuntimeError):
    """An engine was used after ``close`` (or after a simulated crash)."""


class StorageFullError(OSError):
    """A batch did not fit: the database map or the disk is full. The batch may be
    retried (after ``grow``) or abandoned; the engine stays usable either way."""


class Batch:
    """A sealed, immutable set of writes: ``(table, key) -> value``, ``None`` = delete.

    Iteration order is the order in which each ``(table, key)`` was first staged; a key
    staged twice appears once, with its last value. ``seq`` numbers batches 1, 2, ... in
    seal order per engine; ``durable`` becomes true once ``commit`` has returned.
    """

    __slots__ = ("_index", "_owner", "_writes", "durable", "seq")

    def __init__(self, owner: object, seq: int, writes: dict[WriteKey, bytes | None]) -> None:
        self._owner = owner
        self.seq = seq
        self._writes = writes
        self._index: dict[Table, list[bytes]] = {}
        self.durable = False

    def __len__(self) -> int:
        return len(self._writes)

    def __bool__(self) -> bool:
        return True  # an empty batch is still a batch to commit

    def items(self) -> Iterator[tuple[WriteKey, bytes | None]]:
        return iter(self._writes.items())

    def get(self, table: Table, key: bytes) -> bytes | None:
        """The batch's value for a key (``None`` for a delete or for no write)."""
        return self._writes.get((table, key))

    def sorted_keys(self, table: Table) -> list[bytes]:
        """This batch's keys of one table in byte order (built once, then cached)."""
        keys = self._index.get(table)
        if keys is None:
            keys = sorted(k for (t, k) in self._writes if t == table)
            self._index[table] = keys
        return keys

    def __repr__(self) -> str:
        return f"Batch(seq={self.seq}, writes={len(self._writes)}, durable={self.durable})"


class Engine(Protocol):
    """What the node and the shell need from storage. See the module docstring."""

    def get(self, table: Table, key: bytes) -> bytes | None: ...

    def put(self, table: Table, key: bytes, value: bytes) -> None: ...

    def delete(self, table: Table, key: bytes) -> None: ...

    def scan(
        self, table: Table, start: bytes, end: bytes | None
    ) -> Iterator[tuple[bytes, bytes]]: ...

    def count(self, table: Table) -> int: ...

    def has_staged(self) -> bool: ...

    def seal(self) -> Batch: ...

    def commit(self, batch: Batch) -> None: ...

    def grow(self) -> bool: ...

    def abandon(self, batch: Batch) -> list[tuple[WriteKey, bytes | None]]: ...

    def close(self) -> None: ...


def _range(keys: list[bytes], start: bytes, end: bytes | None) -> list[bytes]:
    lo = bisect_left(keys, start)
    hi = len(keys) if end is None else bisect_left(keys, end, lo)
    return keys[lo:hi]


def _merge(
    overlay: list[tuple[bytes, bytes | None]], durable: Iterable[tuple[bytes, bytes]]
) -> Iterator[tuple[bytes, bytes]]:
    """Merge a sorted overlay (``None`` = deleted) over a sorted durable stream."""
    i, n = 0, len(overlay)
    for dkey, dvalue in durable:
        while i < n and overlay[i][0] < dkey:
            key, value = overlay[i]
            i += 1
            if value is not None:
                yield key, value
        if i < n and overlay[i][0] == dkey:
            value = overlay[i][1]
            i += 1
            if value is not None:
                yield dkey, value
        else:
            yield dkey, dvalue
    for key, value in overlay[i:]:
        if value is not None:
            yield key, value


class OverlayEngine:
    """Staged writes and sealed batches over an abstract durable layer.

    Subclasses implement the ``_durable_*`` hooks; the public methods are final.
    """

    def __init__(self) -> None:
        self._staged: dict[WriteKey, bytes | None] = {}
        # (table, len(staged) when built, sorted keys): staged keys are never removed
        # (a delete stages None), so a length change means the cache is stale.
        self._staged_index: dict[Table, tuple[int, list[bytes]]] = {}
        self._sealed: list[Batch] = []
        self._next_seq = 1
        self._committed_seq = 0  # written only by commit (the committer thread)
        self._closed = False

    # -- durable layer hooks -----------------------------------------------------------

    def _durable_get(self, table: Table, key: bytes) -> bytes | None:
        raise NotImplementedError

    def _durable_scan(
        self, table: Table, start: bytes, end: bytes | None
    ) -> Iterator[tuple[bytes, bytes]]:
        """Durable items in ``[start, end)`` in byte order; lazy, chunked, no long pins."""
        raise NotImplementedError

    def _durable_count(self, table: Table, keys: list[bytes]) -> tuple[int, int]:
        """``(live durable keys, how many of keys are live)`` from one durable state."""
        raise NotImplementedError

    def _durable_write(self, batch: Batch) -> None:
        """Make ``batch`` durable atomically. Runs in the committer thread."""
        raise NotImplementedError

    def _absorb(self, batch: Batch) -> None:  # noqa: B027 - optional hook
        """Called in the owning thread when a durable batch leaves the overlay."""

    def _close_durable(self) -> None:  # noqa: B027 - optional hook
        pass

    # -- the contract --------------------------------------------------------------------

    def get(self, table: Table, key: bytes) -> bytes | None:
        """The newest value: staged, then sealed batches (newest first), then durable."""
        if self._closed:
            raise EngineClosedError("engine is closed")
        wkey = (table, key)
        value = self._staged.get(wkey, _MISSING)
        if value is not _MISSING:
            return value
        sealed = self._sealed
        if sealed:
            if sealed[0].durable:
                self._prune()
                sealed = self._sealed
            for batch in reversed(sealed):
                value = batch._writes.get(wkey, _MISSING)
                if value is not _MISSING:
                    return value
        return self._durable_get(table, key)

    def put(self, table: Table, key: bytes, value: bytes) -> None:
        if self._closed:
            raise EngineClosedError("engine is closed")
        if not 0 < len(key) <= MAX_KEY_SIZE:
            raise ValueError(f"engine keys are 1..{MAX_KEY_SIZE} bytes, got {len(key)}")
        self._staged[(table, key)] = bytes(value)

    def delete(self, table: Table, key: bytes) -> None:
        if self._closed:
            raise EngineClosedError("engine is closed")
        if not 0 < len(key) <= MAX_KEY_SIZE:
            raise ValueError(f"engine keys are 1..{MAX_KEY_SIZE} bytes, got {len(key)}")
        self._staged[(table, key)] = None

    def scan(self, table: Table, start: bytes, end: bytes | None) -> Iterator[tuple[bytes, bytes]]:
        """Live items with ``start <= key < end`` (``end=None``: no upper bound)."""
        if self._closed:
            raise EngineClosedError("engine is closed")
        self._prune()
        overlay = self._overlay_items(table, start, end)
        durable = self._durable_scan(table, start, end)
        if not overlay:
            return durable
        return _merge(overlay, durable)

    def count(self, table: Table) -> int:
        """Live keys in the merged view. O(overlay keys of the table) + O(1) durable."""
        if self._closed:
            raise EngineClosedError("engine is closed")
        self._prune()
        overlay = self._overlay_items(table, b"", None)
        total, shadowed = self._durable_count(table, [k for k, _ in overlay])
        return total - shadowed + sum(1 for _, v in overlay if v is not None)

    def has_staged(self) -> bool:
        return bool(self._staged)

    def seal(self) -> Batch:
        """Move the staged writes into a new batch (still visible to reads); return it.

        Sealing with nothing staged returns an empty batch; it must be committed like any
        other (its commit writes nothing) since batches are committed in seal order.
        """
        if self._closed:
            raise EngineClosedError("engine is closed")
        self._prune()
        batch = Batch(self, self._next_seq, self._staged)
        self._next_seq += 1
        self._staged = {}
        self._staged_index = {}
        if batch._writes:
            self._sealed.append(batch)
        return batch

    def commit(self, batch: Batch) -> None:
        """Make ``batch`` durable. May run in the committer thread; see module docstring."""
        if self._closed:
            raise EngineClosedError("engine is closed")
        if batch._owner is not self:
            raise ValueError("batch was sealed by another engine")
        if batch.seq != self._committed_seq + 1:
            raise ValueError(
                f"batches must be committed once each, in seal order: got {batch.seq}, "
                f"expected {self._committed_seq + 1}"
            )
        if batch._writes:
            self._durable_write(batch)
        self._committed_seq = batch.seq
        batch.durable = True  # publish last: the owning thread may now drop it

    def grow(self) -> bool:
        """Make room after a ``StorageFullError``; True if a retry may now fit.

        Owning thread only, with no commit running. Engines with a fixed capacity
        (and the memory engine, which never fills) return False.
        """
        return False

    def abandon(self, batch: Batch) -> list[tuple[WriteKey, bytes | None]]:
        """Give up a sealed batch whose commit failed: drop its writes from the overlay.

        Owning thread only, with no commit running. Batches after it keep their order;
        the next one sealed (or already sealed) commits in its place. Returns the
        batch's writes that reads no longer see (those no newer layer shadows), with
        the value the batch held, so callers can undo what they derived from them.
        """
        if batch._owner is not self:
            raise ValueError("batch was sealed by another engine")
        if batch.durable or batch.seq != self._committed_seq + 1:
            raise ValueError(f"only the next batch to commit can be abandoned: {batch!r}")
        self._sealed = [b for b in self._sealed if b is not batch]
        self._committed_seq = batch.seq
        newer = [b._writes for b in self._sealed if b.seq > batch.seq]
        return [(wkey, value) for wkey, value in batch._writes.items()
                if wkey not in self._staged and not any(wkey in w for w in newer)]

    def close(self) -> None:
        """Release the durable layer. Staged and uncommitted sealed writes are lost."""
        if self._closed:
            return
        self._closed = True
        self._staged = {}
        self._sealed = []
        self._close_durable()

    # -- overlay internals -----------------------------------------------------------

    def _prune(self) -> None:
        sealed = self._sealed
        while sealed and sealed[0].durable:
            self._absorb(sealed[0])
            del sealed[0]

    def _staged_sorted_keys(self, table: Table) -> list[bytes]:
        cached = self._staged_index.get(table)
        if cached is not None and cached[0] == len(self._staged):
            return cached[1]
        keys = sorted(k for (t, k) in self._staged if t == table)
        self._staged_index[table] = (len(self._staged), keys)
        return keys

    def _overlay_items(
        self, table: Table, start: bytes, end: bytes | None
    ) -> list[tuple[bytes, bytes | None]]:
        """A sorted snapshot of the overlay's writes to ``table`` within the range."""
        merged: dict[bytes, bytes | None] = {}
        layers = 0
        for batch in self._sealed:
            keys = _range(batch.sorted_keys(table), start, end)
            if keys:
                layers += 1
                writes = batch._writes
                for key in keys:
                    merged[key] = writes[(table, key)]
        keys = _range(self._staged_sorted_keys(table), start, end)
        if keys:
            layers += 1
            staged = self._staged
            for key in keys:
                merged[key] = staged[(table, key)]
        if layers <= 1:
            return list(merged.items())  # one layer: already in key order
        return sorted(merged.items())
