"""LmdbEngine: the durable engine, one LMDB environment per data directory.

Layout: one environment (a directory), named sub-databases ``data``, ``hints`` and
``meta`` (one per table) and ``__ringkv__`` (this module's own format record).

Durability: ``commit`` writes a whole batch in ONE write transaction. With
``sync=True`` (the default) LMDB fsyncs the data file and the meta page when that
transaction commits, before ``commit`` returns; so a returned commit survives kill -9
and power loss, and a batch is all-or-nothing (a crash mid-commit leaves the previous
meta page, i.e. none of the batch). ``sync=False`` (``sync``/``metasync`` off) is for
benchmarks: it survives a process kill but not an OS crash.

Capacity: the map starts at ``initial_map_size`` (at most ``map_size``) and ``grow``
doubles it, up to ``map_size``, when a batch does not fit. A batch that does not fit a
map at ``map_size`` (or a full disk) raises ``StorageFullError``: the node abandons
that batch (its writes fail) and lives on, reads unaffected. ``grow`` calls
``set_mapsize``, which LMDB allows only with no transaction open in the process: the
owning thread calls it between commits, when its own read transactions (all short,
none held across calls) are closed too.

Threading: see ``storage.engine``. The committer thread opens, fills and commits its
own write transaction; the owning thread only uses short read transactions (one per
``get``, one per scan chunk, one per ``count``), which LMDB's MVCC never blocks. py-lmdb
opens the environment with MDB_NOTLS, so read transactions are not bound to threads.
``close`` must not race a ``commit``.

Hot copies: ``copy_to`` writes a compacted copy of the environment (LMDB's
``mdb_env_copy2``), which is a snapshot of ONE read transaction: every batch committed
before it began, none after, whatever commits meanwhile. It may run in any thread while
the owning thread and the committer carry on (LMDB releases the GIL and the copy's read
transaction blocks no writer), but not across ``close`` (its caller waits for it first).
A copy reads the mapped file, so the map must not move under it: ``grow`` refuses
(returns False, the batch fails as if the map were full) while a copy runs, and a copy
refuses (``CopyRefusedError``) to start while ``grow`` remaps. Each side announces
itself before it looks at the other (a set of running copies, a ``_remapping`` flag,
each a single store under the GIL), so the two can never both go ahead.

Long keys: LMDB (as built into py-lmdb) caps keys at 511 bytes, but data keys are up
to 8 + 1024 bytes and hint keys longer still. A key longer than ``inline`` bytes (480
by default, recorded in ``__ringkv__`` when the environment is created) is stored
under ``key[:inline] + blake2b-128(key)`` with the value ``u16 len(rest) + rest +
value``, where ``rest = key[inline:]``. This keeps byte order except among long keys
sharing their first ``inline`` bytes; such keys are adjacent in LMDB (nothing else
sorts between them), so the scan collects each such group and sorts it by the full
key. Stored keys of length <= ``inline`` are the key itself.
"""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Iterator
from typing import Final

import lmdb

from storage.engine import (
    TABLES,
    Batch,
    EngineClosedError,
    OverlayEngine,
    StorageFullError,
    Table,
)

__all__ = ["DEFAULT_INLINE_KEY_MAX", "DEFAULT_MAP_SIZE", "CopyRefusedError", "LmdbEngine"]

DEFAULT_INLINE_KEY_MAX: Final = 480
# Address space, not disk: 16 GiB costs nothing on a 64-bit system, and `--map-size`
# raises it (or lowers it, to cap the disk a node may use).
DEFAULT_MAP_SIZE: Final = 1 << 34
_DIGEST_SIZE: Final = 16
_FORMAT_DB: Final = b"__ringkv__"
_FORMAT_VERSION: Final = b"1"
# Items read per short read transaction during a scan.
_SCAN_CHUNK: Final = 512


class CopyRefusedError(RuntimeError):
    """A hot copy could not start: the map is being resized this moment (try again)."""


class LmdbEngine(OverlayEngine):
    """Group-committed storage on LMDB. ``path`` is a directory (created if missing).

    ``map_size`` is the largest the database may grow to; the map is sparse address
    space, not disk, so the default (16 GiB) costs nothing on a 64-bit system.
    ``initial_map_size`` (default: ``map_size``) is where it starts; see ``grow``.
    ``inline_key_max`` is a test hook (see module docstring); an existing environment
    keeps the value it was created with.
    """

    def __init__(
        self,
        path: str,
        sync: bool = True,
        map_size: int = DEFAULT_MAP_SIZE,
        *,
        inline_key_max: int | None = None,
        initial_map_size: int | None = None,
    ) -> None:
        super().__init__()
        os.makedirs(path, exist_ok=True)
        self.path = path
        # Hot copies running (any thread) and a remap in progress: see module docstring.
        self._copies: set[object] = set()
        self._remapping = False
        self.sync = sync
        self.max_map_size = map_size
        start = map_size if initial_map_size is None else min(initial_map_size, map_size)
        self._env = lmdb.open(
            path,
            map_size=start,
            max_dbs=8,
            sync=sync,
            metasync=sync,
            subdir=True,
            lock=True,
        )
        try:
            self._dbs = {t: self._env.open_db(t.encode()) for t in TABLES}
            self._inline = self._open_format(inline_key_max)
        except BaseException:
            self._env.close()
            raise

    def _open_format(self, requested: int | None) -> int:
        fmt = self._env.open_db(_FORMAT_DB)
        with self._env.begin(write=True, db=fmt) as txn:
            version = txn.get(b"version")
            stored = txn.get(b"inline_key_max")
            if version is None:
                inline = DEFAULT_INLINE_KEY_MAX if requested is None else requested
                if not 1 <= inline <= self._env.max_key_size() - _DIGEST_SIZE:
                    raise ValueError(f"inline_key_max out of range: {inline}")
                txn.put(b"version", _FORMAT_VERSION)
                txn.put(b"inline_key_max", str(inline).encode())
                return inline
        if version != _FORMAT_VERSION or stored is None:
            raise ValueError(f"{self.path}: unknown ringkv LMDB format {version!r}")
        inline = int(stored)
        if requested is not None and requested != inline:
            raise ValueError(f"{self.path}: created with inline_key_max={inline}")
        return inline

    # -- durable layer -----------------------------------------------------------------

    def _durable_get(self, table: Table, key: bytes) -> bytes | None:
        # One short read transaction per call: py-lmdb recycles the reader slot
        # (mdb_txn_renew), so this costs ~1 us and never pins an old snapshot.
        inline = self._inline
        if len(key) <= inline:
            if not key:
                return None  # LMDB rejects empty keys; none is ever stored
            txn = self._env.begin(db=self._dbs[table])
            value: bytes | None = txn.get(key)
            txn.abort()
            return value
        txn = self._env.begin(db=self._dbs[table])
        stored = txn.get(_long_key(key, inline))
        txn.abort()
        if stored is None:
            return None
        full, value = _decode_long(key[:inline], stored)
        if full != key:
            raise RuntimeError(f"blake2b collision between {full!r} and {key!r}")
        return value

    def _raw_scan(self, table: Table, seek: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Stored items from ``seek`` on, read in chunks of short read transactions."""
        db = self._dbs[table]
        while True:
            txn = self._env.begin(db=db)
            try:
                cursor = txn.cursor()
                chunk: list[tuple[bytes, bytes]] = []
                if cursor.set_range(seek):
                    for item in cursor.iternext():
                        chunk.append(item)
                        if len(chunk) >= _SCAN_CHUNK:
                            break
            finally:
                txn.abort()
            yield from chunk
            if len(chunk) < _SCAN_CHUNK:
                return
            seek = chunk[-1][0] + b"\x00"  # the least key above the last one read

    def _durable_scan(
        self, table: Table, start: bytes, end: bytes | None
    ) -> Iterator[tuple[bytes, bytes]]:
        inline = self._inline
        group: list[tuple[bytes, bytes]] = []  # long keys sharing one inline prefix
        group_prefix = b""
        for skey, svalue in self._raw_scan(table, start[:inline]):
            if len(skey) <= inline:
                if group:
                    yield from _in_range(group, start, end)
                    group = []
                if end is not None and skey >= end:
                    return
                if skey >= start:
                    yield skey, svalue
                continue
            prefix = skey[:inline]
            if group and prefix != group_prefix:
                yield from _in_range(group, start, end)
                group = []
            if not group:
                if end is not None and prefix >= end:
                    return  # every full key with this prefix is > prefix >= end
                group_prefix = prefix
            group.append(_decode_long(prefix, svalue))
        if group:
            yield from _in_range(group, start, end)

    def _durable_count(self, table: Table, keys: list[bytes]) -> tuple[int, int]:
        inline = self._inline
        txn = self._env.begin(db=self._dbs[table])
        try:
            total: int = txn.stat(self._dbs[table])["entries"]
            live = 0
            for key in keys:
                skey = key if len(key) <= inline else _long_key(key, inline)
                if txn.get(skey) is not None:
                    live += 1
        finally:
            txn.abort()
        return total, live

    def _durable_write(self, batch: Batch) -> None:
        # Encode outside the transaction, then write each table with one putmulti (a C
        # loop, ~2x faster than txn.put per item). Stored keys of a batch are distinct,
        # so the order of puts and deletes does not matter.
        inline = self._inline
        puts: dict[Table, list[tuple[bytes, bytes]]] = {}
        deletes: dict[Table, list[bytes]] = {}
        for (table, key), value in batch.items():
            if len(key) > inline:
                if value is not None:
                    value = _encode_long(key, inline, value)
                key = _long_key(key, inline)
            if value is None:
                deletes.setdefault(table, []).append(key)
            else:
                puts.setdefault(table, []).append((key, value))
        try:
            with self._env.begin(write=True) as txn:
                for table, pairs in puts.items():
                    consumed, _ = txn.cursor(db=self._dbs[table]).putmulti(pairs)
                    if consumed != len(pairs):
                        raise RuntimeError(f"LMDB wrote {consumed} of {len(pairs)} items")
                for table, keys in deletes.items():
                    db = self._dbs[table]
                    for key in keys:
                        txn.delete(key, db=db)
        except lmdb.MapFullError as exc:
            size = self._env.info()["map_size"]
            raise StorageFullError(
                errno.ENOSPC, f"storage full: the database map is full ({size} bytes;"
                f" limit {self.max_map_size}, see --map-size)") from exc
        except (lmdb.DiskError, lmdb.Error, OSError) as exc:
            if _is_disk_full(exc):
                raise StorageFullError(errno.ENOSPC, "storage full: no space left on the"
                                       " data directory's disk") from exc
            raise

    def grow(self) -> bool:
        """Double the map, up to ``map_size``; False when it is already that large, or
        while a hot copy (``copy_to``) reads the map."""
        size: int = self._env.info()["map_size"]
        if size >= self.max_map_size:
            return False
        self._remapping = True  # announced before looking at the copies
        try:
            if self._copies:
                return False
            self._env.set_mapsize(min(self.max_map_size, size * 2))
        finally:
            self._remapping = False
        return True

    def space(self) -> tuple[int, int]:
        """(bytes of the map in use, the most it may grow to: ``map_size``)."""
        info = self._env.info()
        page = self._env.stat()["psize"]
        return (info["last_pgno"] + 1) * page, self.max_map_size

    def copy_to(self, path: str) -> list[str]:
        """Write a consistent, compacted copy of the environment into directory ``path``.

        ``path`` is created if missing and must not hold a ``data.mdb``. The copy is
        one read transaction's snapshot (see module docstring); staged and sealed
        batches not yet committed are not in it. Any thread, concurrently with the
        owning thread and a commit, never across ``close``. Returns the names of the
        files written, relative to ``path``.
        """
        if self._closed:
            raise EngineClosedError("engine is closed")
        os.makedirs(path, exist_ok=True)
        if os.path.lexists(os.path.join(path, "data.mdb")):
            raise FileExistsError(errno.EEXIST, "a copy is already there", path)
        token = object()
        self._copies.add(token)  # announced before looking at the remap flag
        try:
            if self._remapping:
                raise CopyRefusedError("the database map is being resized; try again")
            self._env.copy(path, compact=True)
        finally:
            self._copies.discard(token)
        return ["data.mdb"]

    def _close_durable(self) -> None:
        self._env.close()


def _long_key(key: bytes, inline: int) -> bytes:
    return key[:inline] + hashlib.blake2b(key, digest_size=_DIGEST_SIZE).digest()


def _encode_long(key: bytes, inline: int, value: bytes) -> bytes:
    rest = key[inline:]
    return len(rest).to_bytes(2, "big") + rest + value


def _decode_long(prefix: bytes, stored: bytes) -> tuple[bytes, bytes]:
    n = int.from_bytes(stored[:2], "big")
    return prefix + stored[2 : 2 + n], stored[2 + n :]


def _in_range(
    group: list[tuple[bytes, bytes]], start: bytes, end: bytes | None
) -> Iterator[tuple[bytes, bytes]]:
    group.sort()
    for key, value in group:
        if key >= start and (end is None or key < end):
            yield key, value


def _is_disk_full(exc: BaseException) -> bool:
    code = getattr(exc, "errno", None)
    if code in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    return "No space left" in text or "Disk quota exceeded" in text
