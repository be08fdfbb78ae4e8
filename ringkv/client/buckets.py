"""Buckets, key listing and multi-get (contract 7) as pure functions.

Job
---
In the shape of ``ringkv.client.protocol``: ``build_*`` make the ``HttpRequest`` of
``/buckets/{bucket}/props``, ``/buckets/{bucket}/keys`` and ``/buckets/{bucket}/mget``;
``parse_*`` read the answers or raise the ``RingkvError`` they stand for.

* Properties: ``r``, ``w`` (1..N), ``ttl`` (default TTL in whole seconds),
  ``conflict`` (``siblings`` or ``lww``) and ``max_siblings``; None (JSON null) clears
  one back to the cluster's default. Reading them gives every property, the defaults
  for a bucket never configured.
* Listing: a page is ``{"keys": [...], "cursor": ... | null}``; keys come
  percent-encoded and are handed back decoded: ``str`` when they are UTF-8, ``bytes``
  otherwise, the two types every method of the client takes as a key.
* Multi-get: ``{"keys": [...]}`` (1 to `MAX_MGET_KEYS` keys, percent-encoded) answered
  by one result per key, in the order asked: what a GET of it would have said, or a 503
  for a key whose read did not reach its quorum.

Invariants: a listing page that hands back the cursor it was given is refused
(`ServerError`), so following cursors always advances; a multi-get answer must hold
one result per key asked, each naming that key, with a status of 200, 300, 404 or 503
and values that agree with it, or it is a `ServerError`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote_to_bytes

from ringkv.client.errors import QuorumError, ServerError
from ringkv.client.failover import Resend
from ringkv.client.protocol import (
    DEFAULT_BUCKET,
    DEFAULT_CONTENT_TYPE,
    JSON_HEADERS,
    HttpRequest,
    HttpResponse,
    Quorum,
    Versions,
    bucket_path,
    decode_base64,
    header_value,
    json_body,
    key_bytes,
    parse_none,
    parse_object,
    query,
)

__all__ = [
    "BUCKET_PROPS",
    "MAX_MGET_KEYS",
    "MGetResult",
    "build_bucket_props",
    "build_keys_page",
    "build_mget",
    "build_set_bucket_props",
    "decode_key",
    "parse_bucket_props",
    "parse_keys_page",
    "parse_mget",
    "parse_set_bucket_props",
]

MAX_MGET_KEYS = 100
MAX_PAGE = 1000
BUCKET_PROPS = ("r", "w", "ttl", "conflict", "max_siblings")
CONFLICT_MODES = ("siblings", "lww")

Key = str | bytes


@dataclass(frozen=True)
class MGetResult(Versions):
    """One key's part of a multi-get: what a `get` of it would have said.

    `status` is 200 (one value), 300 (siblings), 404 (no live value) or 503 when this
    key's read did not reach its quorum (`error` says why; `values` is empty and
    `value` raises the `QuorumError`, so a failed read is never taken for a miss).
    """

    key: Key
    status: int
    values: list[bytes] = field(default_factory=list)
    context: str | None = None
    content_types: list[str] = field(default_factory=list)
    etag: str | None = None
    error: str | None = None

    @property
    def value(self) -> bytes | None:
        if self.status == 503:
            raise QuorumError(None, None, self.error or "read quorum not reached")
        return super().value


# ------------------------------------------------------------------------- properties


def build_bucket_props(bucket: str | None = None) -> HttpRequest:
    return HttpRequest(
        "GET", bucket_path(bucket) + "/props", headers=(("Accept", "application/json"),),
        resend=Resend.ANY_FAILURE,
    )


def parse_bucket_props(resp: HttpResponse) -> dict[str, Any]:
    return parse_object(resp)


def _positive(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def props_document(props: Mapping[str, object]) -> dict[str, object]:
    """Validate bucket properties into the JSON the node takes; None clears one (the
    bucket takes the cluster's default again)."""
    unknown = sorted(set(props) - set(BUCKET_PROPS))
    if unknown:
        raise TypeError(f"unknown bucket properties {unknown}; known: {list(BUCKET_PROPS)}")
    if not props:
        raise ValueError(f"give at least one bucket property of {list(BUCKET_PROPS)}")
    doc: dict[str, object] = {}
    for name in BUCKET_PROPS:
        if name not in props:
            continue
        value = props[name]
        if value is None:
            doc[name] = None
        elif name == "conflict":
            if value not in CONFLICT_MODES:
                raise ValueError(f"conflict must be one of {list(CONFLICT_MODES)}, got {value!r}")
            doc[name] = value
        else:  # r and w are a number of replicas here (1..N): the node stores numbers
            doc[name] = _positive(name, value)
    return doc


def build_set_bucket_props(bucket: str | None, props: Mapping[str, object]) -> HttpRequest:
    """Set some properties of a bucket; the others keep their values. Setting the same
    properties twice leaves the same properties, so the request may be sent again."""
    return HttpRequest(
        "PUT", bucket_path(bucket) + "/props", headers=JSON_HEADERS,
        body=json_body(props_document(props)), resend=Resend.ANY_FAILURE,
    )


def parse_set_bucket_props(resp: HttpResponse) -> None:
    parse_none(resp)


# ---------------------------------------------------------------------------- listing


def build_keys_page(
    bucket: str | None = DEFAULT_BUCKET,
    limit: int = 100,
    cursor: str | None = None,
    r: Quorum | None = None,
    timeout: float | None = None,
) -> HttpRequest:
    """One page of a bucket's keys, from `cursor` (None: the first page); `r` replicas
    of each range must answer (the node's default when None)."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be an integer from 1 to {MAX_PAGE}, got {limit!r}")
    params, transport_timeout = query(("r", r), timeout)
    params.insert(0, ("limit", str(limit)))
    if cursor is not None:
        params.insert(1, ("cursor", header_value("cursor", cursor)))
    return HttpRequest(
        "GET", bucket_path(bucket) + "/keys", tuple(params),
        (("Accept", "application/json"),), timeout=transport_timeout,
        resend=Resend.ANY_FAILURE,
    )


def decode_key(encoded: str) -> Key:
    """A percent-encoded key of an answer: ``str`` when it is UTF-8, else ``bytes``."""
    raw = unquote_to_bytes(encoded)
    if not raw:
        raise ValueError("empty key")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw


def parse_keys_page(
    resp: HttpResponse, sent_cursor: str | None = None
) -> tuple[list[Key], str | None]:
    """The keys of a page and the cursor of the next (None: that was the last page)."""
    doc = parse_object(resp)
    keys, cursor = doc.get("keys"), doc.get("cursor")
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise ServerError(resp.status, "key page without a list of keys")
    if cursor is not None and (not isinstance(cursor, str) or not cursor):
        raise ServerError(resp.status, "key page with a malformed cursor")
    if cursor is not None and cursor == sent_cursor:
        raise ServerError(resp.status, "key page handed back its own cursor: it would not end")
    try:
        return [decode_key(k) for k in keys], cursor
    except ValueError:
        raise ServerError(resp.status, "key page with an empty key") from None


# -------------------------------------------------------------------------- multi-get


def build_mget(
    keys: Sequence[Key],
    r: Quorum | None = None,
    timeout: float | None = None,
    *,
    bucket: str | None = None,
) -> HttpRequest:
    """Read 1 to `MAX_MGET_KEYS` keys of one bucket in one request."""
    if isinstance(keys, str | bytes):
        raise TypeError("keys must be a sequence of keys, not one key")
    encoded = [quote(key_bytes(k), safe="") for k in keys]
    if not 1 <= len(encoded) <= MAX_MGET_KEYS:
        raise ValueError(f"mget takes 1 to {MAX_MGET_KEYS} keys, got {len(encoded)}")
    params, transport_timeout = query(("r", r), timeout)
    return HttpRequest(
        "POST", bucket_path(bucket) + "/mget", tuple(params), JSON_HEADERS,
        json_body({"keys": encoded}), transport_timeout, Resend.ANY_FAILURE,
    )


def _optional_str(item: dict[str, Any], name: str) -> str | None:
    value = item.get(name)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{name} is not a string")
    return value or None


def _result(item: object, key: Key) -> MGetResult:
    if not isinstance(item, dict):
        raise ValueError("result is not an object")
    encoded, status = item.get("key"), item.get("status")
    values, types = item.get("values", []), item.get("content_types")
    if not isinstance(encoded, str) or unquote_to_bytes(encoded) != key_bytes(key):
        raise ValueError("result names another key")
    if isinstance(status, bool) or status not in (200, 300, 404, 503):
        raise ValueError(f"bad status {status!r}")
    if not isinstance(values, list):
        raise ValueError("values is not a list")
    if (status == 200 and len(values) != 1) or (status == 300 and not values) or (
        status in (404, 503) and values
    ):
        raise ValueError(f"{len(values)} values with status {status}")
    if types is None:
        types = [DEFAULT_CONTENT_TYPE] * len(values)
    if not isinstance(types, list) or len(types) != len(values) or not all(
        isinstance(t, str) for t in types
    ):
        raise ValueError("content_types do not match the values")
    return MGetResult(
        key, status, [decode_base64(v) for v in values], _optional_str(item, "context"),
        [t or DEFAULT_CONTENT_TYPE for t in types], _optional_str(item, "etag"),
        _optional_str(item, "error") if status == 503 else None,
    )


def parse_mget(resp: HttpResponse, keys: Sequence[Key]) -> list[MGetResult]:
    """One result per key asked, in that order."""
    doc = parse_object(resp)
    results = doc.get("results")
    if not isinstance(results, list) or len(results) != len(keys):
        raise ServerError(resp.status, f"multi-get answer without {len(keys)} results")
    try:
        return [_result(item, key) for item, key in zip(results, keys, strict=True)]
    except (ValueError, TypeError) as exc:
        raise ServerError(resp.status, f"malformed multi-get result: {exc}") from None
