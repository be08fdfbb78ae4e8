"""The messages of key listing, type ids 14-15, and the outline of a state they carry.

    ReplicaScan       (14)  coordinator -> replica   the records of (bucket, kind) after
                                                     a position, up to an end token
    ReplicaScanReply  (15)  replica -> coordinator   those records' states, outlined, and
                                                     how far the replica read

A *position* is a pair (token, stored key) in data-key order (`storage.keys`: a token of
8 big-endian bytes, then the key, so byte order is (token, key) order). A position with
an empty key, (t, b""), lies before every key of token t. `ReplicaScan.after` is
exclusive: the scan covers the keys whose position is above it and whose token is at
most `end`. `ReplicaScanReply.reached` is the position of the last record the replica
read, or None when it read the range to `end`: every record of the range up to
`reached` is in `entries` if it belongs to the (bucket, kind) asked for, and none
beyond it is.

States travel *outlined* (`outline`): a live sibling's value becomes b"" and every
sibling's content type "". Liveness, dots, timestamps, expiry and tombstones are what
listing merges and judges, and they are all kept; the values (up to a MiB each) would
only fill the frames.

Invariants: `ringkv.core.wire` registers these classes and encodes each as
`[TYPE, *to_fields()]`; `from_fields` accepts exactly what `to_fields` produces and
raises `ValueError`/`TypeError` on anything else: ids and tokens outside 0..2**64-1,
keys outside 1..`MAX_KEY_LEN` (positions: 0..`MAX_KEY_LEN`), a bad bucket name or a
kind that cannot be listed, a limit outside 1..`MAX_SCAN_ENTRIES`, more entries than
that, malformed states (`storage.versions.from_wire`), booleans for integers. What a
decoder cannot know (are the entries in order, inside the range asked for, of the
bucket asked for, from a node that was asked?) the coordinator checks
(`coordinator.listing`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Final

from ring.token import MAX_TOKEN
from storage.keys import MAX_KEY_LEN
from storage.namespace import COUNTER, KV, SET, is_bucket_name
from storage.versions import Sibling, Versions, from_wire, to_wire

__all__ = ["LISTABLE_KINDS", "LISTING_MESSAGES", "MAX_SCAN_ENTRIES", "Position",
           "ReplicaScan", "ReplicaScanReply", "outline"]

Position = tuple[int, bytes]

# The most entries one reply carries, and so the most keys a page may ask for
# (contract 7: a limit is 1..1000).
MAX_SCAN_ENTRIES: Final = 1000
# Bucket metadata (`storage.namespace.META`) is the store's own, not a user's keys.
LISTABLE_KINDS: Final = (KV, COUNTER, SET)


def _uint(doc: Any) -> int:
    if type(doc) is not int or not 0 <= doc <= MAX_TOKEN:
        raise ValueError("expected an unsigned 64-bit integer")
    return doc


def _position_key(doc: Any) -> bytes:
    if type(doc) is not bytes or len(doc) > MAX_KEY_LEN:
        raise ValueError("malformed position key")
    return doc


def outline(state: Versions) -> Versions:
    """`state` without its values: what a scan sends (see the module docstring)."""
    if all(s.content_type == "" and not s.value for s in state.siblings):
        return state
    return Versions(state.context, tuple(
        Sibling(s.actor, s.counter, None if s.value is None else b"", "", s.timestamp_ms,
                s.expires_at_ms)
        for s in state.siblings))


@dataclass(frozen=True, slots=True)
class ReplicaScan:
    TYPE: ClassVar[int] = 14
    req_id: int
    after: Position  # exclusive
    end: int  # inclusive; after[0] <= end
    bucket: str
    kind: str  # one of LISTABLE_KINDS
    limit: int  # at most this many entries

    def to_fields(self) -> list[Any]:
        return [self.req_id, self.after[0], self.after[1], self.end, self.bucket,
                self.kind, self.limit]

    @classmethod
    def from_fields(cls, f: list[Any]) -> ReplicaScan:
        if len(f) != 7:
            raise ValueError("malformed replica scan")
        req_id, token, key, end, bucket, kind, limit = f
        after = (_uint(token), _position_key(key))
        if _uint(end) < after[0]:
            raise ValueError("replica scan ends before it starts")
        if type(bucket) is not str or not is_bucket_name(bucket):
            raise ValueError("malformed bucket name")
        if kind not in LISTABLE_KINDS:
            raise ValueError("not a kind of keys that can be listed")
        if type(limit) is not int or not 1 <= limit <= MAX_SCAN_ENTRIES:
            raise ValueError("replica scan limit out of range")
        return cls(_uint(req_id), after, end, bucket, kind, limit)


@dataclass(frozen=True, slots=True)
class ReplicaScanReply:
    TYPE: ClassVar[int] = 15
    req_id: int
    entries: tuple[tuple[bytes, Versions], ...]  # (stored key, outlined state), in order
    reached: Position | None  # None: the range was read to its end

    def to_fields(self) -> list[Any]:
        reached = None if self.reached is None else [self.reached[0], self.reached[1]]
        return [self.req_id, [[key, to_wire(state)] for key, state in self.entries],
                reached]

    @classmethod
    def from_fields(cls, f: list[Any]) -> ReplicaScanReply:
        if len(f) != 3 or type(f[1]) is not list or len(f[1]) > MAX_SCAN_ENTRIES:
            raise ValueError("malformed replica scan reply")
        entries = []
        for entry in f[1]:
            if not (type(entry) is list and len(entry) == 2 and type(entry[0]) is bytes
                    and 1 <= len(entry[0]) <= MAX_KEY_LEN):
                raise ValueError("malformed replica scan entry")
            entries.append((entry[0], from_wire(entry[1])))
        doc = f[2]
        reached: Position | None = None
        if doc is not None:
            if type(doc) is not list or len(doc) != 2:
                raise ValueError("malformed scan position")
            reached = (_uint(doc[0]), _position_key(doc[1]))
        return cls(_uint(f[0]), tuple(entries), reached)


LISTING_MESSAGES = (ReplicaScan, ReplicaScanReply)
