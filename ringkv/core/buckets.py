"""Bucket properties: what each bucket overrides of the cluster's defaults (contract 7).

A bucket may set `r`, `w`, `ttl` (the default time to live of its writes), `conflict`
(`siblings` or `lww`) and `max_siblings`. N is cluster-wide: a bucket with its own N
would need its own replica placement, and every range transfer, hint and Merkle tree
would have to know each key's bucket; we keep one N so that the ring alone decides
where a key lives.

Where they live: every bucket's properties are one replicated key of the store
(`storage.namespace.PROPS_KEY`, one sibling per bucket, last writer wins per bucket:
`storage.crdt.PropsPut`), so they are durable on N nodes and reach the others by
hinted handoff, read repair and anti-entropy like any write. Every node keeps the
table in memory (`Buckets`), persisted in its own meta table so a restarted node has
them before its first refresh, and the runtime re-reads the key every few seconds.

Invariants:
- `Buckets` only holds validated properties: a table read from the store or from disk
  is hostile input, and an entry that does not parse is skipped (the bucket keeps its
  defaults), never raised.
- A request's own query parameters override its bucket's properties, and a bucket's
  properties override the cluster's defaults (`effective`).
- `resolve(key, state)` applies last-write-wins only to values (`/kv/` keys) of a
  bucket whose conflict mode is `lww`: counters and sets merge as CRDTs and must keep
  every sibling.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Final

import msgpack

from storage.crdt import MAX_BUCKETS as CRDT_MAX_BUCKETS
from storage.namespace import DEFAULT_BUCKET, KV, split_internal_key
from storage.versions import Versions, lww_resolve

__all__ = ["PROPERTIES", "BucketProps", "Buckets", "decode_props", "encode_props",
           "parse_props_update"]

PROPERTIES: Final = ("r", "w", "ttl", "conflict", "max_siblings")
CONFLICT_MODES: Final = ("siblings", "lww")
MAX_TTL: Final = 10 * 365 * 86400
MAX_SIBLINGS_LIMIT: Final = 10_000
MAX_BUCKETS: Final = CRDT_MAX_BUCKETS  # buckets with properties (the record's own bound)


@dataclass(frozen=True, slots=True)
class BucketProps:
    """The properties a bucket sets; None leaves the cluster's default."""

    r: int | None = None
    w: int | None = None
    ttl: int | None = None
    conflict: str | None = None
    max_siblings: int | None = None


def _check(name: str, value: object, n: int) -> int | str | None:
    if value is None:
        return None
    if name in ("r", "w"):
        if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= n:
            return value
        raise ValueError(f"{name} must be an integer 1..{n}, got {value!r}")
    if name == "ttl":
        if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_TTL:
            return value
        raise ValueError(f"ttl must be whole seconds 1..{MAX_TTL} (or null), got {value!r}")
    if name == "conflict":
        if value in CONFLICT_MODES:
            return str(value)
        raise ValueError(f"conflict must be one of {', '.join(CONFLICT_MODES)}, got {value!r}")
    if name == "max_siblings":
        if (isinstance(value, int) and not isinstance(value, bool)
                and 1 <= value <= MAX_SIBLINGS_LIMIT):
            return value
        raise ValueError(f"max_siblings must be an integer 1..{MAX_SIBLINGS_LIMIT},"
                         f" got {value!r}")
    raise ValueError(f"unknown bucket property {name!r}; known: {', '.join(PROPERTIES)}")


def parse_props_update(doc: object, n: int) -> dict[str, Any]:
    """The changes a `PUT /buckets/{b}/props` body asks for; ValueError says what is wrong.

    Any subset of `PROPERTIES`; null clears a property back to the cluster default.
    """
    if not isinstance(doc, dict) or not doc:
        raise ValueError("expected a JSON object with any of " + ", ".join(PROPERTIES))
    return {str(name): _check(str(name), value, n) for name, value in doc.items()}


def encode_props(props: BucketProps) -> bytes:
    doc = {name: getattr(props, name) for name in PROPERTIES
           if getattr(props, name) is not None}
    packed: bytes = msgpack.packb(doc, use_bin_type=True)
    return packed


def decode_props(raw: bytes, n: int) -> BucketProps:
    """Properties from their stored form; ValueError on anything malformed."""
    try:
        doc = msgpack.unpackb(raw, raw=False)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise ValueError("bucket properties are not msgpack") from exc
    if not isinstance(doc, dict):
        raise ValueError("bucket properties are not a map")
    checked: dict[str, Any] = {str(k): _check(str(k), v, n) for k, v in doc.items()}
    return BucketProps(**checked)


class Buckets:
    """The node's table of bucket properties, and what follows from it for a key."""

    def __init__(self, quorums: Callable[[], tuple[int, int, int]], conflict: str,
                 max_siblings: int) -> None:
        # The node's current (n, r, w): a joiner adopts its cluster's after it starts.
        self._quorums = quorums
        # The node's setting says "dvv" where a bucket's says "siblings": the same mode.
        self.conflict = "lww" if conflict == "lww" else "siblings"
        self.max_siblings = max_siblings
        self._props: dict[str, BucketProps] = {}

    def props(self, bucket: str) -> BucketProps:
        return self._props.get(bucket, BucketProps())

    def set(self, bucket: str, props: BucketProps) -> None:
        if props == BucketProps():
            self._props.pop(bucket, None)
        elif bucket in self._props or len(self._props) < MAX_BUCKETS:
            self._props[bucket] = props

    def load(self, table: Mapping[str, bytes]) -> bool:
        """Take a whole table read from the store (or disk); True when anything changed.

        Entries that do not parse are skipped: the bucket keeps its defaults.
        """
        n = self._quorums()[0]
        loaded: dict[str, BucketProps] = {}
        for bucket, raw in sorted(table.items())[:MAX_BUCKETS]:
            try:
                props = decode_props(raw, n)
            except (ValueError, TypeError):
                continue
            if props != BucketProps():
                loaded[bucket] = props
        changed = loaded != self._props
        self._props = loaded
        return changed

    def table(self) -> dict[str, bytes]:
        """The table in its stored form, for the node's meta table."""
        return {bucket: encode_props(p) for bucket, p in sorted(self._props.items())}

    def effective(self, bucket: str) -> dict[str, Any]:
        """Every property of `bucket`: its own, else the cluster's default."""
        own = self.props(bucket)
        n, r, w = self._quorums()
        return {
            "n": n,
            "r": own.r if own.r is not None else r,
            "w": own.w if own.w is not None else w,
            "ttl": own.ttl,
            "conflict": own.conflict or self.conflict,
            "max_siblings": own.max_siblings if own.max_siblings is not None
            else self.max_siblings,
        }

    def with_changes(self, bucket: str, changes: Mapping[str, Any]) -> BucketProps:
        return replace(self.props(bucket), **changes)

    def max_siblings_for(self, key: bytes) -> int:
        bucket = _bucket_of(key)
        own = self._props.get(bucket) if bucket is not None else None
        if own is not None and own.max_siblings is not None:
            return own.max_siblings
        return self.max_siblings

    def resolve(self, key: bytes, state: Versions) -> Versions:
        if len(state.siblings) <= 1:
            return state
        if key[:1] != b"\x00":
            mode = self.conflict
            own = self._props.get(DEFAULT_BUCKET)
        else:
            try:
                bucket, kind, _ = split_internal_key(key)
            except ValueError:
                return state
            if kind != KV:
                return state  # counters and sets keep every sibling: they are CRDTs
            mode = self.conflict
            own = self._props.get(bucket)
        if own is not None and own.conflict is not None:
            mode = own.conflict
        return lww_resolve(state) if mode == "lww" else state


def _bucket_of(key: bytes) -> str | None:
    if key[:1] != b"\x00":
        return DEFAULT_BUCKET
    try:
        return split_internal_key(key)[0]
    except ValueError:
        return None
