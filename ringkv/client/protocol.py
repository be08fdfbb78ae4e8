"""The ringkv HTTP API as pure functions: requests built, answers parsed, errors typed.

Job
---
Everything the clients in ``ringkv.client`` know about the wire, with no I/O: ``build_*``
turn a call into an ``HttpRequest``, ``parse_*`` turn an ``HttpResponse`` into a result
(``GetResult``, a context, a JSON document) or raise the ``RingkvError`` it stands for
(``error_for``, in ``ringkv.client.errors``). This module holds the key-value half
(contract 2, conditional writes of contract 6) and what every request shares (paths,
buckets, quorums, timeouts); ``ringkv.client.datatypes`` (counters, sets) and
``ringkv.client.buckets`` (bucket properties, key listing, multi-get) build on it the
same way. ``ringkv.client`` re-exports the public names; import them from there.

Conventions:
- keys are ``str`` (UTF-8) or ``bytes``, percent-encoded into ``/kv/{key}`` with
  every reserved byte quoted, so any byte string works;
- ``bucket`` None addresses the plain paths (bucket ``default``); a name
  (``[A-Za-z0-9_.-]{1,64}``) addresses ``/buckets/{bucket}/...``;
- ``r`` / ``w`` are an int (1..N) or ``"one"``, ``"quorum"``, ``"all"``;
- ``timeout`` is in seconds (float). It is sent to the coordinator as ``?timeout=ms``
  and the HTTP request itself is given one extra second to carry the answer back.

Invariants
----------
* No I/O, clock or randomness: the same arguments give the same request, the same answer
  the same result or error, so all of it can be table-tested without a server.
* Bad arguments (an empty or non-str/bytes key, a bad bucket, ``r``/``w``, ``ttl``,
  ``timeout`` or ETag) raise ``TypeError`` / ``ValueError`` while building, before
  anything is sent.
* Every unexpected answer becomes a ``RingkvError``: 503 -> ``QuorumError`` (with ``acks`` /
  ``required`` when the body gives them), 401 / 403 -> ``AuthError`` (an admin endpoint
  wanted the admin token, or a node with client tokens a token whose role allows
  the request), 412 -> ``PreconditionFailedError``, other 4xx ->
  ``BadRequestError``, anything else, including a malformed success body, -> ``ServerError``.
* An ``HttpRequest.path`` is already percent-encoded: every byte of a key survives.
* Every request says whether it may be sent again to another node (``resend``,
  ``ringkv.client.failover.Resend``): reads may, writes of ``/kv/`` only when they
  certainly never left.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote

from ringkv.client.errors import (
    AuthError,
    BadRequestError,
    ConflictError,
    LimitExceededError,
    PreconditionFailedError,
    QuorumError,
    RecordTooLargeError,
    RingkvError,
    ServerError,
    StorageFullError,
    TooManySiblingsError,
    TransportError,
    decode_json,
    error_for,
)
from ringkv.client.failover import Resend
from ringkv.client.placement import stored_key

__all__ = [
    "AuthError",
    "BadRequestError",
    "ConflictError",
    "GetResult",
    "HttpRequest",
    "HttpResponse",
    "LimitExceededError",
    "PreconditionFailedError",
    "QuorumError",
    "RecordTooLargeError",
    "RingkvError",
    "ServerError",
    "StorageFullError",
    "TooManySiblingsError",
    "TransportError",
    "authorized",
    "bucket_name",
    "build_admin",
    "build_cluster",
    "build_delete",
    "build_get",
    "build_health",
    "build_lookup",
    "build_metrics",
    "build_put",
    "decode_base64",
    "error_for",
    "etag_header",
    "key_bytes",
    "key_path",
    "parse_delete",
    "parse_get",
    "parse_admin",
    "parse_json",
    "parse_lookup",
    "parse_metrics",
    "parse_multipart",
    "parse_put",
    "quorum_param",
    "resource_path",
]

TIMEOUT_MARGIN = 1.0  # seconds the HTTP request outlives the coordinator's own timeout
CONTEXT_HEADER = "X-Context"
DEFAULT_CONTENT_TYPE = "application/octet-stream"
DEFAULT_BUCKET = "default"
QUORUM_NAMES = ("one", "quorum", "all")
BUCKET_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,64}")
MAX_HEADER_CHARS = 64 << 10  # a context or ETag longer than any node hands back

Quorum = int | str


# ------------------------------------------------------------------------------ results


class Versions:
    """What `found`, `conflict` and `value` mean for any read result holding `values`."""

    __slots__ = ()
    values: list[bytes]

    @property
    def found(self) -> bool:
        return bool(self.values)

    @property
    def conflict(self) -> bool:
        """True when there are concurrent versions (siblings) to reconcile."""
        return len(self.values) > 1

    @property
    def value(self) -> bytes | None:
        """The value when there is exactly one; None when not found.

        Raises `ConflictError` when there are siblings: use `values` then.
        """
        if len(self.values) > 1:
            raise ConflictError(f"{len(self.values)} siblings: read .values and merge them")
        return self.values[0] if self.values else None


@dataclass(frozen=True)
class GetResult(Versions):
    """What a read found: zero values (not found), one, or several siblings."""

    values: list[bytes] = field(default_factory=list)
    content_types: list[str] = field(default_factory=list)
    context: str | None = None  # pass back on the next write to supersede what was read
    etag: str | None = None  # pass back as `if_match` for a conditional write


# ----------------------------------------------------- pure protocol: building requests


@dataclass(frozen=True)
class HttpRequest:
    """One HTTP request, transport-independent. `path` is already percent-encoded."""

    method: str
    path: str
    params: tuple[tuple[str, str], ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None
    timeout: float | None = None  # transport timeout in seconds; None: client default
    resend: Resend = Resend.UNDELIVERED  # may another node be sent it after a failure?
    # The stored key (`placement.stored_key`) of a keyed request, which a ring-aware
    # client sends to one of the key's replicas first; None for the others.
    route: bytes | None = None
    # The one node to send this to (one of the client's URLs), for a request about
    # that node itself; None: the failover policy chooses.
    node: str | None = None


@dataclass(frozen=True)
class HttpResponse:
    """One HTTP answer; `headers` must be case-insensitive (e.g. `httpx.Headers`)."""

    status: int
    headers: Mapping[str, str]
    body: bytes


def key_bytes(key: str | bytes) -> bytes:
    """The key as the server sees it: bytes (str keys are UTF-8)."""
    if isinstance(key, str):
        raw = key.encode("utf-8")
    elif isinstance(key, bytes | bytearray | memoryview):
        raw = bytes(key)
    else:
        raise TypeError(f"key must be str or bytes, not {type(key).__name__}")
    if not raw:
        raise ValueError("key must not be empty")
    return raw


def _segment(raw: bytes | str) -> str:
    """One path segment, every byte outside the unreserved set percent-encoded.

    ``.`` and ``..`` are sent as ``%2E`` / ``%2E%2E``: as literal dot segments, URL
    normalisation would remove them from the path.
    """
    quoted = quote(raw, safe="")
    if quoted in (".", ".."):
        quoted = quoted.replace(".", "%2E")
    return quoted


def bucket_name(bucket: str) -> str:
    """Validate a bucket name: ``[A-Za-z0-9_.-]{1,64}``."""
    if not isinstance(bucket, str):
        raise TypeError(f"bucket must be a str, not {type(bucket).__name__}")
    if BUCKET_PATTERN.fullmatch(bucket) is None:
        raise ValueError(f"bucket must match [A-Za-z0-9_.-]{{1,64}}, got {bucket!r}")
    return bucket


def bucket_path(bucket: str | None) -> str:
    """``/buckets/{bucket}``; None is bucket ``default``."""
    return "/buckets/" + _segment(bucket_name(DEFAULT_BUCKET if bucket is None else bucket))


def resource_path(kind: str, key: str | bytes, bucket: str | None = None) -> str:
    """``/{kind}/{key}`` (bucket None) or ``/buckets/{bucket}/{kind}/{key}``."""
    prefix = "" if bucket is None else bucket_path(bucket)
    return f"{prefix}/{kind}/{_segment(key_bytes(key))}"


def key_path(key: str | bytes, bucket: str | None = None) -> str:
    """``/kv/{key}`` (or ``/buckets/{bucket}/kv/{key}``), the key percent-encoded."""
    return resource_path("kv", key, bucket)


def key_route(kind: str, key: str | bytes, bucket: str | None = None) -> bytes:
    """The stored key of a request's key (``HttpRequest.route``); `kind` is ``kv``,
    ``counter`` or ``set``."""
    return stored_key(DEFAULT_BUCKET if bucket is None else bucket, kind, key_bytes(key))


def quorum_param(name: str, value: Quorum | None) -> str | None:
    """Validate an ``r``/``w`` value: an int >= 1 or one/quorum/all."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
        return str(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in QUORUM_NAMES:
            return text
        if text.isascii() and text.isdigit() and int(text) >= 1:
            return str(int(text))
    raise ValueError(f"{name} must be a positive integer or one/quorum/all, got {value!r}")


def header_value(name: str, value: str) -> str:
    """Validate a value sent in a header (a context, an ETag, an idempotency key)."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")
    if not value or len(value) > MAX_HEADER_CHARS or not value.isascii():
        raise ValueError(f"{name} must be 1 to {MAX_HEADER_CHARS} ASCII characters")
    if any(ord(c) < 0x20 or c == "\x7f" for c in value) or value != value.strip():
        raise ValueError(f"{name} must not hold control characters or surrounding spaces")
    return value


def query(
    quorum: tuple[str, Quorum | None] | None, timeout: float | None
) -> tuple[list[tuple[str, str]], float | None]:
    """The query of a request taking ``r`` or ``w`` and ``timeout``, and its transport
    timeout (the coordinator's plus `TIMEOUT_MARGIN`; None: the client default)."""
    params: list[tuple[str, str]] = []
    if quorum is not None and (value := quorum_param(*quorum)) is not None:
        params.append((quorum[0], value))
    if timeout is None:
        return params, None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise TypeError(f"timeout must be a number of seconds, not {type(timeout).__name__}")
    if not math.isfinite(timeout) or timeout <= 0:
        raise ValueError(f"timeout must be positive, got {timeout}")
    params.append(("timeout", str(max(1, round(timeout * 1000)))))
    return params, timeout + TIMEOUT_MARGIN


def json_body(doc: object) -> bytes:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


JSON_HEADERS = (("Content-Type", "application/json"), ("Accept", "application/json"))


def read_request(
    path: str, r: Quorum | None, timeout: float | None, route: bytes | None = None
) -> HttpRequest:
    """A quorum read of `path` (a value, a counter or a set): JSON answers, and safe to
    send again on any failure."""
    params, transport_timeout = query(("r", r), timeout)
    return HttpRequest(
        "GET",
        path,
        tuple(params),
        (("Accept", "application/json"),),
        timeout=transport_timeout,
        resend=Resend.ANY_FAILURE,
        route=route,
    )


def build_get(
    key: str | bytes,
    r: Quorum | None = None,
    timeout: float | None = None,
    *,
    bucket: str | None = None,
) -> HttpRequest:
    return read_request(key_path(key, bucket), r, timeout, key_route("kv", key, bucket))


def etag_header(etag: str) -> str:
    """An ETag as `If-Match` carries it: as read (``"..."``, ``W/"..."`` or ``*``), or,
    given bare (a shell strips the quotes off ``--if-match "..."``), quoted again."""
    value = header_value("if_match", etag)
    if value == "*" or value.startswith(('"', 'W/"')):
        return value
    if any(c in value for c in '", \t'):
        raise ValueError(f"if_match must be an ETag as a read returned it, got {etag!r}")
    return f'"{value}"'


def _conditions(if_match: str | None, if_none_match: bool) -> list[tuple[str, str]]:
    if if_match is not None and if_none_match:
        raise ValueError("give if_match or if_none_match, not both")
    if if_match is not None:
        return [("If-Match", etag_header(if_match))]
    return [("If-None-Match", "*")] if if_none_match else []


def build_put(
    key: str | bytes,
    value: bytes | str,
    context: str | None = None,
    w: Quorum | None = None,
    ttl: int | None = None,
    content_type: str | None = None,
    timeout: float | None = None,
    *,
    bucket: str | None = None,
    if_match: str | None = None,
    if_none_match: bool = False,
) -> HttpRequest:
    """A write; `if_match` (an ETag from a read) or `if_none_match` make it conditional
    (contract 6: applied only if the coordinator's read agrees, else 412)."""
    if isinstance(value, str):
        body = value.encode("utf-8")
    elif isinstance(value, bytes | bytearray | memoryview):
        body = bytes(value)
    else:
        raise TypeError(f"value must be bytes, not {type(value).__name__}")
    params, transport_timeout = query(("w", w), timeout)
    if ttl is not None:
        if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl <= 0:
            raise ValueError(f"ttl must be a positive whole number of seconds, got {ttl!r}")
        params.append(("ttl", str(ttl)))
    headers = [("Content-Type", content_type or DEFAULT_CONTENT_TYPE)]
    if context:
        headers.append((CONTEXT_HEADER, header_value("context", context)))
    headers += _conditions(if_match, if_none_match)
    return HttpRequest(
        "PUT", key_path(key, bucket), tuple(params), tuple(headers), body, transport_timeout,
        route=key_route("kv", key, bucket),
    )


def build_delete(
    key: str | bytes,
    context: str | None = None,
    w: Quorum | None = None,
    timeout: float | None = None,
    *,
    bucket: str | None = None,
    if_match: str | None = None,
) -> HttpRequest:
    params, transport_timeout = query(("w", w), timeout)
    headers = [(CONTEXT_HEADER, header_value("context", context))] if context else []
    headers += _conditions(if_match, False)
    return HttpRequest(
        "DELETE", key_path(key, bucket), tuple(params), tuple(headers),
        timeout=transport_timeout, route=key_route("kv", key, bucket),
    )


def build_lookup(key: str | bytes) -> HttpRequest:
    return HttpRequest(
        "GET", "/ring/lookup?key=" + quote(key_bytes(key), safe=""), resend=Resend.ANY_FAILURE
    )


def build_cluster() -> HttpRequest:
    """`GET /cluster`: any node's view will do, so another node may answer it."""
    return HttpRequest("GET", "/cluster", resend=Resend.ANY_FAILURE)


def build_health() -> HttpRequest:
    """`GET /health` of the first node: a node's own health, never another's."""
    return HttpRequest("GET", "/health", resend=Resend.PINNED)


def build_metrics() -> HttpRequest:
    """`GET /metrics` of the first node: a node's own counters, never another's."""
    return HttpRequest("GET", "/metrics", resend=Resend.PINNED)


def remove_path(node_id: str) -> str:
    return "/cluster/remove/" + quote(node_id, safe="")


def build_admin(
    method: str, path: str, admin_token: str | None, resend: Resend = Resend.UNDELIVERED
) -> HttpRequest:
    """A request to an admin endpoint, carrying the admin token when one is given."""
    if admin_token is not None and not isinstance(admin_token, str):
        raise TypeError("admin_token must be a str")
    token = (admin_token or "").strip()
    if any(c in token for c in "\r\n\0"):
        raise ValueError("admin_token must not contain line breaks or NUL")
    headers = (("Authorization", f"Bearer {token}"),) if token else ()
    return HttpRequest(method, path, headers=headers, resend=resend)


def authorized(req: HttpRequest, token: str | None) -> HttpRequest:
    """`req` carrying `token` (checked by the client) as ``Authorization: Bearer``,
    unless it has an ``Authorization`` of its own (an admin request's) or `token` is
    None. A node with client tokens (``--tokens-file``) needs one on every request."""
    if not token or any(name.lower() == "authorization" for name, _ in req.headers):
        return req
    return replace(req, headers=(*req.headers, ("Authorization", f"Bearer {token}")))


# ------------------------------------------------------ pure protocol: parsing answers


def _etag(resp: HttpResponse) -> str | None:
    return resp.headers.get("ETag") or None


def parse_get(resp: HttpResponse) -> GetResult:
    context = resp.headers.get(CONTEXT_HEADER) or None
    if resp.status == 200:
        ctype = resp.headers.get("Content-Type") or DEFAULT_CONTENT_TYPE
        return GetResult([resp.body], [ctype], context, _etag(resp))
    if resp.status == 404:
        return GetResult([], [], context, _etag(resp))
    if resp.status == 300:
        ctype = resp.headers.get("Content-Type", "")
        if _media_type(ctype) == "multipart/mixed":
            siblings = parse_multipart(resp.body, ctype)
        else:
            siblings, body_context = _parse_json_siblings(resp.body)
            context = body_context or context
        return GetResult(
            [v for v, _ in siblings], [t for _, t in siblings], context, _etag(resp)
        )
    raise error_for(resp)


def parse_put(resp: HttpResponse) -> str:
    if resp.status in (200, 201, 204):
        return resp.headers.get(CONTEXT_HEADER, "")
    raise error_for(resp)


def parse_delete(resp: HttpResponse) -> None:
    if resp.status in (200, 204, 404):  # deleting what is not there is fine
        return
    raise error_for(resp)


def parse_none(resp: HttpResponse) -> None:
    """A write answered with no content (204; 200 and 201 are taken as success too)."""
    if resp.status in (200, 201, 204):
        return
    raise error_for(resp)


def parse_json(resp: HttpResponse) -> Any:
    if 200 <= resp.status < 300:
        if not resp.body.strip():
            return {}
        try:
            return decode_json(resp.body)
        except ValueError:
            raise ServerError(resp.status, "answer is not valid JSON") from None
    raise error_for(resp)


def parse_object(resp: HttpResponse) -> dict[str, Any]:
    """A 2xx answer that must be a JSON object."""
    doc = parse_json(resp)
    if not isinstance(doc, dict):
        raise ServerError(resp.status, "answer is not a JSON object")
    return doc


def parse_lookup(resp: HttpResponse) -> list[str]:
    nodes = parse_object(resp).get("preference_list")
    if not isinstance(nodes, list) or not all(isinstance(n, str) for n in nodes):
        raise ServerError(resp.status, "lookup answer without a preference list")
    return nodes


def parse_admin(resp: HttpResponse) -> dict[str, Any]:
    """The answer of leave or remove: its JSON object (anything else as ``result``)."""
    doc = parse_json(resp)
    return dict(doc) if isinstance(doc, dict) else {"result": doc}


def parse_metrics(resp: HttpResponse) -> str:
    if resp.status != 200:
        raise error_for(resp)
    return resp.body.decode("utf-8", "replace")


def parse_multipart(body: bytes, content_type: str) -> list[tuple[bytes, str]]:
    """Split a ``multipart/mixed`` body into (value, content type) pairs."""
    boundary = _media_params(content_type).get("boundary")
    if not boundary:
        raise ServerError(300, "multipart answer without a boundary")
    delimiter = b"\r\n--" + boundary.encode("latin-1", "replace")
    chunks = (b"\r\n" + body).split(delimiter)
    parts: list[tuple[bytes, str]] = []
    for chunk in chunks[1:]:  # chunks[0] is the preamble
        if chunk.startswith(b"--"):
            break  # close delimiter
        _, _, chunk = chunk.partition(b"\r\n")  # rest of the delimiter line
        if chunk.startswith(b"\r\n"):
            head, content = b"", chunk[2:]
        else:
            head, sep, content = chunk.partition(b"\r\n\r\n")
            if not sep:
                raise ServerError(300, "malformed multipart answer")
        ctype = DEFAULT_CONTENT_TYPE
        for line in head.split(b"\r\n"):
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-type":
                ctype = value.strip()
        parts.append((content, ctype))
    return parts


def _parse_json_siblings(body: bytes) -> tuple[list[tuple[bytes, str]], str | None]:
    try:
        doc = decode_json(body)
        siblings = [
            (
                decode_base64(item["value"]),
                str(item.get("content_type") or DEFAULT_CONTENT_TYPE),
            )
            for item in doc["siblings"]
        ]
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ServerError(300, "malformed siblings document") from None
    context = doc.get("context")
    return siblings, context if isinstance(context, str) and context else None


def decode_base64(text: str) -> bytes:
    """A base64 value of an answer (standard or URL-safe alphabet, padding optional)."""
    if not isinstance(text, str):
        raise TypeError("base64 value must be a string")
    padded = text + "=" * (-len(text) % 4)
    try:
        if "-" in text or "_" in text:
            return base64.urlsafe_b64decode(padded)
        return base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(str(exc)) from None


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def _media_params(content_type: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for item in content_type.split(";")[1:]:
        name, _, value = item.partition("=")
        params[name.strip().lower()] = value.strip().strip('"')
    return params
