"""Every operation of the client, written once, as a plan of requests.

Job
---
A *plan* is a generator that yields what it needs done -- an `HttpRequest` to send, or
a `Sleep` -- and is sent back the `HttpResponse` of each request; it returns the
operation's result (or raises the `RingkvError` an answer stands for). Requests are
built and answers parsed by the pure functions of ``ringkv.client.protocol``,
``.datatypes`` and ``.buckets``; the multi-step operations are written here, once:
`srem` without a context (read the set, then remove what the read observed) and the
key listing (`Listing`: follow the cursor page by page); `update` (read, merge the
siblings, write back with the read's context, retry) is in
``ringkv.client.update_plan``, built from `get` and `put`.

`Client` and `AsyncClient` run a plan (``ringkv.client.runner``): each public method
is one line naming its plan, so the two clients differ solely in how a request
travels (blocking or awaited) and how they pause.

Invariants
----------
* A plan does no I/O, keeps no clock and touches no client state: what it needs (the
  admin token of the admin requests) is an argument. Only `incr` draws a fresh
  idempotency key, when the caller gives none.
* Arguments are checked while the first request is built, before anything is sent, as
  the ``build_*`` functions check them; a plan that fails on an answer raises at once
  and yields nothing more.
* A plan yields a request only after the answer to the previous one, so a request of a
  multi-step operation always carries what the previous answer said (a context).
"""

from __future__ import annotations

from collections.abc import Generator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar

from ringkv.client.buckets import (
    Key,
    MGetResult,
    build_bucket_props,
    build_keys_page,
    build_mget,
    build_set_bucket_props,
    parse_bucket_props,
    parse_keys_page,
    parse_mget,
    parse_set_bucket_props,
)
from ringkv.client.datatypes import (
    SetResult,
    build_counter,
    build_incr,
    build_set_update,
    build_smembers,
    observed,
    parse_counter,
    parse_incr,
    parse_set_update,
    parse_smembers,
)
from ringkv.client.failover import Resend
from ringkv.client.protocol import (
    DEFAULT_BUCKET,
    GetResult,
    HttpRequest,
    HttpResponse,
    Quorum,
    authorized,
    build_admin,
    build_cluster,
    build_delete,
    build_get,
    build_health,
    build_lookup,
    build_metrics,
    build_put,
    parse_admin,
    parse_delete,
    parse_get,
    parse_lookup,
    parse_metrics,
    parse_object,
    parse_put,
    remove_path,
)
from ringkv.client.transport import new_idempotency_key

__all__ = [
    "Listing",
    "Plan",
    "Sleep",
    "bucket_props",
    "cluster",
    "counter",
    "delete",
    "get",
    "health",
    "incr",
    "keys_page",
    "leave",
    "lookup",
    "metrics",
    "mget",
    "put",
    "remove",
    "sadd",
    "set_bucket_props",
    "set_update",
    "smembers",
    "srem",
]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Sleep:
    """A pause a plan asks for (a backoff before trying again), in seconds."""

    seconds: float


# What a plan yields, what it is sent back for a request (nothing for a `Sleep`), and
# what it returns.
Plan: TypeAlias = Generator[HttpRequest | Sleep, HttpResponse, T]


# ------------------------------------------------------------------------- key-value


def get(
    key: Key, r: Quorum | None = None, timeout: float | None = None, *, bucket: str | None = None
) -> Plan[GetResult]:
    return parse_get((yield build_get(key, r, timeout, bucket=bucket)))


def put(
    key: Key,
    value: bytes,
    context: str | None = None,
    w: Quorum | None = None,
    ttl: int | None = None,
    content_type: str | None = None,
    timeout: float | None = None,
    *,
    bucket: str | None = None,
    if_match: str | None = None,
    if_none_match: bool = False,
) -> Plan[str]:
    req = build_put(key, value, context, w, ttl, content_type, timeout, bucket=bucket,
                    if_match=if_match, if_none_match=if_none_match)
    return parse_put((yield req))


def delete(
    key: Key,
    context: str | None = None,
    w: Quorum | None = None,
    timeout: float | None = None,
    *,
    bucket: str | None = None,
    if_match: str | None = None,
) -> Plan[None]:
    parse_delete((yield build_delete(key, context, w, timeout, bucket=bucket,
                                     if_match=if_match)))


# ------------------------------------------------------------------ counters, sets


def incr(
    key: Key,
    amount: int = 1,
    idempotency_key: str | None = None,
    *,
    w: Quorum | None = None,
    timeout: float | None = None,
    bucket: str | None = None,
) -> Plan[None]:
    """One increment; without `idempotency_key`, a fresh one, so that the client's own
    resends of this increment are applied at most once."""
    token = idempotency_key if idempotency_key is not None else new_idempotency_key()
    parse_incr((yield build_incr(key, amount, token, w, timeout, bucket=bucket)))


def counter(
    key: Key, *, r: Quorum | None = None, timeout: float | None = None,
    bucket: str | None = None,
) -> Plan[int | None]:
    return parse_counter((yield build_counter(key, r, timeout, bucket=bucket)))


def smembers(
    key: Key, *, r: Quorum | None = None, timeout: float | None = None,
    bucket: str | None = None,
) -> Plan[SetResult]:
    return parse_smembers((yield build_smembers(key, r, timeout, bucket=bucket)))


def set_update(
    key: Key,
    add: Iterable[str] = (),
    remove: Iterable[str] = (),
    context: str | None = None,
    *,
    w: Quorum | None = None,
    timeout: float | None = None,
    bucket: str | None = None,
) -> Plan[None]:
    req = build_set_update(key, add, remove, context, w, timeout, bucket=bucket)
    parse_set_update((yield req))


def sadd(
    key: Key,
    elements: Sequence[str],
    *,
    w: Quorum | None = None,
    timeout: float | None = None,
    bucket: str | None = None,
) -> Plan[None]:
    yield from set_update(key, elements, w=w, timeout=timeout, bucket=bucket)


def srem(
    key: Key,
    elements: Sequence[str],
    *,
    context: str | None = None,
    r: Quorum | None = None,
    w: Quorum | None = None,
    timeout: float | None = None,
    bucket: str | None = None,
) -> Plan[list[str]]:
    """Remove `elements`; the ones whose removal was sent. Without `context`, the set
    is read first and the remove covers exactly what that read observed: an element
    it did not find is not sent, and nothing at all when it found none of them."""
    if context is None:
        seen = yield from smembers(key, r=r, timeout=timeout, bucket=bucket)
        removing, context = observed(elements, seen), seen.context
        if not removing:
            return []
    else:
        removing = list(elements)
    yield from set_update(key, (), removing, context, w=w, timeout=timeout, bucket=bucket)
    return removing


# -------------------------------------------------------- buckets, listing, mget


def keys_page(
    bucket: str | None = DEFAULT_BUCKET,
    limit: int = 100,
    cursor: str | None = None,
    *,
    r: Quorum | None = None,
    timeout: float | None = None,
) -> Plan[tuple[list[Key], str | None]]:
    answer = yield build_keys_page(bucket, limit, cursor, r, timeout)
    return parse_keys_page(answer, cursor)


class Listing:
    """A bucket's keys, page after page, following the cursor each page hands on.

    `next_page` is the plan of the next page (its keys), None once a page said it was
    the last. A page's plan must be run before the next is asked for: it is the page's
    answer that moves the cursor.
    """

    __slots__ = ("_bucket", "_cursor", "_done", "_limit", "_r", "_timeout")

    def __init__(
        self, bucket: str | None, limit: int, r: Quorum | None, timeout: float | None
    ) -> None:
        self._bucket, self._limit, self._r, self._timeout = bucket, limit, r, timeout
        self._cursor: str | None = None
        self._done = False

    def next_page(self) -> Plan[list[Key]] | None:
        return None if self._done else self._page()

    def _page(self) -> Plan[list[Key]]:
        keys, self._cursor = yield from keys_page(
            self._bucket, self._limit, self._cursor, r=self._r, timeout=self._timeout)
        self._done = self._cursor is None
        return keys


def mget(
    keys: Sequence[Key],
    bucket: str | None = None,
    r: Quorum | None = None,
    timeout: float | None = None,
) -> Plan[list[MGetResult]]:
    keys = list(keys)
    return parse_mget((yield build_mget(keys, r, timeout, bucket=bucket)), keys)


def bucket_props(bucket: str | None = DEFAULT_BUCKET) -> Plan[dict[str, Any]]:
    return parse_bucket_props((yield build_bucket_props(bucket)))


def set_bucket_props(
    bucket: str | None, props: dict[str, object], admin_token: str | None
) -> Plan[None]:
    """A bucket-property write: an admin request, carrying `admin_token`."""
    req = build_set_bucket_props(bucket, props)
    parse_set_bucket_props((yield authorized(req, admin_token)))


# -------------------------------------------------------------------- the cluster


def cluster() -> Plan[dict[str, Any]]:
    return parse_object((yield build_cluster()))


def health() -> Plan[dict[str, Any]]:
    return parse_object((yield build_health()))


def lookup(key: Key) -> Plan[list[str]]:
    return parse_lookup((yield build_lookup(key)))


def leave(admin_token: str | None) -> Plan[dict[str, Any]]:
    """Ask the first node (and it alone: `Resend.PINNED`) to leave the cluster."""
    return parse_admin((yield build_admin("POST", "/cluster/leave", admin_token,
                                          Resend.PINNED)))


def remove(node_id: str, admin_token: str | None) -> Plan[dict[str, Any]]:
    return parse_admin((yield build_admin("POST", remove_path(node_id), admin_token)))


def metrics() -> Plan[str]:
    return parse_metrics((yield build_metrics()))
