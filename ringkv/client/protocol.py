"""The ringkv HTTP API as pure functions: requests built, answers parsed, errors typed.

Job
---
Everything the clients in ``ringkv.client`` know about the wire, with no I/O: ``build_*``
turn a call into an ``HttpRequest``, ``parse_*`` turn an ``HttpResponse`` into a result
(``GetResult``, a context, a JSON document) or raise the ``RingkvError`` it stands for
(``error_for``). ``ringkv.client`` re-exports the public names; import them from there.

Conventions:
- keys are ``str`` (UTF-8) or ``bytes``, percent-encoded into ``/kv/{key}`` with
  every reserved byte quoted, so any byte string works;
- ``r`` / ``w`` are an int (1..N) or ``"one"``, ``"quorum"``, ``"all"``;
- ``timeout`` is in seconds (float). It is sent to the coordinator as ``?timeout=ms``
  and the HTTP request itself is given one extra second to carry the answer back.

Invariants
----------
* No I/O, clock or randomness: the same arguments give the same request, the same answer
  the same result or error, so all of it can be table-tested without a server.
* Bad arguments (an empty or non-str/bytes key, a bad ``r``/``w``, ``ttl`` or ``timeout``)
  raise ``TypeError`` / ``ValueError`` while building, before anything is sent.
* Every unexpected answer becomes a ``RingkvError``: 503 -> ``QuorumError`` (with ``acks`` /
  ``required`` when the body gives them), 401 / 403 -> ``AuthError`` (an admin endpoint
  wanted the admin token), other 4xx -> ``BadRequestError``, anything else,
  including a malformed success body, -> ``ServerError``.
* An ``HttpRequest.path`` is already percent-encoded: every byte of a key survives.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

__all__ = [
    "AuthError",
    "BadRequestError",
    "ConflictError",
    "GetResult",
    "HttpRequest",
    "HttpResponse",
    "QuorumError",
    "RecordTooLargeError",
    "RingkvError",
    "ServerError",
    "StorageFullError",
    "TooManySiblingsError",
    "TransportError",
    "build_admin",
    "build_delete",
    "build_get",
    "build_lookup",
    "build_put",
    "error_for",
    "key_bytes",
    "key_path",
    "parse_delete",
    "parse_get",
    "parse_json",
    "parse_multipart",
    "parse_put",
    "quorum_param",
]

TIMEOUT_MARGIN = 1.0  # seconds the HTTP request outlives the coordinator's own timeout
CONTEXT_HEADER = "X-Context"
DEFAULT_CONTENT_TYPE = "application/octet-stream"
QUORUM_NAMES = ("one", "quorum", "all")

Quorum = int | str


# ------------------------------------------------------------------------------ errors


class RingkvError(Exception):
    """Base class of every error raised by this client."""


class QuorumError(RingkvError):
    """503: fewer than the required replicas answered in time (the write may still exist)."""

    status = 503

    def __init__(self, acks: int | None, required: int | None, message: str = "") -> None:
        self.acks = acks
        self.required = required
        self.message = message or "quorum not reached"
        detail = ""
        if acks is not None and required is not None:
            detail = f" ({acks} of {required} required replicas answered)"
        super().__init__(self.message + detail)


class BadRequestError(RingkvError):
    """A 4xx answer: the request was refused and changed nothing."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(f"{status}: {message}")


class AuthError(BadRequestError):
    """401 / 403: an admin endpoint refused the request (no admin token, or a wrong one,
    or no token configured and the client not on the node's loopback)."""


class TooManySiblingsError(BadRequestError):
    """409: the write would leave the key with more than `limit` versions; nothing changed.

    Read the key and write with its context (which covers the siblings): that always works.
    """

    def __init__(self, message: str, siblings: int, limit: int) -> None:
        self.siblings = siblings
        self.limit = limit
        super().__init__(409, message)


class RecordTooLargeError(BadRequestError):
    """413: the write would leave the key larger than every node can store and move
    (`size` bytes encoded, over `limit`); nothing changed."""

    def __init__(self, message: str, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(413, message)


class ServerError(RingkvError):
    """Any other unexpected answer (5xx other than 503, 501 not implemented, ...)."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(f"{status}: {message}")


class StorageFullError(ServerError):
    """507: the coordinating node's disk or storage map is full; the write was not
    taken. Reads still work; another node may take the write."""

    def __init__(self, message: str) -> None:
        super().__init__(507, message)


class TransportError(RingkvError):
    """The node could not be reached, or did not answer in time."""


class ConflictError(RingkvError):
    """`update` found siblings but was given no `merge` function to reconcile them."""


# ------------------------------------------------------------------------------ results


@dataclass(frozen=True)
class GetResult:
    """What a read found: zero values (not found), one, or several siblings."""

    values: list[bytes] = field(default_factory=list)
    content_types: list[str] = field(default_factory=list)
    context: str | None = None  # pass back on the next write to supersede what was read

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


def key_path(key: str | bytes) -> str:
    """``/kv/{key}`` with every byte outside the unreserved set percent-encoded.

    The keys ``.`` and ``..`` are sent as ``%2E`` / ``%2E%2E``: as literal dot
    segments, URL normalisation would remove them from the path.
    """
    quoted = quote(key_bytes(key), safe="")
    if quoted in (".", ".."):
        quoted = quoted.replace(".", "%2E")
    return "/kv/" + quoted


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
        if text.isdigit() and int(text) >= 1:
            return str(int(text))
    raise ValueError(f"{name} must be a positive integer or one/quorum/all, got {value!r}")


def _timeouts(timeout: float | None) -> tuple[list[tuple[str, str]], float | None]:
    if timeout is None:
        return [], None
    if timeout <= 0:
        raise ValueError(f"timeout must be positive, got {timeout}")
    return [("timeout", str(max(1, round(timeout * 1000))))], timeout + TIMEOUT_MARGIN


def build_get(
    key: str | bytes, r: Quorum | None = None, timeout: float | None = None
) -> HttpRequest:
    params, transport_timeout = _timeouts(timeout)
    if (rv := quorum_param("r", r)) is not None:
        params.insert(0, ("r", rv))
    return HttpRequest(
        "GET",
        key_path(key),
        tuple(params),
        (("Accept", "application/json"),),
        timeout=transport_timeout,
    )


def build_put(
    key: str | bytes,
    value: bytes | str,
    context: str | None = None,
    w: Quorum | None = None,
    ttl: int | None = None,
    content_type: str | None = None,
    timeout: float | None = None,
) -> HttpRequest:
    if isinstance(value, str):
        body = value.encode("utf-8")
    elif isinstance(value, bytes | bytearray | memoryview):
        body = bytes(value)
    else:
        raise TypeError(f"value must be bytes, not {type(value).__name__}")
    params, transport_timeout = _timeouts(timeout)
    if (wv := quorum_param("w", w)) is not None:
        params.insert(0, ("w", wv))
    if ttl is not None:
        if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl <= 0:
            raise ValueError(f"ttl must be a positive whole number of seconds, got {ttl!r}")
        params.append(("ttl", str(ttl)))
    headers = [("Content-Type", content_type or DEFAULT_CONTENT_TYPE)]
    if context:
        headers.append((CONTEXT_HEADER, context))
    return HttpRequest("PUT", key_path(key), tuple(params), tuple(headers), body, transport_timeout)


def build_delete(
    key: str | bytes,
    context: str | None = None,
    w: Quorum | None = None,
    timeout: float | None = None,
) -> HttpRequest:
    params, transport_timeout = _timeouts(timeout)
    if (wv := quorum_param("w", w)) is not None:
        params.insert(0, ("w", wv))
    headers = ((CONTEXT_HEADER, context),) if context else ()
    return HttpRequest("DELETE", key_path(key), tuple(params), headers, timeout=transport_timeout)


def build_lookup(key: str | bytes) -> HttpRequest:
    return HttpRequest("GET", "/ring/lookup?key=" + quote(key_bytes(key), safe=""))


def remove_path(node_id: str) -> str:
    return "/cluster/remove/" + quote(node_id, safe="")


def build_admin(method: str, path: str, admin_token: str | None) -> HttpRequest:
    """A request to an admin endpoint, carrying the admin token when one is given."""
    if admin_token is not None and not isinstance(admin_token, str):
        raise TypeError("admin_token must be a str")
    token = (admin_token or "").strip()
    if any(c in token for c in "\r\n\0"):
        raise ValueError("admin_token must not contain line breaks or NUL")
    headers = (("Authorization", f"Bearer {token}"),) if token else ()
    return HttpRequest(method, path, headers=headers)


# ------------------------------------------------------ pure protocol: parsing answers


def error_for(resp: HttpResponse) -> RingkvError:
    """The exception an unexpected answer stands for."""
    message, doc = _error_message(resp)
    if resp.status == 503:
        acks, required = doc.get("acks"), doc.get("required")
        return QuorumError(
            acks if isinstance(acks, int) else None,
            required if isinstance(required, int) else None,
            message,
        )
    if resp.status in (401, 403):
        return AuthError(resp.status, message)
    siblings, limit = doc.get("siblings"), doc.get("limit")
    if resp.status == 409 and isinstance(siblings, int) and isinstance(limit, int):
        return TooManySiblingsError(message, siblings, limit)
    size = doc.get("size")
    if resp.status == 413 and isinstance(size, int) and isinstance(limit, int):
        return RecordTooLargeError(message, size, limit)
    if 400 <= resp.status < 500:
        return BadRequestError(resp.status, message)
    if resp.status == 507:
        return StorageFullError(message)
    return ServerError(resp.status, message)


def parse_get(resp: HttpResponse) -> GetResult:
    context = resp.headers.get(CONTEXT_HEADER) or None
    if resp.status == 200:
        ctype = resp.headers.get("Content-Type") or DEFAULT_CONTENT_TYPE
        return GetResult([resp.body], [ctype], context)
    if resp.status == 404:
        return GetResult([], [], context)
    if resp.status == 300:
        ctype = resp.headers.get("Content-Type", "")
        if _media_type(ctype) == "multipart/mixed":
            siblings = parse_multipart(resp.body, ctype)
        else:
            siblings, body_context = _parse_json_siblings(resp.body)
            context = body_context or context
        return GetResult([v for v, _ in siblings], [t for _, t in siblings], context)
    raise error_for(resp)


def parse_put(resp: HttpResponse) -> str:
    if resp.status in (200, 201, 204):
        return resp.headers.get(CONTEXT_HEADER, "")
    raise error_for(resp)


def parse_delete(resp: HttpResponse) -> None:
    if resp.status in (200, 204, 404):  # deleting what is not there is fine
        return
    raise error_for(resp)


def parse_json(resp: HttpResponse) -> Any:
    if 200 <= resp.status < 300:
        if not resp.body.strip():
            return {}
        try:
            return json.loads(resp.body)
        except ValueError:
            raise ServerError(resp.status, "answer is not valid JSON") from None
    raise error_for(resp)


def parse_multipart(body: bytes, content_type: str) -> list[tuple[bytes, str]]:
    """Split a ``multipart/mixed`` body into (value, content type) pairs."""
    boundary = _media_params(content_type).get("boundary")
    if not boundary:
        raise ServerError(300, "multipart answer without a boundary")
    delimiter = b"\r\n--" + boundary.encode("latin-1")
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
        doc = json.loads(body)
        siblings = [
            (
                _b64decode(item["value"]),
                str(item.get("content_type") or DEFAULT_CONTENT_TYPE),
            )
            for item in doc["siblings"]
        ]
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ServerError(300, "malformed siblings document") from None
    context = doc.get("context")
    return siblings, context if isinstance(context, str) and context else None


def _b64decode(text: str) -> bytes:
    if not isinstance(text, str):
        raise TypeError("base64 value must be a string")
    padded = text + "=" * (-len(text) % 4)
    try:
        if "-" in text or "_" in text:
            return base64.urlsafe_b64decode(padded)
        return base64.b64decode(padded, validate=True)
    except binascii.Error as exc:
        raise ValueError(str(exc)) from None


def _error_message(resp: HttpResponse) -> tuple[str, dict[str, Any]]:
    doc: dict[str, Any] = {}
    try:
        parsed = json.loads(resp.body) if resp.body else None
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        doc = parsed
        message = str(doc.get("error") or doc.get("message") or "")
    else:
        message = resp.body.decode("utf-8", "replace").strip()
    message = " ".join(message.split())[:300]
    return message or _REASONS.get(resp.status, f"HTTP {resp.status}"), doc


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def _media_params(content_type: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for item in content_type.split(";")[1:]:
        name, _, value = item.partition("=")
        params[name.strip().lower()] = value.strip().strip('"')
    return params


_REASONS = {
    400: "bad request",
    404: "not found",
    405: "method not allowed",
    413: "value too large",
    414: "key too long",
    500: "internal server error",
    501: "not implemented",
    503: "service unavailable",
}
