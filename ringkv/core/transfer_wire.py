"""Messages of range transfers (joins, leaves, removals), type ids 40-44.

A node that must hold a range it does not hold yet pulls it page by page:
`RangeFetch` asks a previous owner for the records of ``(start, end]`` after a data
key, and `RangeBatch` answers with at most `limit` of them and the cursor to continue
from (`None` once the range is exhausted); `RangeBusy` refuses a fetch of a range the
source is itself still fetching (it does not hold it yet: ask another). A leaving node
asks each heir (`SyncAsk`, with a transfer id it drew and the fingerprint of the pending
ring) whether it holds its new ranges; `SyncDone` answers once it does, echoing both. A
leaver counts a `SyncDone` only from an heir it asked, with the transfer id and
fingerprint it asked about, so a notice nobody asked for changes nothing.

Every decoder validates sizes and types: a malformed frame raises ValueError and the
transport refuses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ring.token import MAX_TOKEN
from storage.keys import MAX_KEY_LEN
from storage.versions import Versions, from_wire, to_wire

MAX_BATCH_KEYS = 1000
MAX_CURSOR_BYTES = 8 + MAX_KEY_LEN  # a data key: token, then the key


def _uint(doc: Any, limit: int = MAX_TOKEN) -> int:
    if not isinstance(doc, int) or isinstance(doc, bool) or not 0 <= doc <= limit:
        raise ValueError("malformed integer")
    return doc


def _cursor(doc: Any) -> bytes | None:
    if doc is None:
        return None
    if not isinstance(doc, bytes) or not 9 <= len(doc) <= MAX_CURSOR_BYTES:
        raise ValueError("malformed cursor")
    return doc


@dataclass(frozen=True, slots=True)
class RangeFetch:
    TYPE: ClassVar[int] = 40
    req_id: int
    start: int
    end: int
    after: bytes | None
    limit: int

    def to_fields(self) -> list[Any]:
        return [self.req_id, self.start, self.end, self.after, self.limit]

    @classmethod
    def from_fields(cls, f: list[Any]) -> RangeFetch:
        if len(f) != 5:
            raise ValueError("malformed range fetch")
        return cls(_uint(f[0]), _uint(f[1]), _uint(f[2]), _cursor(f[3]),
                   _uint(f[4], MAX_BATCH_KEYS))


@dataclass(frozen=True, slots=True)
class RangeBatch:
    TYPE: ClassVar[int] = 41
    req_id: int
    items: tuple[tuple[bytes, Versions], ...]
    next_after: bytes | None  # None: the range is exhausted

    def to_fields(self) -> list[Any]:
        return [self.req_id, [[k, to_wire(v)] for k, v in self.items], self.next_after]

    @classmethod
    def from_fields(cls, f: list[Any]) -> RangeBatch:
        if len(f) != 3 or not isinstance(f[1], list) or len(f[1]) > MAX_BATCH_KEYS:
            raise ValueError("malformed range batch")
        items = []
        for entry in f[1]:
            if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], bytes)
                    and 1 <= len(entry[0]) <= MAX_KEY_LEN):
                raise ValueError("malformed range batch item")
            items.append((entry[0], from_wire(entry[1])))
        return cls(_uint(f[0]), tuple(items), _cursor(f[2]))


@dataclass(frozen=True, slots=True)
class SyncDone:
    TYPE: ClassVar[int] = 42
    fingerprint: int
    transfer_id: int = 0  # the leaver's `SyncAsk` this answers; 0 answers none

    def to_fields(self) -> list[Any]:
        return [self.fingerprint, self.transfer_id]

    @classmethod
    def from_fields(cls, f: list[Any]) -> SyncDone:
        if len(f) != 2:
            raise ValueError("malformed sync notice")
        return cls(_uint(f[0]), _uint(f[1]))


@dataclass(frozen=True, slots=True)
class RangeBusy:
    TYPE: ClassVar[int] = 43
    req_id: int

    def to_fields(self) -> list[Any]:
        return [self.req_id]

    @classmethod
    def from_fields(cls, f: list[Any]) -> RangeBusy:
        if len(f) != 1:
            raise ValueError("malformed range refusal")
        return cls(_uint(f[0]))


@dataclass(frozen=True, slots=True)
class SyncAsk:
    TYPE: ClassVar[int] = 44
    fingerprint: int  # the pending ring the leaver waits for its heirs to hold
    transfer_id: int  # drawn by the leaver; a `SyncDone` must echo it

    def to_fields(self) -> list[Any]:
        return [self.fingerprint, self.transfer_id]

    @classmethod
    def from_fields(cls, f: list[Any]) -> SyncAsk:
        if len(f) != 2:
            raise ValueError("malformed sync question")
        return cls(_uint(f[0]), _uint(f[1]))


TRANSFER_MESSAGES = (RangeFetch, RangeBatch, SyncDone, RangeBusy, SyncAsk)
