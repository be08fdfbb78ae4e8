"""Typed access to one node's engine: key records, hints and node metadata.

The engine stores bytes; this module owns the encodings. Hints are kept in their own
table, keyed so that every hint of one key is one prefix scan (reads on a fallback see
hinted versions) and indexed in memory by target so handoff never scans the table.

Invariants:
- `hint_index` holds exactly the hint keys present in the engine's hints table (built
  by one scan at start, then kept in step by `put_hint`/`delete_hint`).
- Hints are this node's own bytes (every state in them was validated on arrival or
  formed here): they are read back with `from_trusted_wire`, never re-validated, so a
  hint always reads back, whatever limits the hostile-input decoders apply.
- `full` is None, or why the engine could not make the last batch durable (a full map
  or disk); the driver sets and clears it, writes coordinated here refuse while set.
- Every change to a key record goes through `put_record` or `delete_record`, and each
  tells `listener` (if set) the key's versions before and after: anti-entropy keeps its
  Merkle trees in step that way, without re-reading anything. The previous record is
  usually the one `get_record` just returned (a write reads, then writes the same key),
  so it is remembered for one key rather than read again.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import msgpack
from sortedcontainers import SortedSet

from storage.engine import Batch, Engine
from storage.keys import (
    MAX_TOKEN,
    TOKEN_BYTES,
    data_key,
    hint_key,
    hint_prefix,
    prefix_end,
    split_data_key,
    split_hint_key,
    token_range_bounds,
)
from storage.memory import MemoryEngine
from storage.record import RECORD_FORMAT, Record, decode_record, encode_record
from storage.versions import Versions, from_trusted_wire, from_wire, merge, to_wire

# Applied to every state formed for a key (last-write-wins keeps one sibling); it is
# handed the stored key, since the conflict mode is a bucket's (`storage.namespace`).
Resolver = Callable[[bytes, Versions], Versions]
ChangeListener = Callable[[int, bytes, Versions | None, Versions | None], None]


def _keep_all(key: bytes, versions: Versions) -> Versions:
    return versions


def pack_versions(state: Versions) -> bytes:
    """A state in its packed wire form: the msgpack of `to_wire`, as a record holds it."""
    packed: bytes = msgpack.packb(to_wire(state), use_bin_type=True)
    return packed


def unpack_versions(raw: bytes) -> Versions:
    """Inverse of `pack_versions`, validated like `from_wire` (a peer sent these bytes):
    ValueError on anything malformed. A peer's bytes reach here only through the wire
    codec, which has already unpacked them once under its frame limits."""
    try:
        doc = msgpack.unpackb(raw, raw=False, use_list=True)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise ValueError("versions are not msgpack") from exc
    return from_wire(doc)


def _stored_versions(raw: bytes) -> bytes:
    """The versions of an encoded record (`storage.record`), still packed.

    A record is the msgpack array [format, versions, local actor], so its versions are
    one contiguous run of its bytes, exactly `pack_versions(record.versions)`: found by
    skipping over them, without building them. The local actor stays behind.
    """
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=len(raw))
    unpacker.feed(raw)
    if unpacker.read_array_header() != 3 or unpacker.unpack() != RECORD_FORMAT:
        raise ValueError("unknown record format")
    start = unpacker.tell()
    unpacker.skip()
    return raw[start:unpacker.tell()]


class KeyStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.hint_index: dict[str, SortedSet] = {}
        self.listener: ChangeListener | None = None
        self.full: str | None = None
        # (data key, record) of the last record read or written, for the listener.
        self._last: tuple[bytes, Record | None] | None = None
        for hkey, _ in engine.scan("hints", b"", None):
            _, _, target = split_hint_key(hkey)
            self.hint_index.setdefault(target, SortedSet()).add(hkey)
        if isinstance(engine, MemoryEngine):
            engine.on_evict = self._evicted

    def _evicted(self, dkey: bytes, raw: bytes) -> None:
        """The engine dropped a record to stay under its memory bound: to every reader
        the key is gone, so the listener sees it deleted, and `_last` forgets it."""
        if self._last is not None and self._last[0] == dkey:
            self._last = None
        if self.listener is not None:
            token, key = split_data_key(dkey)
            self.listener(token, key, decode_record(raw).versions, None)

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
            self.put_record(token, key, Record(resolve(key, incoming)))
            return True
        merged = resolve(key, merge(current.versions, incoming))
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

    def scan_matching(
        self, after: tuple[int, bytes], end: int, accept: Callable[[bytes], bool],
        limit: int, budget: int,
    ) -> tuple[list[tuple[int, bytes, Record]], tuple[int, bytes] | None]:
        """Records whose key `accept` takes, after position `after` with tokens up to `end`.

        A position is (token, key) in data-key order; `after` is exclusive, and (t, b"")
        lies before every key of token t. At most `limit` matches are returned and at
        most `budget` records read (matching or not), so a call costs a bounded amount
        whatever the range holds. Returns the matches, in order, and the position of
        the last record read, or None when the range was read to its end: every match
        up to that position is in the list. A record that does not decode (a damaged
        disk) is read and skipped, as if absent here: the other replicas hold the key.
        """
        token, key = after
        if not 0 <= token <= end <= MAX_TOKEN or limit < 1 or budget < 1:
            raise ValueError("bad scan bounds")
        lo = data_key(token, key) + b"\x00" if key else token.to_bytes(TOKEN_BYTES, "big")
        hi = None if end == MAX_TOKEN else (end + 1).to_bytes(TOKEN_BYTES, "big")
        out: list[tuple[int, bytes, Record]] = []
        for read, (raw_key, raw) in enumerate(self.engine.scan("data", lo, hi), 1):
            found = split_data_key(raw_key)
            if accept(found[1]):
                with contextlib.suppress(ValueError):  # damaged: see the docstring
                    out.append((found[0], found[1], decode_record(raw)))
            if len(out) >= limit or read >= budget:
                return out, found
        return out, None

    def abandon(self, batch: Batch) -> None:
        """Drop a batch whose commit failed (`Engine.abandon`) and keep in step with it.

        Its record changes are undone: the listener sees each key go from the state the
        batch held back to the one reads now find (older layers), and the hint index
        loses (or regains) the hints the batch wrote (or deleted). Keys written again
        since the batch was sealed keep their newer value and need no undo.
        """
        undone: list[tuple[bytes, bytes | None]] = []
        hints: list[bytes] = []
        for (table, key), value in self.engine.abandon(batch):
            if table == "data":
                undone.append((key, value))
            elif table == "hints":
                hints.append(key)
        self._last = None
        for hkey in hints:
            _, _, target = split_hint_key(hkey)
            if self.engine.get("hints", hkey) is None:
                keys = self.hint_index.get(target)
                if keys is not None:
                    keys.discard(hkey)
                    if not keys:
                        del self.hint_index[target]
            else:
                self.hint_index.setdefault(target, SortedSet()).add(hkey)
        listener = self.listener
        if listener is None:
            return
        for dkey, value in undone:
            raw = self.engine.get("data", dkey)
            token, key = split_data_key(dkey)
            held = None if value is None else decode_record(value).versions
            now = None if raw is None else decode_record(raw).versions
            listener(token, key, held, now)

    # --- hints ----------------------------------------------------------------------

    def get_hint(self, hkey: bytes) -> Versions | None:
        raw = self.engine.get("hints", hkey)
        return None if raw is None else from_trusted_wire(msgpack.unpackb(raw, raw=False))

    def merge_hint(self, token: int, key: bytes, target: str, incoming: Versions,
                   resolve: Resolver = _keep_all) -> None:
        hkey = hint_key(token, key, target)
        merged = resolve(key, merge(self.get_hint(hkey), incoming))
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
            yield from_trusted_wire(msgpack.unpackb(raw, raw=False))

    def read_merged(self, token: int, key: bytes) -> Versions | None:
        """Everything this node knows of a key: its record and any hints it holds."""
        record = self.get_record(token, key)
        state = record.versions if record else None
        if self.hint_index:
            for hinted in self.hinted_versions(token, key):
                state = merge(state, hinted)
        return state

    def read_packed(self, token: int, key: bytes) -> bytes | None:
        """`read_merged`, packed (`pack_versions`): what a replica answers a read with.

        With no hint held for the key it is a slice of the stored record's bytes, so a
        read neither decodes the record nor encodes it again; with hints, the merge of
        the record and the hints is packed. Either way, the same bytes as
        `pack_versions(read_merged(...))`.
        """
        raw = self.engine.get("data", data_key(token, key))
        if self.hint_index:
            hinted = list(self.hinted_versions(token, key))
            if hinted:
                state = merge(None if raw is None else decode_record(raw).versions, hinted[0])
                for more in hinted[1:]:
                    state = merge(state, more)
                return pack_versions(state)
        return None if raw is None else _stored_versions(raw)

    # --- node metadata --------------------------------------------------------------

    def get_meta(self, name: str) -> object | None:
        raw = self.engine.get("meta", name.encode())
        return None if raw is None else msgpack.unpackb(raw, raw=False)

    def put_meta(self, name: str, value: object) -> None:
        self.engine.put("meta", name.encode(), msgpack.packb(value, use_bin_type=True))

