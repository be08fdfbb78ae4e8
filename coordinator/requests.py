"""What a client asks of the store and what it gets back, as plain values.

Expected distributed outcomes are values (`QuorumFailed(acks=1, required=2)`), not
exceptions; the HTTP layer maps each to a status code at the boundary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from storage.versions import Context, Sibling

if TYPE_CHECKING:
    from storage.crdt import Operation


@dataclass(frozen=True, slots=True)
class WriteRequest:
    """A PUT, or a DELETE when `value` is None; or, with `op`, a data-type update.

    `key` is a stored key (`storage.namespace`). With an `op` (a counter increment, a
    set edit, bucket properties: `storage.crdt`) the coordinator forms the new state
    with `op.apply` instead of writing `value`, and `value`, `content_type` and
    `context` are unused.
    """

    key: bytes
    value: bytes | None
    content_type: str
    context: Context
    w: int | None = None  # None: the cluster default
    ttl: int | None = None  # seconds
    timeout_ms: int | None = None
    op: Operation | None = None


@dataclass(frozen=True, slots=True)
class ReadRequest:
    key: bytes
    r: int | None = None
    timeout_ms: int | None = None


@dataclass(frozen=True, slots=True)
class ListRequest:
    """A page of the live keys of one (bucket, kind), in ring order (contract 7).

    `after` is the position the previous page ended at, `(token, stored key)`, or None
    for the first page; keys are listed in (token, stored key) order, an order no
    membership change alters, so following the cursor lists each key once.
    """

    bucket: str
    kind: str  # storage.namespace.KV, COUNTER or SET
    after: tuple[int, bytes] | None
    limit: int
    r: int | None = None
    timeout_ms: int | None = None


ClientRequest = WriteRequest | ReadRequest | ListRequest


@dataclass(frozen=True, slots=True)
class WriteOk:
    context: Context
    acks: int


@dataclass(frozen=True, slots=True)
class ReadOk:
    siblings: tuple[Sibling, ...]  # live ones only; never empty
    context: Context
    replied: tuple[str, ...] = ()  # the replicas that answered in time
    stale: tuple[str, ...] = ()  # those whose answer was older than the one served


@dataclass(frozen=True, slots=True)
class NotFound:
    context: Context | None  # present when a deletion (or expiry) is known
    replied: tuple[str, ...] = ()
    stale: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class QuorumFailed:
    acks: int
    required: int
    error: str = "quorum not reached"


@dataclass(frozen=True, slots=True)
class Rejected:
    """A request the node refuses as malformed (a 400)."""

    message: str


@dataclass(frozen=True, slots=True)
class TooManySiblings:
    """A write refused because the key would hold more than `limit` versions (a 409).

    `siblings` counts the versions the write would have left (tombstones included),
    the new one among them; nothing was stored.
    """

    siblings: int
    limit: int


@dataclass(frozen=True, slots=True)
class RecordTooLarge:
    """A write refused because the key's encoded state would exceed `limit` bytes (a 413).

    Every state must fit the internode frames it travels in (`storage.limits`); nothing
    was stored. A write whose context covers the siblings leaves one version.
    """

    size: int
    limit: int


@dataclass(frozen=True, slots=True)
class StorageFull:
    """A write this node cannot make durable: its disk or database map is full (a 507).

    Reads keep working; writes here are refused until a commit succeeds again.
    """

    error: str


@dataclass(frozen=True, slots=True)
class ListOk:
    """A page of keys (user keys, in order) and where the next page starts (None: done)."""

    keys: tuple[bytes, ...]
    cursor: tuple[int, bytes] | None


@dataclass(frozen=True, slots=True)
class LimitExceeded:
    """A data-type update refused because the state would pass a bound (a 413), such
    as the number of elements a set may hold. Nothing was stored."""

    what: str
    size: int
    limit: int


WriteRefused = LimitExceeded | TooManySiblings | RecordTooLarge | Rejected | StorageFull

ClientResponse = (WriteOk | ReadOk | NotFound | QuorumFailed | Rejected | TooManySiblings
                  | RecordTooLarge | StorageFull | LimitExceeded | ListOk)
