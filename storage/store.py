"""Typed access to one node's engine: key records, hints and node metadata.

The engine stores bytes; this module owns the encodings. Hints are kept in their own
table, keyed so that every hint of one key is one prefix scan (reads on a fallback see
hinted versions) and indexed in memory by target so handoff never scans the table.

Invariants:
- `hint_index` holds exactly the hint keys present in the engine's hints table (built
  by one scan at start, then kept in step by `put_hint`/`delete_hint`).
- Every change to a key record goes through `put_record` or `delete_record`, and each
  tells `listener` (if set) the key's versions before and after: anti-entropy keeps its
  Merkle trees in step that way, without re-reading anything. The previous record is
  usually the one `get_record` just returned (a write reads, then writes the same key),
  so it is remembered for one key rather than read again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import msgpack
from sortedcontainers import SortedSet

from storage.engine import Engine
from storage.keys import (
    data_key,
    hint_key,
    hint_prefix,
    prefix_end,
    split_data_key,
    split_hint_key,
    token_range_bounds,
)
from storage.record import Record, decode_record, encode_record
from storage.versions import Versions, from_wire, merge, to_wire

Resolver = Callable[[Versions], Versions]
ChangeListener = Callable[[int, bytes, Versions | None, Versions | None], None]


def _keep_all(versions: Versions) -> Versions:
    return versions


class KeyStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.hint_index: dict[str, SortedSet] = {}
        self.listener: ChangeListener | None = None
        # (data key, record) of the last record read or written, for the listener.
        self._last: tuple[bytes, Record | None] | None = None
        for hkey, _ in engine.scan("hints", b"", None):
            _, _, target = split_hint_key(hkey)
            self.hint_index.setdefault(target, SortedSet()).add(hkey)

    # --- records ------------------------------------------------------------------

    def get_record(self, token: int, key: bytes) -> Record | None:
        dkey = data_key(token, key)
        raw = self.engine.get("data", dkey)
        record = None if raw is None else decode_record(raw)
        if self.listener is not None:
            self._last = (dkey, record)
        return record

    def _previous(self, dkey: bytes) -> Versions | None:
        last = self._last
        if last is not None and last[0] == dkey:
            record = last[1]
        else:
            raw = self.engine.get("data", dkey)
            record = None if raw is None else decode_record(raw)
        return None if record is None else record.versions

    def put_record(self, token: int, key: bytes, record: Record) -> None:
        dkey = data_key(token, key)
        listener = self.listener
        if listener is None:
            self.engine.put("data", dkey, encode_record(record))
            return
        old = self._previous(dkey)
        self.engine.put("data", dkey, encode_record(record))
        self._last = (dkey, record)
        listener(token, key, old, record.versions)

    def delete_record(self, token: int, key: bytes) -> None:
        """Forget a key entirely (a range handed to another node, a test)."""
        dkey = data_key(token, key)
        old = self._previous(dkey) if self.listener is not None else None
        self.engine.delete("data", dkey)
        self._last = None
        if self.listener is not None and old is not None:
            self.listener(token, key, old, None)

    def merge_record(self, token: int, key: bytes, incoming: Versions,
                     resolve: Resolver = _keep_all) -> bool:
        """Merge received versions into the local record; True when it changed."""
        current = self.get_record(token, key)
        if current is None:
            self.put_record(token, key, Record(resolve(incoming)))
            return True
        merged = resolve(merge(current.versions, incoming))
        if merged.same_as(current.versions):
            return False
        self.put_record(token, key, Record(merged, current.local_actor))
        return True

    def scan_range(self, start: int, end: int, after: bytes | None,
                   limit: int) -> list[tuple[int, bytes, Record]]:
        """Up to `limit` records whose token is in the ring range ``(start, end]``.

        In data-key order (token, then key). `after` is the data key of the last record
        a previous call returned, so a long range is read in resumable pages.
        """
        out: list[tuple[int, bytes, Record]] = []
        for lo, hi in token_range_bounds(start, end):
            if after is not None:
                if hi is not None and after >= hi:
                    continue
                lo = max(lo, after + b"\x00")
            for raw_key, raw in self.engine.scan("data", lo, hi):
                token, key = split_data_key(raw_key)
                out.append((token, key, decode_record(raw)))
                if len(out) >= limit:
                    return out
        return out

    # --- hints ----------------------------------------------------------------------

    def get_hint(self, hkey: bytes) -> Versions | None:
        raw = self.engine.get("hints", hkey)
        return None if raw is None else from_wire(msgpack.unpackb(raw, raw=False))

    def merge_hint(self, token: int, key: bytes, target: str, incoming: Versions,
                   resolve: Resolver = _keep_all) -> None:
        hkey = hint_key(token, key, target)
        merged = resolve(merge(self.get_hint(hkey), incoming))
        self.engine.put("hints", hkey, msgpack.packb(to_wire(merged), use_bin_type=True))
        self.hint_index.setdefault(target, SortedSet()).add(hkey)

    def delete_hint(self, hkey: bytes) -> None:
        self.engine.delete("hints", hkey)
        _, _, target = split_hint_key(hkey)
        keys = self.hint_index.get(target)
        if keys is not None:
            keys.discard(hkey)
            if not keys:
                del self.hint_index[target]

    def hints_pending(self) -> int:
        return sum(len(v) for v in self.hint_index.values())

    def hint_targets(self) -> list[str]:
        return sorted(self.hint_index)

    def hints_for(self, target: str, limit: int, skip: set[bytes]) -> list[bytes]:
        out: list[bytes] = []
        # The index is kept sorted, so this reads only the first few entries.
        for hkey in self.hint_index.get(target, ()):
            if hkey not in skip:
                out.append(hkey)
                if len(out) >= limit:
                    break
        return out

    def hinted_versions(self, token: int, key: bytes) -> Iterator[Versions]:
        prefix = hint_prefix(token, key)
        for _, raw in self.engine.scan("hints", prefix, prefix_end(prefix)):
            yield from_wire(msgpack.unpackb(raw, raw=False))

    def read_merged(self, token: int, key: bytes) -> Versions | None:
        """Everything this node knows of a key: its record and any hints it holds."""
        record = self.get_record(token, key)
        state = record.versions if record else None
        if self.hint_index:
            for hinted in self.hinted_versions(token, key):
                state = merge(state, hinted)
        return state

    # --- node metadata --------------------------------------------------------------

    def get_meta(self, name: str) -> object | None:
        raw = self.engine.get("meta", name.encode())
        return None if raw is None else msgpack.unpackb(raw, raw=False)

    def put_meta(self, name: str, value: object) -> None:
        self.engine.put("meta", name.encode(), msgpack.packb(value, use_bin_type=True))

